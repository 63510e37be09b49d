"""``hmdiff data prior-study-report``: known errors give known numbers, and the command writes
its files once.

The study here is built by hand (a stick figure in front of a pinhole camera, seen from
several sides), so the file needs neither Anny nor MediaPipe and runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hmdiff_ros.body.joints import JOINT_NAMES, PRIOR_FLIP_PERMUTATION, PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES
from hmdiff_ros.camera import project
from hmdiff_ros.study.prior_analysis import (
    analyse_prior_study,
    auc,
    bias_and_noise,
    depth_scale,
    sample_conditions,
    spearman,
)

N = 36
P = len(PRIOR_JOINT_INDICES)
IDX = list(PRIOR_JOINT_INDICES)
NOSE = PRIOR_JOINT_NAMES.index("nose")

# A standing stick figure in the body frame (x to the subject's left, y up, z forward), metres.
_SIDE = {  # left side; the right side mirrors x
    "eye": (0.03, 1.62, 0.08),
    "ear": (0.07, 1.60, 0.0),
    "shoulder": (0.18, 1.42, 0.0),
    "elbow": (0.22, 1.12, 0.0),
    "wrist": (0.24, 0.85, 0.05),
    "hip": (0.10, 0.92, 0.0),
    "knee": (0.10, 0.50, 0.03),
    "ankle": (0.10, 0.08, 0.0),
    "heel": (0.10, 0.03, -0.05),
    "big_toe": (0.12, 0.0, 0.15),
}
_MIDDLE = {"nose": (0.0, 1.58, 0.10), "pelvis": (0.0, 0.92, 0.0), "spine": (0.0, 1.17, 0.0), "neck": (0.0, 1.42, 0.0)}
_MIDDLE["head_top"] = (0.0, 1.75, 0.0)


def _template() -> np.ndarray:
    out = np.zeros((len(JOINT_NAMES), 3))
    for i, name in enumerate(JOINT_NAMES):
        if name in _MIDDLE:
            out[i] = _MIDDLE[name]
        else:
            side, part = name.split("_", 1)
            x, y, z = _SIDE[part]
            out[i] = (x if side == "left" else -x, y, z)
    return out


def _rotation(yaw_deg: float) -> np.ndarray:
    """Body -> camera: facing the camera at yaw 0 (body up = camera -y, forward = camera -z)."""
    a = np.deg2rad(yaw_deg)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])  # about the body's up axis
    return np.diag([1.0, -1.0, -1.0]) @ turn


def _study(seed: int = 0) -> dict:
    """A study of ``N`` people at yaws 0..350 and 3..5 m, every output equal to the truth."""
    rng = np.random.default_rng(seed)
    body = _template() - _template()[JOINT_NAMES.index("pelvis")]
    yaw = np.arange(N) * 10.0
    rot = np.stack([_rotation(y) for y in yaw])
    t = np.stack([np.zeros(N), np.full(N, -0.1), np.linspace(3, 5, N)], 1)
    joints = np.einsum("nij,kj->nki", rot, body) + t[:, None]
    K = np.tile(np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]]), (N, 1, 1))
    gt_uv = project(joints[:, IDX], K)
    rel = joints - joints[:, JOINT_NAMES.index("pelvis"), None]
    mask = np.zeros((N, 64, 64), np.uint8)
    mask[:, 16:48, 24:40] = 255
    return {
        "index": np.arange(N),
        "joints": joints.astype(np.float32),
        "joints_rel": rel.astype(np.float32),
        "gt_uv": gt_uv.astype(np.float32),
        "gt_in_image": np.ones((N, P), bool),
        "joints_outside": np.zeros(N, np.int16),
        "gt_occluded": np.zeros((N, P), bool),
        "gt_surface_depth": (joints[:, IDX, 2] - 0.05).astype(np.float32),
        "K": K.astype(np.float32),
        "image_size": np.tile([640.0, 480.0], (N, 1)).astype(np.float32),
        "rotation": rot.astype(np.float32),
        "age": np.where(np.arange(N) % 4 == 0, 9.0, 35.0).astype(np.float32),
        "family": (np.arange(N) % 10).astype(np.int64),
        "occluder": np.full((N, 4), np.nan, np.float32),
        "person_box": np.concatenate([gt_uv.min(1), gt_uv.max(1)], 1).astype(np.float32),
        "visible_px": rng.integers(3000, 60000, N),
        "mp_detected": np.ones(N, bool),
        "mp_uv": gt_uv.astype(np.float32),
        "mp_vis": rng.uniform(0.5, 1.0, (N, P)).astype(np.float32),
        "mp_xyz": rel[:, IDX].astype(np.float32),
        "mp_score": np.ones(N, np.float32),
        "mp_mask_iou": np.ones(N, np.float32),
        "sim_uv": gt_uv.astype(np.float32),
        "sim_vis": rng.uniform(0.5, 1.0, (N, P)).astype(np.float32),
        "sim_xyz": rel[:, IDX].astype(np.float32),
        "sim_swapped": np.zeros(N, bool),
        "sim_mask": mask,
        "true_mask": mask,
        "mp_mask": mask,
    }


def _write(folder, s: dict, chunks: int = 2) -> None:
    """``s`` as a prior study on disk: meta.json and ``chunks`` chunk files."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-N // chunks)
    meta = {"format": 1, "num": N, "seed": 0, "chunk": size, "num_chunks": chunks, "complete": True}
    meta["prior"] = {"class": "hmdiff_ros.prior.mediapipe_prior.MediaPipePrior", "static_image_mode": True}
    (folder / "meta.json").write_text(json.dumps(meta))
    for c in range(chunks):
        np.savez_compressed(folder / f"chunk_{c:05d}.npz", **{k: v[c * size : (c + 1) * size] for k, v in s.items()})


