import cv2
import numpy as np
import pytest
import torch

from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES
from hmdiff_ros.camera import apply_affine, crop_affine, project
from hmdiff_ros.data.engine import MIN_JOINTS_IN_IMAGE, SyntheticConfig, SyntheticDataset, batch_rng
from hmdiff_ros.data.poses import FAMILY_NAMES
from hmdiff_ros.observation import NUM_PROXY_CHANNELS


def _gt_in_crop(batch, points):
    uv = project(batch[points].astype(np.float64), batch["K"].astype(np.float64))
    return apply_affine(crop_affine(batch["box"], batch["mask"].shape[-1]), uv)


def test_same_seed_same_batch_other_seed_other_batch(engine):
    a = engine.generate(batch_rng(3, 5), 16)
    b = engine.generate(batch_rng(3, 5), 16)
    c = engine.generate(batch_rng(4, 5), 16)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.allclose(a["coarse"], c["coarse"])


def test_stream_is_the_same_with_any_number_of_workers():
    cfg = SyntheticConfig()
    one = list(torch.utils.data.DataLoader(SyntheticDataset(cfg, 8, seed=11, num_batches=4), batch_size=None))
    two = list(
        torch.utils.data.DataLoader(SyntheticDataset(cfg, 8, seed=11, num_batches=4), batch_size=None, num_workers=2)
    )
    key = lambda b: float(b["root"][0, 2])  # noqa: E731 - order batches by content
    for x, y in zip(sorted(one, key=key), sorted(two, key=key), strict=True):
        assert x.keys() == y.keys() and "proxy" not in x and x["mask"].dtype == torch.uint8
        for k in x:
            torch.testing.assert_close(x[k], y[k], equal_nan=True)


def test_fields_shapes_and_units(batches):
    b = batches[0]
    n = len(b["coarse"])
    assert b["proxy"].shape == (n, NUM_PROXY_CHANNELS, 64, 64) and b["proxy"].dtype == np.float32
    assert b["coarse"].shape == (n, 600, 3) and b["joints"].shape == (n, 25, 3)
    assert b["prior_xyz"].shape == (n, 24, 3) and b["uv"].shape == (n, 24, 2)
    np.testing.assert_allclose(b["coarse_rel"] + b["root"][:, None], b["coarse"], atol=1e-5)
    assert (b["root"][:, 2] > 0.5).all() and (b["root"][:, 2] < 12).all(), "metres in front of the camera"
    det = np.linalg.det(b["rotation"])
    np.testing.assert_allclose(det, 1.0, atol=1e-4)
    assert set(np.unique(b["family"])) <= set(range(len(FAMILY_NAMES)))


def test_no_nan_and_no_empty_sample_over_thousands_of_draws(batches):
    for b in batches:
        for key, value in b.items():
            if value.dtype.kind == "f" and key != "occluder":  # NaN there means "no occluder"
                assert np.isfinite(value).all(), key
        uv = project(b["joints"][:, list(PRIOR_JOINT_INDICES)].astype(np.float64), b["K"].astype(np.float64))
        w, h = b["image_size"][:, None, 0], b["image_size"][:, None, 1]
        seen = ((uv >= 0).all(-1) & (uv[..., 0] < w) & (uv[..., 1] < h)).sum(1)
        assert (seen >= MIN_JOINTS_IN_IMAGE).all()
        content = b["proxy"][:, :-1].reshape(len(seen), -1).max(1)  # heatmaps + silhouette
        assert (content > 0.1).all(), "every sample shows the person somehow"


