"""The pose families robots see: the default stream unchanged, the new families valid, the
robot weight set, and the coverage check against synthetic poses of known families."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from hmdiff_ros.data.poses import (
    DEFAULT_FAMILY_WEIGHTS,
    ELBOW_FLEX_DEG,
    FAMILY_NAMES,
    ROBOT_FAMILY_WEIGHTS,
    family_weights,
)

FIRST_TEN = FAMILY_NAMES[:10]  # the families the shipped checkpoint was trained on
NEW = ("picking_up", "kneeling", "floor_sitting", "desk_reaching")

# Made with the code before the new families (``git archive`` of its commit, one torch thread):
# ``SyntheticEngine().generate(np.random.default_rng(0), 64)`` and
# ``engine.pose_sampler.sample(np.random.default_rng(0), 512)``.
EXACT = ("family", "image_size", "K", "pose", "shape", "swapped")  # numpy draws only: bit-exact anywhere
BATCH_EXACT_SHA256 = "34b889187acefe1d80b344072708ed9dca780f9ecdbc70b36eba17523d2d0833"
BATCH_RNG_AFTER = 57075163460514047474334023597854638543
SAMPLER_SHA256 = "9f59b0f0c35f30ea464d691b54ab5fea93335734f8e2ebafc0ca5b7a634c5392"
SAMPLER_RNG_AFTER = 48852931667664843893762078026038790976
# The other arrays pass through torch (float sums differ in the last bits with the thread count
# and CPU): their sum and sum of magnitudes, float64.
BATCH_SUMS = {
    "box": (86442.75302505493, 86442.75302505493),
    "coarse": (122194.30231995144, 199814.99212129883),
    "coarse_rel": (-2851.233164477151, 30713.96733815156),
    "joints": (5116.52845761858, 8319.74807934885),
    "joints_rel": (-93.7021921801479, 1220.8918624634116),
    "mask": (61158.09799839674, 61158.09799839674),
    "occluder": (829726.1584014893, 2437818.769454956),
    "prior_uv": (1397487.7444932908, 1472131.6726365536),
    "prior_xyz": (-50.596599224897545, 1189.444366964045),
    "proxy": (322366.9274720733, 322366.9274720733),
    "root": (208.4092245195061, 323.40861658751965),
    "rotation": (-67.72514626331395, 263.7459282572963),
    "uv": (94216.4594905302, 104510.56501803547),
    "valid": (244947.0, 244947.0),
    "vis": (1041.4726636439445, 1041.4726636439445),
}


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def test_the_new_families_are_appended_with_weight_zero_by_default():
    assert FAMILY_NAMES[: len(FIRST_TEN)] == FIRST_TEN and FAMILY_NAMES[10:14] == NEW
    assert FAMILY_NAMES[14:] == ("mocap",)  # drawn by MOCAP_FAMILY_WEIGHTS only
    assert DEFAULT_FAMILY_WEIGHTS[:10] == (0.18, 0.15, 0.1, 0.08, 0.12, 0.08, 0.08, 0.08, 0.07, 0.06)
    assert all(w == 0 for w in DEFAULT_FAMILY_WEIGHTS[10:])
    assert len(ROBOT_FAMILY_WEIGHTS) == len(FAMILY_NAMES) and math.isclose(sum(ROBOT_FAMILY_WEIGHTS), 1.0)
    assert all(ROBOT_FAMILY_WEIGHTS[FAMILY_NAMES.index(n)] > 0 for n in FAMILY_NAMES if n != "mocap")


def test_appended_zero_weights_consume_the_random_stream_as_before():
    old = np.array(DEFAULT_FAMILY_WEIGHTS[:10]) / sum(DEFAULT_FAMILY_WEIGHTS[:10])
    new = np.array(DEFAULT_FAMILY_WEIGHTS) / sum(DEFAULT_FAMILY_WEIGHTS)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(a.choice(10, size=5000, p=old), b.choice(len(new), size=5000, p=new))
    assert a.bit_generator.state == b.bit_generator.state


def test_default_pose_sampler_draws_what_it_drew_before(engine):
    rng = np.random.default_rng(0)
    pose, family, tilt = engine.pose_sampler.sample(rng, 512)
    assert _digest({"pose": pose, "family": family, "tilt": tilt}) == SAMPLER_SHA256
    assert rng.bit_generator.state["state"]["state"] == SAMPLER_RNG_AFTER


def test_default_stream_is_unchanged(engine):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        batch = engine.generate(rng, 64)
    finally:
        torch.set_num_threads(threads)
    assert _digest({k: batch[k] for k in EXACT}) == BATCH_EXACT_SHA256
    assert rng.bit_generator.state["state"]["state"] == BATCH_RNG_AFTER  # every draw, resampling included
    assert set(batch) == set(EXACT) | set(BATCH_SUMS)
    for key, (total, magnitude) in BATCH_SUMS.items():
        a = batch[key].astype(np.float64)
        np.testing.assert_allclose([np.nansum(a), np.nansum(np.abs(a))], [total, magnitude], rtol=1e-6, err_msg=key)


def test_new_families_give_valid_poses_within_joint_limits(engine):
    sampler = engine.pose_sampler
    labels = sampler.labels
    pose, family, tilt = sampler.sample(np.random.default_rng(0), 2000, family_weights(NEW))
    assert set(np.unique(family)) == {FAMILY_NAMES.index(n) for n in NEW}
    assert pose.shape == (2000, 103, 3) and np.isfinite(pose).all() and (tilt == 0).all()
    elbows = [sampler.elbows[s] for s in "LR"]
    rest = np.ones(len(labels), bool)
    rest[elbows] = False
    lo, hi = sampler.limits[..., 0], sampler.limits[..., 1]
    assert ((pose[:, rest] >= lo[rest] - 1e-6) & (pose[:, rest] <= hi[rest] + 1e-6)).all()
    assert (pose[:, labels.index("lowerleg01.L"), 0] >= 0).all(), "knees never bend forwards"
    for side in "LR":
        flex = pose[:, sampler.elbows[side]] @ sampler.elbow_axes[side]
        assert flex.min() > -0.2 and flex.max() <= math.radians(ELBOW_FLEX_DEG[1]) + 0.2
    assert (np.abs(pose[:, [i for i, lab in enumerate(labels) if lab.startswith("toe")]]) == 0).all()
    hip = np.minimum(pose[:, labels.index("upperleg01.L"), 0], pose[:, labels.index("upperleg01.R"), 0])
    for name in NEW:  # every new family flexes at least one hip well forward
        assert np.median(hip[family == FAMILY_NAMES.index(name)]) < -0.5, name
    spine = pose[:, labels.index("spine03"), 0]
    picking = family == FAMILY_NAMES.index("picking_up")
    assert np.median(spine[picking]) > np.radians(15), "picking up bends the trunk deeply"


def test_robot_weights_draw_the_new_families(engine):
    from hmdiff_ros.data.engine import SyntheticConfig, SyntheticEngine

    robot = SyntheticEngine(SyntheticConfig(family_weights=ROBOT_FAMILY_WEIGHTS), bank=engine.bank)
    _, family, _ = robot.pose_sampler.sample(np.random.default_rng(0), 6000)
    freq = np.bincount(family, minlength=len(FAMILY_NAMES)) / len(family)
    np.testing.assert_allclose(freq, ROBOT_FAMILY_WEIGHTS, atol=0.02)
    batch = robot.generate(np.random.default_rng(0), 64)
    assert set(np.unique(batch["family"])) & {FAMILY_NAMES.index(n) for n in NEW}


def test_family_weights_name_the_families():
    assert family_weights(["kneeling"]) == tuple(float(n == "kneeling") for n in FAMILY_NAMES)
    with pytest.raises(ValueError, match="pose families must be among standing"):
        family_weights(["yoga"])
    with pytest.raises(ValueError, match="pose families"):
        family_weights([])


def test_coverage_finds_the_family_of_synthetic_poses(engine):
    from hmdiff_ros.study.pose_coverage import coverage_3d, descriptor_3d, family_samples

    probes = family_samples(engine, 24, seed=99, names=("sitting", "kneeling", "walking"))
    for name, joints in zip(probes.names, probes.joints, strict=True):
        cov = coverage_3d(engine, joints, per_family=128, seed=0)
        assert cov.names == FAMILY_NAMES and len(cov.family) == 24
        assert cov.family.count(name) >= 20, (name, cov.family)
        assert cov.covered.mean() > 0.7
    # the descriptor ignores the body's global orientation, position and size
    j = probes.joints[0][:4]
    rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_allclose(descriptor_3d(2.0 * j @ rot.T + 5.0), descriptor_3d(j), atol=1e-9)


def test_contact_sheet_of_named_families(engine, tmp_path):
    from hmdiff_ros.data.sheet import contact_sheet

    out = contact_sheet(engine, 4, 0, tmp_path / "new.png", tile=64, families=["kneeling", "picking_up"])
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="pose families"):
        contact_sheet(engine, 4, 0, tmp_path / "x.png", tile=64, families=["yoga"])


def test_pose_coverage_command_reads_the_real_layout(engine, tmp_path, capsys):
    import json
    import pickle

    from hmdiff_ros.cli import main
    from hmdiff_ros.study.pose_coverage import family_samples
    from hmdiff_ros.study.real_data import H36M_LIMBS

    # One Human3.6M-style frame holding a synthetic sitting pose, turned and put 4 m away.
    limbs = family_samples(engine, 1, seed=7, names=("sitting",)).joints[0][0]
    turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    S = np.zeros((1, 17, 4))
    S[0, list(H36M_LIMBS), :3] = limbs @ turn.T + [0.0, 0.0, 4.0]
    name = "S1/S1_Sitting.54138969/S1_Sitting.54138969_000001.jpg"
    (tmp_path / "h36m").mkdir()
    np.savez(
        tmp_path / "h36m" / "test_h36m_body3d.npz",
        imgname=np.array([name]),
        S=S,
        center=np.array([[60.0, 50.0]]),
        scale=np.array([0.4]),
    )
    cams = {("S1", "54138969"): {"f": np.array([[500.0], [500.0]]), "c": np.array([[60.0], [50.0]])}}
    (tmp_path / "h36m" / "cameras.pkl").write_bytes(pickle.dumps(cams))
    assert main(["data", "pose-coverage", "--data", str(tmp_path), "--per-family", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["families"] == list(FAMILY_NAMES) and "2d" not in out
    (pose,) = out["3d"]["poses"]
    assert pose["dataset"] == "h36m" and pose["family"] == "sitting" and pose["covered"]
    assert main(["data", "pose-coverage", "--data", str(tmp_path), "--families", "yoga"]) != 0
    assert "pose families must be among standing" in capsys.readouterr().err
