"""The MediaPipe prior on real photos (read from ../shared/data/eval-real when present; the
photos are never copied into the repository) and on synthetic bad input."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hmdiff_ros.body.joints import COCO17_NAMES, PRIOR_JOINT_NAMES
from hmdiff_ros.observation import ProxyConfig, make_proxy, observe

pytest.importorskip("mediapipe", reason="mediapipe is not installed")
from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior  # noqa: E402

EVAL_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval-real"
COCO = EVAL_REAL / "coco"


@pytest.fixture(scope="module")
def prior():
    p = MediaPipePrior()
    yield p
    p.close()


def _coco_person(image_id=785):
    if not (COCO / "test_coco.json").is_file():
        pytest.skip(f"real test photos not found at {COCO} (evaluation data lives outside the repository)")
    data = json.loads((COCO / "test_coco.json").read_text())
    ann = next(a for a in data["annotations"] if a["image_id"] == image_id)
    img = cv2.cvtColor(cv2.imread(str(COCO / f"{image_id:012d}.jpg")), cv2.COLOR_BGR2RGB)
    return img, np.array(ann["keypoints"], dtype=float).reshape(17, 3), np.array(ann["bbox"], dtype=float)


def test_prior_finds_the_annotated_keypoints_on_a_real_photo(prior):
    img, kps, bbox = _coco_person()
    person = prior.detect(img)
    assert person is not None
    idx = [PRIOR_JOINT_NAMES.index(n) for n in COCO17_NAMES]
    labelled = kps[:, 2] > 0
    err = np.linalg.norm(person.uv[idx] - kps[:, :2], axis=1)[labelled]
    assert (err < 0.1 * max(bbox[2:])).mean() >= 0.8, err
    # Metric, root-relative 3D: plausible shoulder width, pelvis at the origin.
    sho = person.xyz[PRIOR_JOINT_NAMES.index("left_shoulder")] - person.xyz[PRIOR_JOINT_NAMES.index("right_shoulder")]
    assert 0.2 < np.linalg.norm(sho) < 0.6
    assert np.allclose(person.xyz[PRIOR_JOINT_NAMES.index("pelvis")], 0.0)
    cx, cy = int(bbox[0] + bbox[2] / 2), int(bbox[1] + bbox[3] / 2)
    assert (
        person.mask is not None
        and person.mask.shape == img.shape[:2]
        and person.mask[cy - 5 : cy + 5, cx - 5 : cx + 5].mean() > 0.5
    )


def test_observation_matches_the_engine_format(prior):
    img, _, _ = _coco_person()
    person = prior.detect(img)
    obs = observe(person, (img.shape[1], img.shape[0]))
    cfg = ProxyConfig()
    proxy = make_proxy(obs.uv[None], obs.visibility[None], obs.mask[None], obs.valid[None], cfg)
    assert proxy.shape == (1, 26, 64, 64) and np.isfinite(proxy).all()
    on = obs.visibility >= cfg.min_visibility
    assert ((obs.uv[on] > -1) & (obs.uv[on] < 64)).all(), "visible keypoints fall inside the crop"
    assert obs.mask.max() > 0.5 and obs.valid.mean() > 0.5


def test_box_mode_maps_back_to_image_coordinates(prior):
    img, kps, bbox = _coco_person()
    u0, v0 = bbox[0] - 0.2 * bbox[2], bbox[1] - 0.1 * bbox[3]
    person = prior.detect(img, box=np.array([u0, v0, bbox[0] + 1.2 * bbox[2], bbox[1] + 1.1 * bbox[3]]))
    full = prior.detect(img)
    assert person is not None
    assert np.median(np.linalg.norm(person.uv - full.uv, axis=1)) < 0.05 * max(bbox[2:])


def test_no_person_and_bad_images(prior):
    assert prior.detect(np.full((240, 320, 3), 127, np.uint8)) is None
    for bad, match in [
        (np.zeros((240, 320), np.uint8), "RGB uint8"),
        (np.zeros((240, 320, 4), np.uint8), "RGB uint8"),
        (np.zeros((240, 320, 3), np.uint16), "RGB uint8"),
        (np.zeros((1, 1, 3), np.uint8), "too small"),
        ("image.jpg", "RGB uint8"),
    ]:
        with pytest.raises(ValueError, match=match):
            prior.detect(bad)


def test_video_mode_follows_the_person_and_keeps_boxes_separate():
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    img = read_image(DEMO_IMAGE)
    still = MediaPipePrior()
    video = MediaPipePrior(static_image_mode=False)
    try:
        ref = still.detect(img)
        frames = [video.detect(img) for _ in range(3)]  # a still "video": tracking keeps the same keypoints
        assert all(f is not None for f in frames)
        seen = ref.visibility > 0.5
        for f in frames:
            assert np.median(np.linalg.norm(f.uv[seen] - ref.uv[seen], axis=1)) < 0.03 * img.shape[1]
        with pytest.raises(ValueError, match="box must be finite"):
            video.detect(img, box=np.array([300.0, 50.0, 100.0, 512.0]))
        boxed = video.detect(img, box=np.array([100.0, 50.0, 420.0, 512.0]))  # a box uses the still-image instance
        assert boxed is not None and video._still is not video._pose
        video.reset()
        assert video.detect(img) is not None
    finally:
        still.close()
        video.close()


def test_video_mode_follows_a_change_of_image_size():
    """MediaPipe's video graph smooths the mask against the last frame's and fails on a new
    size, then on every later frame (a camera switching 640x480 -> 1280x720, a bag of two
    streams): a new size starts a new stream of the prior."""
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    img = read_image(DEMO_IMAGE)
    sizes = [(480, 640), (480, 640), (720, 1280), (720, 1280), (480, 640)]
    frames = [cv2.resize(img, (w, h)) for h, w in sizes]  # the person stretched to each frame
    video = MediaPipePrior(static_image_mode=False)
    try:
        found = [video.detect(f) for f in frames]
        assert all(p is not None and p.mask.shape == f.shape[:2] for p, f in zip(found, frames, strict=True))
        for p, (h, w) in zip(found, sizes, strict=True):  # keypoints in each frame's own pixels
            assert 0 < p.uv[:, 0].mean() < w and 0 < p.uv[:, 1].mean() < h
        # a size seen before gets its graph back: a new graph per change kept ~0.5 MiB each
        graphs = {id(video._pose)}
        for f in frames * 4:
            assert video.detect(f) is not None
            graphs.add(id(video._pose))
        assert len(graphs) == 2
    finally:
        video.close()  # never raises, even for a graph that failed