def test_heatmap_peaks_sit_on_the_keypoints(batches):
    b = batches[1]
    s = b["proxy"].shape[-1]
    heat = b["proxy"][:, :24]
    on = (b["vis"] >= 0.5) & (b["uv"] >= 1).all(-1) & (b["uv"] <= s - 2).all(-1)
    peak = heat.reshape(*heat.shape[:2], -1).argmax(-1)
    peak_uv = np.stack([peak % s, peak // s], -1)
    err = np.abs(peak_uv - b["uv"])[on]
    assert on.sum() > 1000 and err.max() <= 0.51 + 1e-6
    assert (heat.reshape(*heat.shape[:2], -1).max(-1)[~(b["vis"] >= 0.5)] == 0).all(), (
        "low-visibility joints are dropped"
    )


def test_silhouettes_align_with_the_projected_body(batches, engine):
    """An independent rasteriser (one triangle at a time) over the ground-truth projection
    must agree with the engine's augmented silhouette."""
    b = batches[2]
    s = b["mask"].shape[-1]
    coarse = _gt_in_crop(b, "coarse")  # (N, C, 2)
    has_mask = b["mask"].reshape(len(b["mask"]), -1).max(1) > 0.5
    use = np.flatnonzero(has_mask & np.isnan(b["occluder"][:, 0]))
    assert len(use) > 100
    ys, xs = np.mgrid[:s, :s]
    ious, shifts = [], []
    for i in use:
        ref = np.zeros((s, s), np.uint8)
        for tri in np.round(coarse[i][engine.topology.coarse_faces] * 16).astype(np.int32):
            cv2.fillConvexPoly(ref, tri, 1, shift=4)
        ref = ref * (b["valid"][i] > 0.5)
        got = b["mask"][i] > 0.5
        ious.append((got & (ref > 0)).sum() / max((got | (ref > 0)).sum(), 1))
        c_ref = np.array([(ref * xs).sum(), (ref * ys).sum()]) / max(ref.sum(), 1)
        c_got = np.array([(got * xs).sum(), (got * ys).sum()]) / max(got.sum(), 1)
        shifts.append(c_ref - c_got)
    assert np.median(ious) > 0.8 and np.percentile(ious, 10) > 0.6
    shifts = np.array(shifts)  # the augmentation (blur, erode/dilate) moves centroids a little ...
    assert np.median(np.linalg.norm(shifts, axis=1)) < 1.0 and np.percentile(np.linalg.norm(shifts, axis=1), 90) < 2.5
    assert np.abs(shifts.mean(0)).max() < 0.3, "... but never systematically"


def test_crops_are_centred_on_the_person(batches):
    b = batches[3]
    joints = _gt_in_crop(b, "joints")
    centre = np.median(joints, axis=1)
    s = b["mask"].shape[-1]
    assert np.median(np.abs(centre - (s - 1) / 2)) < 0.15 * s


def test_simulated_prior_has_more_noise_in_depth_and_rare_swaps(batches):
    err, swaps, off_vis = [], [], []
    for b in batches:
        keep = ~b["swapped"]
        gt = b["joints_rel"][:, list(PRIOR_JOINT_INDICES)][keep]
        pred = b["prior_xyz"][keep]
        scale = (pred * gt).sum((1, 2)) / (gt * gt).sum((1, 2))  # remove the prior's scale error
        err.append((pred - scale[:, None, None] * gt)[b["vis"][keep] > 0.7])
        swaps.append(b["swapped"])
        uv = project(b["joints"][:, list(PRIOR_JOINT_INDICES)].astype(np.float64), b["K"].astype(np.float64))
        off = (uv[..., 0] < 0) | (uv[..., 1] < 0) | (uv[..., 0] > b["image_size"][:, None, 0] - 1)
        off_vis.append(b["vis"][off & ~b["swapped"][:, None]])
    err = np.concatenate(err)
    std = err.std(0)
    assert std[2] > 1.8 * std[:2].max()
    assert 0.005 < np.concatenate(swaps).mean() < 0.05
    assert np.concatenate(off_vis).max() < 0.2, "off-image joints get a low visibility"


def test_children_and_elders_are_in_the_bank(engine):
    ages = engine.bank.ages
    assert (ages < 12).mean() > 0.03 and (ages > 65).mean() > 0.08
    assert ((ages >= 18) & (ages <= 65)).mean() > 0.6
    heights = engine.heights
    assert heights.min() < 1.2 and heights.max() > 1.8


def test_bad_engine_config_is_rejected():
    from hmdiff_ros.data.shapes import BankConfig

    with pytest.raises(ValueError, match="full-resolution shape bank"):
        SyntheticConfig(full=True)
    with pytest.raises(ValueError, match="batch_size"):
        SyntheticDataset(SyntheticConfig(), 0)
    with pytest.raises(ValueError, match="bank size"):
        BankConfig(size=0)


def test_chain_prior_turns_bones_and_collapses_depth(engine):
    """The chain simulation's errors are structured: bones keep their lengths (it turns them),
    a turned bone moves everything below it, and the depth extent shrinks by the drawn factor."""
    from dataclasses import replace

    from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES
    from hmdiff_ros.data.observe import CHAIN_PARENTS, PriorNoiseConfig, chain_errors

    b = engine.generate(np.random.default_rng(0), 64, proxy=False)
    rel = b["joints_rel"].astype(np.float64)
    q = list(PRIOR_JOINT_INDICES)
    adult = np.full(len(rel), PriorNoiseConfig.adult_height_m)  # scale pull 1: no drift
    exact = PriorNoiseConfig(scale_std=0.0, chain_bone_rad=(0.0, 0.0), chain_global_rad=(0.0, 0.0), chain_depth=(1, 1))
    still = chain_errors(np.random.default_rng(1), rel, adult, exact)
    assert np.abs(still - rel[:, q]).max() < 0.06  # only the 1 cm jitter
    turned = chain_errors(np.random.default_rng(1), rel, adult, replace(exact, chain_bone_rad=(0.3, 0.3)))
    pos = {j: q.index(JOINT_INDEX[j]) for j in JOINT_INDEX if JOINT_INDEX[j] in q}
    for child, parent in CHAIN_PARENTS.items():
        true_len = np.linalg.norm(rel[:, JOINT_INDEX[child]] - rel[:, JOINT_INDEX[parent]], axis=-1)
        got_len = np.linalg.norm(turned[:, pos[child]] - turned[:, pos[parent]], axis=-1)
        assert np.abs(got_len - true_len).max() < 0.06, child
    err = np.linalg.norm(turned - rel[:, q], axis=-1)
    assert err[:, pos["left_wrist"]].mean() > err[:, pos["left_elbow"]].mean() > err[:, pos["left_shoulder"]].mean()
    flat = chain_errors(np.random.default_rng(1), rel, adult, replace(exact, chain_depth=(0.5, 0.5)))
    depth = lambda p: p[..., 2].max(1) - p[..., 2].min(1)  # noqa: E731
    np.testing.assert_allclose(np.median(depth(flat) / depth(rel[:, q])), 0.5, atol=0.05)


def test_graded_prior_spans_every_quality(engine):
    """The graded stream scales each person's prior errors by a quality q: from nearly right
    (q near 0: U within millimetres of the truth) to the simulators' full errors."""
    from dataclasses import replace

    from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES
    from hmdiff_ros.data.observe import PriorNoiseConfig, simulate_prior

    b = engine.generate(np.random.default_rng(0), 256, proxy=False)
    cfg = replace(PriorNoiseConfig(kind="graded"), graded_full=0.0)
    joints = b["joints"].astype(np.float64)
    uv = joints[..., :2] / joints[..., 2:] * 500 + 320  # any projection: the keypoints' truth
    box = np.concatenate([uv.min(1), uv.max(1)], axis=1)
    out = simulate_prior(
        np.random.default_rng(2),
        joints,
        uv,
        np.tile([640, 480], (len(joints), 1)),
        box,
        np.full((len(joints), 4), np.nan),
        np.full(len(joints), 1.7),
        cfg,
        rotation=b["rotation"].astype(np.float64),
    )
    q = list(PRIOR_JOINT_INDICES)
    rel = joints[:, q] - joints[:, JOINT_INDEX["pelvis"], None]
    err3 = np.linalg.norm(out["prior_xyz"] - rel, axis=-1).mean(1)
    err2 = np.linalg.norm(out["prior_uv"] - uv[:, q], axis=-1).mean(1)
    quality = out["quality"]
    assert quality.min() < 0.05 and quality.max() > 0.95
    assert err3[quality < 0.05].max() < 0.02  # nearly right: within 2 cm
    low, high = quality < 0.2, quality > 0.8  # errors grow with q (medians: the fitted 2D has heavy tails)
    assert np.median(err3[low]) < 0.3 * np.median(err3[high]) and np.median(err2[low]) < 0.3 * np.median(err2[high])
