"""Real motion capture for the pose stream: BVH reading, retargeting to Anny, the mocap family.

``tests/data/cmu_005_01_excerpt.bvh``: 13 frames of CMU subject 5, trial 1 ("walk"), from the
library's iClone re-export (its first frame is the T-pose that re-export adds); CMU's terms
allow its use in products (docs/data.md, "Motion capture")."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hmdiff_ros.data.bvh import CC_BASE_JOINTS, parse_bvh, read_bvh
from hmdiff_ros.data.mocap import SEGMENTS, anny_directions, capture_directions, clip_frames, fit_poses

EXCERPT = Path(__file__).parent / "data" / "cmu_005_01_excerpt.bvh"


def test_forward_kinematics_keeps_bone_lengths_and_the_body_upright():
    bvh = read_bvh(EXCERPT)
    assert bvh.num_frames == 13 and bvh.names[0] == "CC_Base_Hip"
    pos = bvh.positions()
    j = {name: bvh.index(rig) for name, rig in CC_BASE_JOINTS.items()}
    for a, b in (("left_hip", "left_knee"), ("left_elbow", "left_wrist"), ("right_knee", "right_ankle")):
        length = np.linalg.norm(pos[:, j[a]] - pos[:, j[b]], axis=-1)
        assert length.std() < 1e-6 * length.mean() and 20 < length.mean() < 60  # centimetres
    assert (pos[:, j["head"], 1] > pos[:, j["left_knee"], 1] + 80).all()  # y up
    # the walking frames move: the ankles do not stay where the T-pose has them
    assert np.linalg.norm(pos[1:, j["left_ankle"]] - pos[0, j["left_ankle"]], axis=-1).max() > 10


def test_bad_bvh_is_a_one_line_error_naming_the_file(tmp_path):
    bad = tmp_path / "clip.bvh"
    bad.write_text(
        "HIERARCHY\nROOT hip\n{\nOFFSET 0 0 0\nCHANNELS 3 Xposition Yposition Zposition\n}\nMOTION\nFrames: 2\nFrame Time: 0.1\n1 2 3\n"
    )
    with pytest.raises(
        ValueError, match=r"'.*clip.bvh' is not a BVH file this reader understands: 3 motion values for 2 frames"
    ):
        read_bvh(bad)
    with pytest.raises(ValueError, match="does not start with HIERARCHY"):
        parse_bvh("MOTION", "x")
    with pytest.raises(ValueError, match="BVH has no joint 'nope'"):
        read_bvh(EXCERPT).index("nope")


@pytest.fixture(scope="module")
def poser(engine):
    from hmdiff_ros.data.posing import FastPoser

    return FastPoser(engine.bank)


def test_retargeted_poses_point_anny_segments_where_the_capture_points_them(engine, poser):
    bvh = read_bvh(EXCERPT)
    frames = clip_frames(bvh, 1 / bvh.frame_time)
    assert frames == list(range(1, 13))  # the T-pose is left out
    target = capture_directions(bvh, frames)
    torch.manual_seed(0)
    pose, worst = fit_poses(poser, list(engine.bank.bone_labels), target, iterations=150)
    assert worst.max() < 10.0
    # the fit moved the body: at rest the segments are far from the capture's walking pose
    _, rest = poser(torch.zeros(len(frames), dtype=torch.long), torch.zeros_like(torch.as_tensor(pose)), count=0)
    rest_angle = np.degrees(np.arccos(np.clip((anny_directions(rest).numpy() * target).sum(-1), -1, 1)))
    assert rest_angle.max(1).min() > 20
    assert len(SEGMENTS) == target.shape[1]


def test_mirrored_poses_are_the_mirror_image(engine, poser):
    from hmdiff_ros.body.joints import FLIP_PERMUTATION
    from hmdiff_ros.data.poses import mirror_poses

    sampler = engine.pose_sampler
    pose, _, _ = sampler.sample(np.random.default_rng(0), 16)
    flipped = mirror_poses(pose, sampler.mirror)
    np.testing.assert_allclose(mirror_poses(flipped, sampler.mirror), pose)
    ids = torch.zeros(16, dtype=torch.long)  # bank body 0
    _, a = poser(ids, torch.as_tensor(pose), count=0)
    _, b = poser(ids, torch.as_tensor(flipped), count=0)
    a, b = a.numpy(), b.numpy()
    reflected = a[:, list(FLIP_PERMUTATION)] * np.array([-1.0, 1.0, 1.0])
    pelvis = 17
    err = np.linalg.norm((b - b[:, pelvis : pelvis + 1]) - (reflected - reflected[:, pelvis : pelvis + 1]), axis=-1)
    assert np.median(err) < 0.02  # Anny bodies are nearly symmetric


def test_the_mocap_family_draws_captured_poses(engine):
    from hmdiff_ros.data.engine import SyntheticConfig, SyntheticEngine
    from hmdiff_ros.data.poses import FAMILY_NAMES, MOCAP_FAMILY_WEIGHTS, load_mocap_poses

    eng = SyntheticEngine(SyntheticConfig(family_weights=MOCAP_FAMILY_WEIGHTS), bank=engine.bank)
    pose, family, _ = eng.pose_sampler.sample(np.random.default_rng(0), 4000)
    captured = family == FAMILY_NAMES.index("mocap")
    assert abs(captured.mean() - 0.3) < 0.03 and np.isfinite(pose).all()
    bank = load_mocap_poses(eng.pose_sampler.labels)
    # each captured pose is a bank frame (or its mirror image) plus the few degrees of noise every family gets
    flat = bank.reshape(len(bank), -1)
    mirrored = mirror_poses_of(bank, eng.pose_sampler.mirror).reshape(len(bank), -1)
    fingers = np.repeat(eng.pose_sampler.fingers, 3)
    for p in pose[captured][:50].reshape(50, -1):
        d = np.minimum(np.abs(flat - p)[:, ~fingers].max(1), np.abs(mirrored - p)[:, ~fingers].max(1))
        assert d.min() < np.radians(4.0) * 6  # within 6 sigma of the noise
    batch = eng.generate(np.random.default_rng(1), 32)
    assert np.isfinite(batch["joints"]).all()


def mirror_poses_of(pose, mirror):
    from hmdiff_ros.data.poses import mirror_poses

    return mirror_poses(pose, mirror)


def test_mocap_command_refuses_bad_inputs_before_any_work(tmp_path, capsys):
    from hmdiff_ros.cli import main

    assert main(["data", "mocap", "--bvh", str(tmp_path / "none"), "--out", str(tmp_path / "p.npz")]) == 2
    assert "--bvh" in capsys.readouterr().err
    assert main(["data", "mocap", "--bvh", str(tmp_path), "--out", str(tmp_path / "p.npz")]) == 2
    assert "holds no .bvh files" in capsys.readouterr().err
    assert main(["data", "mocap", "--bvh", str(tmp_path), "--out", str(tmp_path / "p.txt")]) == 2
    assert "must end in .npz" in capsys.readouterr().err
    (tmp_path / "p.npz").write_bytes(b"mine")
    assert main(["data", "mocap", "--bvh", str(tmp_path), "--out", str(tmp_path / "p.npz")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "p.npz").read_bytes() == b"mine"