def test_outputs_equal_to_the_truth_have_no_error_and_are_all_detected():
    a = analyse_prior_study(_study())
    h = a["headline"]
    assert h["num"] == h["detected"] == N and h["mp"]["detected_share"] == 1.0
    for k in ("mp", "sim"):
        assert h[k]["e2_median_pct"] == h[k]["e2_mean_pct"] == 0.0
        assert h[k]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3) and h[k]["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-2)
        assert h[k]["flipped_share"] == h[k]["any_swap_share"] == h[k]["gross_2d_share"] == 0.0
        assert h[k]["mask_iou_median"] == 1.0
        assert a["axes"][k]["scale_z"] == pytest.approx(1.0, abs=1e-4)
    assert h["yardstick"]["e2_median_pct"] > 5 and h["yardstick"]["mpjpe_mm"] > 10  # the yardsticks are not free


def test_missed_people_lower_the_detection_rate_and_are_left_out_of_the_errors():
    s = _study()
    missed = np.arange(N) % 3 == 0
    s["mp_detected"] = ~missed
    for key in ("mp_uv", "mp_vis", "mp_xyz"):
        s[key][missed] = np.nan
    h = analyse_prior_study(s)["headline"]
    assert h["mp"]["detected_share"] == pytest.approx(1 - missed.mean(), abs=1e-4)
    assert h["detected"] == h["mp"]["samples"] == h["sim"]["samples"] == (~missed).sum()
    assert h["mp"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3) and h["sim_all"]["samples"] == N


def test_a_constant_offset_is_bias_and_gaussian_noise_is_spread():
    s = _study()
    s["mp_xyz"][:, NOSE, 0] += 0.05  # 50 mm to the camera's right, every sample
    a = analyse_prior_study(s)
    cam = a["bias"]["mp"]["camera"]
    np.testing.assert_allclose(cam["bias"][NOSE], [50.0, 0.0, 0.0], atol=0.1)
    assert cam["bias_mm"][NOSE] == pytest.approx(50.0, abs=0.1) and cam["spread_mm"][NOSE] == pytest.approx(0, abs=0.1)
    assert cam["bias_share"] == pytest.approx(1.0, abs=1e-3)
    # in the body frame the same offset turns with the body: mostly spread there
    assert a["bias"]["mp"]["body"]["bias_share"] < 0.2
    noise = np.random.default_rng(1).normal(0.0, 30.0, (4000, P, 3))  # mm
    stats = bias_and_noise(noise)
    assert max(stats["bias_mm"]) < 5 and np.mean(stats["spread_mm"]) == pytest.approx(30 * np.sqrt(3), rel=0.05)
    assert stats["bias_share"] < 0.01


def test_a_left_right_swap_is_counted():
    s = _study()
    flip = list(PRIOR_FLIP_PERMUTATION)
    s["sim_uv"][5] = s["sim_uv"][5][flip]  # the whole body
    s["sim_swapped"][5] = True
    left, right = PRIOR_JOINT_NAMES.index("left_wrist"), PRIOR_JOINT_NAMES.index("right_wrist")
    s["mp_uv"][7, [left, right]] = s["mp_uv"][7, [right, left]]  # one pair
    a = analyse_prior_study(s)
    h = a["headline"]
    assert h["sim"]["flipped_share"] == pytest.approx(1 / N, abs=1e-4)
    assert h["sim_all"]["injected_swap_share"] == pytest.approx(1 / N, abs=1e-4)
    assert h["mp"]["flipped_share"] == 0.0 and h["mp"]["any_swap_share"] == pytest.approx(1 / N, abs=1e-4)
    shares = dict(zip(a["swaps"]["pairs"], a["swaps"]["mp"]["pair_share"], strict=True))
    assert shares["wrist"] > 0 and all(v == 0 for k, v in shares.items() if k != "wrist")


def test_the_report_counts_swaps_as_the_simulator_is_fitted():
    """One definition of a swap for the whole study: the report's flips are the fit's "body"
    swaps, arms or legs alone are swaps but no flip, and a profile view, whose sides project
    onto each other, is no swap however its labels fall."""
    from hmdiff_ros.data.prior_model import ARMS, LEGS, SWAP_KINDS, person_size
    from hmdiff_ros.study.swaps import find_swaps

    s = _study()
    flip = np.asarray(PRIOR_FLIP_PERMUTATION)
    for i, group in ((1, np.arange(P)), (2, ARMS), (3, LEGS), (9, np.arange(P))):  # sample 9: yaw 90, a profile
        s["mp_uv"][i, group] = s["mp_uv"][i, flip[group]]
    kinds = find_swaps(s["mp_uv"], s["gt_uv"], person_size(s["person_box"]), s["gt_in_image"])
    assert [SWAP_KINDS[k] for k in kinds[[1, 2, 3, 9]]] == ["body", "arms", "legs", "none"]
    assert (kinds[[0, *range(4, 9), *range(10, N)]] == 0).all()
    h = analyse_prior_study(s)["headline"]["mp"]
    assert h["flipped_share"] == pytest.approx(1 / N, abs=1e-4)  # the whole body, not arms or legs alone
    assert h["any_swap_share"] == pytest.approx(3 / N, abs=1e-4)


def test_yaw_distance_and_depth_scale():
    s = _study()
    c = sample_conditions(s)
    yaw = np.arange(N) * 10.0
    np.testing.assert_allclose(np.abs(c["yaw_deg"]), np.minimum(yaw, 360 - yaw), atol=0.5)
    np.testing.assert_allclose(c["distance_m"], s["joints"][:, JOINT_NAMES.index("pelvis"), 2])
    assert c["truly_visible"].all() and c["child"].sum() == (np.arange(N) % 4 == 0).sum()
    gt = s["joints_rel"][:, IDX].astype(np.float64)
    squashed = gt * np.array([1.0, 1.0, 0.5])
    np.testing.assert_allclose(depth_scale(squashed, gt, 2), 0.5, atol=1e-9)
    s["mp_xyz"] = squashed.astype(np.float32)
    assert analyse_prior_study(s)["axes"]["mp"]["scale_z"] == pytest.approx(0.5, abs=1e-3)


def test_visibility_statistics():
    assert auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5
    assert auc([0.5, 0.6], [True, True]) is None
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_the_command_writes_the_report_once(tmp_path, capsys):
    from hmdiff_ros.cli import main
    from hmdiff_ros.study.prior_report import FIGURES, REPORT_JSON

    study, out = tmp_path / "study", tmp_path / "docs" / "prior_study.md"
    _write(study, _study())
    args = ["data", "prior-study-report", "--study", str(study), "--out", str(out), "--sheet", str(tmp_path / "no")]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num"] == N and summary["detected_share"] == 1.0
    folder = tmp_path / "docs" / "prior_study"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FIGURES, REPORT_JSON])
    for name in FIGURES:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = out.read_text()
    assert f"hmdiff data prior-study --num {N} --chunk 18 --out {study}" in text
    assert f"hmdiff data prior-study-report --study {study} --out {out}" in text
    assert all(f"prior_study/{name}" in text for name in FIGURES) and "Partial study" not in text
    assert json.loads((folder / REPORT_JSON).read_text())["headline"]["num"] == N
    before = out.read_text()
    assert main(args) == 2  # refuses to replace the report
    assert "already exists" in capsys.readouterr().err and out.read_text() == before
    assert main([*args, "--force"]) == 0


def test_the_command_reads_a_partial_study_only_when_asked(tmp_path, capsys):
    from hmdiff_ros.cli import main

    study, out = tmp_path / "study", tmp_path / "report.md"
    _write(study, _study(), chunks=3)
    (study / "chunk_00002.npz").unlink()
    args = ["data", "prior-study-report", "--study", str(study), "--out", str(out)]
    assert main(args) == 2 and "lacks 1 of 3 chunks" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--partial"]) == 0
    assert f"**Partial study**: 24 of the {N} samples" in out.read_text()
    assert main(["data", "prior-study-report", "--study", str(study), "--out", str(tmp_path / "report.txt")]) == 2
    assert "must end in .md" in capsys.readouterr().err
