"""The ROS-free frame pipeline with the shipped checkpoint and the MediaPipe prior."""

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe is not installed")

from hmdiff_ros.camera import intrinsics_from_fov, project  # noqa: E402
from hmdiff_ros.model.checkpoint import load_checkpoint  # noqa: E402
from hmdiff_ros.pipeline.pipeline import Pipeline, PipelineConfig  # noqa: E402
from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior  # noqa: E402

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval-real" / "coco"
# PCK@0.1 of the reprojected joints against the prior's keypoints, measured with the checkpoint
# before prior tokens: 1.00 and 0.82 on the two COCO photos, 1.00 on the public-domain demo photo.
# The prior-conditioned checkpoints up to stage 9 kept 1.00 on 785 and the demo photo but fell
# to 0.76 (13 of 17 joints) on 40083: the right heel and big toe landed 1.3x the PCK radius from
# MediaPipe's (foot keypoints are MediaPipe's worst joints, docs/prior_study.md). That strict
# xfail passes with stage 10, so the photo is held to the bound like the other.
REPROJECTION_PCK_BOUND = 0.8
DEMO_PCK_BOUND = 0.85


@pytest.fixture(scope="module")
def pipeline():
    model, _ = load_checkpoint()
    prior = MediaPipePrior()
    yield Pipeline(model, prior, cfg=PipelineConfig(hypotheses=2))
    prior.close()


def _photo(image_id):
    path = COCO / f"{image_id:012d}.jpg"
    if not path.is_file():
        pytest.skip(f"real test photos not found at {COCO} (evaluation data lives outside the repository)")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("image_id", [785, 40083])
def test_reprojected_joints_agree_with_the_prior_on_real_photos(pipeline, image_id):
    image = _photo(image_id)
    people = pipeline(image)
    assert len(people) == 1
    p = people[0]
    K = intrinsics_from_fov(image.shape[1], image.shape[0])
    np.testing.assert_allclose(p.joints_uv, project(p.joints, K), atol=1e-6)
    assert (p.joints[:, 2] > 0.3).all(), "in front of the camera"
    seen = p.visibility > 0.5
    err = np.linalg.norm(p.joints_uv - p.prior_uv, axis=1)[seen]
    size = p.box[2] - p.box[0]
    assert (err < 0.1 * size / 1.25).mean() >= REPROJECTION_PCK_BOUND
    assert p.vertices.shape == (13718, 3) and p.coarse_vertices.shape == (600, 3)
    assert p.joint_std.shape == (25,) and (p.joint_std >= 0).all()


def test_reprojection_agrees_with_the_prior_on_the_public_domain_demo_photo(pipeline):
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    image = read_image(DEMO_IMAGE)
    (p,) = pipeline(image)
    seen = p.visibility > 0.5
    assert seen.sum() >= 8, "the upper body is visible"
    err = np.linalg.norm(p.joints_uv - p.prior_uv, axis=1)[seen]
    assert (err < 0.1 * (p.box[2] - p.box[0]) / 1.25).mean() >= DEMO_PCK_BOUND
    # a person box from a detector gives the same person
    (q,) = pipeline(image, boxes=[np.array([p.box[0], p.box[1], p.box[2], p.box[3]])])
    assert np.median(np.linalg.norm(q.prior_uv[seen] - p.prior_uv[seen], axis=1)) < 0.05 * (p.box[2] - p.box[0])


def test_empty_frames_and_bad_inputs(pipeline):
    assert pipeline(np.full((240, 320, 3), 90, np.uint8)) == []
    with pytest.raises(ValueError, match="RGB uint8"):
        pipeline(np.zeros((240, 320), np.uint8))
    with pytest.raises(ValueError, match="K must be a finite 3x3"):
        pipeline(np.full((240, 320, 3), 90, np.uint8), K=np.zeros((3, 3)))


def test_run_returns_the_people_with_stage_timings_and_model_inputs(pipeline):
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    image = read_image(DEMO_IMAGE)
    frame = pipeline.run(image)
    (p,) = frame.people
    np.testing.assert_array_equal(p.joints, pipeline(image)[0].joints)  # a call is run(...).people
    assert set(frame.timings) == {"prior", "proxy", "model", "geometry"} and min(frame.timings.values()) >= 0
    inputs = frame.model_inputs
    size = pipeline.model.cfg.encoder.input_size
    assert inputs.proxy.shape == (1, pipeline.model.cfg.encoder.in_channels, size, size)
    assert inputs.prior_xyz.shape == (1, 24, 3) and inputs.prior_vis.shape == (1, 24)
    empty = pipeline.run(np.full((240, 320, 3), 90, np.uint8))
    assert empty.people == [] and set(empty.timings) == {"prior"} and empty.model_inputs is None
