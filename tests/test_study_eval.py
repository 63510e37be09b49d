"""``hmdiff eval-study``: the model on the real prior's outputs kept by the prior study, cropped
as the data engine crops, beside the prior's own figures."""

import json

import numpy as np
import pytest
import torch

from hmdiff_ros.data.engine import batch_rng
from hmdiff_ros.study.study_eval import evaluate_study, study_batch, study_rows


@pytest.fixture(scope="module")
def fake_study(engine):
    """A study-shaped dict whose "MediaPipe" outputs are the engine's simulated prior."""
    b = engine.generate(batch_rng(3, 0), 20)
    n = len(b["vis"])
    detected = np.ones(n, bool)
    detected[[1, 17]] = False
    return b, {
        "index": np.arange(n)[::-1].copy(),  # stored out of order: rows follow the sample index
        "mp_detected": detected,
        "mp_uv": b["prior_uv"],
        "mp_vis": b["vis"],
        "mp_xyz": b["prior_xyz"],
        "mp_mask": np.round(b["mask"] * 255).astype(np.uint8),
        "box": b["box"],
        "image_size": b["image_size"],
        "joints_rel": b["joints_rel"],
    }


def test_study_inputs_are_the_engine_observation(fake_study):
    b, study = fake_study
    rows = study_rows(study, 0.5)
    # the held-out half by sample index (index n-1-i at row i: the first rows), undetected left out
    assert sorted(study["index"][rows]) == [i for i in range(10, 20) if i not in (18,)]
    got = study_batch(study, rows, engine_crop := b["proxy"].shape[-1])
    assert engine_crop == 64
    np.testing.assert_allclose(got["uv"], b["uv"][rows], atol=1e-3)
    # the valid region of the crop is the engine's, up to its resampling at the image border
    assert np.mean(got["valid"] != (b["valid"][rows] > 0.5)) < 0.01
    np.testing.assert_allclose(got["proxy"][:, :24], b["proxy"][rows, :24], atol=1e-3)


def test_evaluate_study_sets_the_model_beside_the_prior(fake_study, tiny_model):
    b, study = fake_study
    rows = study_rows(study, 0.5)
    r = evaluate_study(tiny_model, study, steps=2, fit_fraction=0.5, batch_size=4)
    assert r["num_samples"] == len(rows) == 9
    assert set(r) == {"num_samples", "mpjpe_mm", "pa_mpjpe_mm", "prior_mpjpe_mm", "prior_pa_mpjpe_mm", "strata"}
    # the prior's figure is U against the truth on the prior's joints, mid-hip aligned
    from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES

    hips = [PRIOR_JOINT_NAMES.index("left_hip"), PRIOR_JOINT_NAMES.index("right_hip")]
    u = b["prior_xyz"][rows].astype(np.float64)
    g = b["joints_rel"][rows][:, list(PRIOR_JOINT_INDICES)].astype(np.float64)
    u, g = u - u[:, hips].mean(1, keepdims=True), g - g[:, hips].mean(1, keepdims=True)
    assert r["prior_mpjpe_mm"] == pytest.approx(np.linalg.norm(u - g, axis=-1).mean() * 1000, abs=0.01)
    assert r["pa_mpjpe_mm"] <= r["mpjpe_mm"]
    assert json.loads(json.dumps(r)) == r
    with pytest.raises(ValueError, match="no held-out sample"):
        evaluate_study(tiny_model, {**study, "mp_detected": np.zeros(20, bool)}, steps=1)


@pytest.fixture(scope="module")
def tiny_model(topology):
    from hmdiff_ros.model.denoiser import DenoiserConfig
    from hmdiff_ros.model.encoder import EncoderConfig
    from hmdiff_ros.model.hmdiff import HMDiff, HMDiffConfig

    torch.manual_seed(0)
    cfg = HMDiffConfig(
        encoder=EncoderConfig(width=32, base_channels=8),
        denoiser=DenoiserConfig(width=32, heads=2, self_blocks=1, cross_blocks=1, vertex_groups=8),
        prior_tokens=True,
    )
    return HMDiff(cfg, topology).eval()


def test_study_parts_are_disjoint_halves_of_the_held_out_part(fake_study):
    _, study = fake_study
    held, val, test = (set(study["index"][study_rows(study, 0.5, p)]) for p in ("held-out", "val", "test"))
    assert val and test and not val & test and val | test == held
    assert max(val) < min(test)  # cut by sample index: val first
    with pytest.raises(ValueError, match="study part must be one of"):
        study_rows(study, 0.5, "train")


def test_study_strata_split_by_the_prior_error(fake_study, tiny_model):
    from hmdiff_ros.study.study_eval import NEARLY_RIGHT_MM

    _, study = fake_study
    r = evaluate_study(tiny_model, study, steps=1, fit_fraction=0.0, batch_size=8, per_sample=True)
    per, strata = r["per_sample"], r["strata"]
    good = per["prior_pa_mpjpe_mm"] <= NEARLY_RIGHT_MM
    assert sum(s["num_samples"] for s in strata.values()) == r["num_samples"] == len(good)
    for name, sel in (("prior_nearly_right", good), ("prior_wrong", ~good)):
        if sel.any():
            assert strata[name]["pa_mpjpe_mm"] == pytest.approx(per["pa_mpjpe_mm"][sel].mean(), abs=0.01)
