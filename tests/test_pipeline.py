"""The ROS-free frame pipeline with the shipped checkpoint and the MediaPipe prior."""

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe is not installed")

from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES  # noqa: E402
from hmdiff_ros.camera import project  # noqa: E402
from hmdiff_ros.model.checkpoint import load_checkpoint  # noqa: E402
from hmdiff_ros.model.metrics import pa_mpjpe_mm  # noqa: E402
from hmdiff_ros.observation import in_image  # noqa: E402
from hmdiff_ros.pipeline.pipeline import Pipeline, PipelineConfig  # noqa: E402
from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior  # noqa: E402

# Rendered people with known ground truth: held-out bodies drawn and rendered as the prior study
# draws and renders them (``hmdiff data prior-study``), from a seed no study or selection used.
RENDERED, RENDER_SEED = 16, 99
# On these images, measured with the shipped checkpoint (each person given by its box): 13 of 16
# found; the reprojected joints hit 0.659 of the ground-truth joints within 0.1 x the person's
# longer side (MediaPipe's own keypoints 0.695); PA-MPJPE on the prior's 24 joints 90.7 mm against
# MediaPipe's 3D joints' 123.8 (on the prior study's test part: 80.8 against 118.3).
PCK_BOUND = 0.63  # the measured 0.659 less 0.03 (10 of the 334 joints; one person missed costs 25)
PA_MARGIN_MM = 20.0  # the model beats MediaPipe's 3D by at least this (measured: 33.1 mm)


@pytest.fixture(scope="module")
def pipeline():
    model, _ = load_checkpoint()
    prior = MediaPipePrior()
    yield Pipeline(model, prior, cfg=PipelineConfig(hypotheses=2))
    prior.close()


@pytest.fixture(scope="module")
def rendered_people():
    """``RENDERED`` (image, K, camera-frame joints (25, 3), person box) of held-out bodies."""
    pytest.importorskip("anny", reason="the Anny body model is not installed (pip install 'hmdiff_ros[anny]')")
    from hmdiff_ros.data.engine import SyntheticEngine
    from hmdiff_ros.study.people_render import PeopleRenderer
    from hmdiff_ros.study.study_config import StudyConfig, chunk_rngs

    cfg = StudyConfig(num=RENDERED, seed=RENDER_SEED)
    engine = SyntheticEngine(cfg.engine)
    renderer = PeopleRenderer(engine.bank, engine.topology.full_faces, cfg.render)
    gen, ren = chunk_rngs(cfg.seed, 0, cfg.spawn_key)
    b = engine.generate(gen, RENDERED, proxy=False)
    people = []
    for i in range(RENDERED):
        r = renderer.render(ren, b["full"][i], b["K"][i], b["image_size"][i], b["occluder"][i])
        body = np.isfinite(r.depth)
        rows, cols = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
        box = np.array([cols[0], rows[0], cols[-1], rows[-1]], np.float64)
        people.append((r.image, b["K"][i].astype(np.float64), b["joints"][i].astype(np.float64), box))
    return people


def test_reprojected_joints_agree_with_the_ground_truth_on_rendered_people(pipeline, rendered_people):
    """The pipeline on images with known ground truth: its joints, projected with the camera,
    against the true joints' projections (PCK@0.1 of the person's longer side, as ``hmdiff
    eval-real`` scores 2D; a missed person counts every joint wrong), and its 3D joints against
    the true ones beside MediaPipe's (PA-MPJPE on the prior's 24 joints). A model that passed
    MediaPipe's own joints through (an echo of its input) is placed on MediaPipe's keypoints
    just as well, and fails the 3D comparison; a broken model or placement fails the PCK."""
    q = list(PRIOR_JOINT_INDICES)
    hits = prior_hits = total = 0
    pa, prior_pa = [], []
    for image, K, joints, box in rendered_people:
        gt_uv = project(joints, K)
        inside = in_image(gt_uv, (image.shape[1], image.shape[0]))
        thr = 0.1 * max(box[2] - box[0], box[3] - box[1])
        total += int(inside.sum())
        people = pipeline(image, K, boxes=[box])  # the person's box, as a detector (and eval-real) gives it
        if not people:
            continue
        assert len(people) == 1
        p = people[0]
        np.testing.assert_allclose(p.joints_uv, project(p.joints, K), atol=1e-6)
        assert (p.joints[:, 2] > 0.3).all(), "in front of the camera"
        hits += int((np.linalg.norm(p.joints_uv - gt_uv, axis=1) <= thr)[inside].sum())
        prior_hits += int((np.linalg.norm(p.prior_uv[q] - gt_uv[q], axis=1) <= thr)[inside[q]].sum())
        pa.append(pa_mpjpe_mm(p.joints[None, q], joints[None, q])[0])
        prior_pa.append(pa_mpjpe_mm(p.prior_xyz[None, q], joints[None, q])[0])
        assert p.vertices.shape == (13718, 3) and p.coarse_vertices.shape == (600, 3)
        assert p.joint_std.shape == (25,) and (p.joint_std >= 0).all()
    pck, prior_pck = hits / total, prior_hits / total
    print(
        f"PCK@0.1 {pck:.3f} (MediaPipe {prior_pck:.3f}); PA-MPJPE {np.mean(pa):.1f} mm (MediaPipe {np.mean(prior_pa):.1f}); {len(pa)} of {RENDERED} found"
    )
    assert pck >= PCK_BOUND, (pck, prior_pck)
    assert np.mean(pa) <= np.mean(prior_pa) - PA_MARGIN_MM, (np.mean(pa), np.mean(prior_pa))


def test_a_detector_box_gives_the_same_person_on_the_public_domain_demo_photo(pipeline):
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    image = read_image(DEMO_IMAGE)
    (p,) = pipeline(image)
    seen = p.visibility > 0.5
    assert seen.sum() >= 8, "the upper body is visible"
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
