"""``hmdiff data prior-study``: synthetic people rendered for MediaPipe, and the resumable study.

Small on purpose (8 samples in chunks of 4, one or two workers): the whole file takes well
under a minute on two cores. Needs Anny (the full-resolution test bank is built once and
cached) and mediapipe.
"""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from hmdiff_ros.render import rasterize

ARGS = ["data", "prior-study", "--num", "8", "--chunk", "4"]
PRIOR_JOINTS = 24


def _square(x0, y0, x1, y1, z):
    """Two triangles facing a camera at the origin (counter-clockwise seen from it)."""
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)
    return v, np.array([[0, 2, 1], [0, 3, 2]])


@pytest.fixture
def study_needs():
    """Anny (bodies) and mediapipe (the prior) are installed, else the test is skipped."""
    pytest.importorskip("anny", reason="the Anny body model is not installed (pip install 'hmdiff_ros[anny]')")
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")


def test_rasterize_keeps_the_nearest_face_and_fills_without_cracks():
    K = np.array([[100.0, 0, 49.5], [0, 100.0, 49.5], [0, 0, 1]])
    far, far_faces = _square(-1.0, -1.0, 1.0, 1.0, 4.0)  # covers the whole 100x100 image... nearly
    near, near_faces = _square(-0.1, -0.1, 0.1, 0.1, 1.0)  # a 20x20 pixel patch in the middle
    vertices = np.concatenate([far, near])
    faces = np.concatenate([far_faces, near_faces + 4])
    face, depth = rasterize(vertices, faces, K, (100, 100))
    assert face.shape == depth.shape == (100, 100) and face.dtype == np.int32
    covered = face >= 0
    assert covered[26:74, 26:74].all()  # the far square spans pixels 24.5..74.5: no cracks on its diagonal
    assert not covered[:24].any() and not covered[76:].any()
    middle = np.isin(face, [2, 3])
    assert middle.sum() == 20 * 20 and middle[40:60, 40:60].all()
    np.testing.assert_allclose(depth[middle], 1.0, atol=1e-4)
    np.testing.assert_allclose(depth[covered & ~middle], 4.0, atol=1e-4)
    assert np.isinf(depth[~covered]).all()
    # seen from behind, the squares are back faces: nothing is drawn unless culling is off
    flipped = faces[:, ::-1]
    assert (rasterize(vertices, flipped, K, (100, 100))[0] < 0).all()
    assert (rasterize(vertices, flipped, K, (100, 100), cull=False)[0] >= 0).sum() == covered.sum()


@pytest.fixture(scope="module")
def study_engine():
    pytest.importorskip("anny", reason="the Anny body model is not installed (pip install 'hmdiff_ros[anny]')")
    from hmdiff_ros.data.engine import SyntheticEngine
    from hmdiff_ros.study.study_config import StudyConfig

    return SyntheticEngine(StudyConfig(num=1).engine)


def _frontal_adults(engine, num):
    """Standing adults facing the camera from 3.2 m, each with its own seed."""
    import torch

    from hmdiff_ros.body.anny_body import ANNY_TO_CANONICAL
    from hmdiff_ros.data.poses import FAMILY_NAMES, PoseSampler

    bank = engine.bank
    standing = tuple(float(name == "standing") for name in FAMILY_NAMES)
    sampler = PoseSampler(list(bank.bone_labels), bank.bone_head.mean(0) @ ANNY_TO_CANONICAL.T, standing)
    adults = np.flatnonzero((bank.ages >= 18) & (bank.ages <= 65))
    order = np.argsort(bank.vertex_ids)  # bank order -> mesh order
    for seed in range(num):
        rng = np.random.default_rng(seed)
        pose, _, _ = sampler.sample(rng, 1)
        with torch.no_grad():
            v, _ = engine.poser(torch.as_tensor(rng.choice(adults, 1)), torch.as_tensor(pose))
        v = v[0].numpy()[order] * np.array([1.0, -1.0, -1.0])  # canonical (y up, facing +z) -> camera, facing it
        yield rng, v - (v.max(0) + v.min(0)) / 2 + [0.0, 0.0, 3.2]


def test_mediapipe_sees_rendered_standing_adults(study_engine, study_needs):
    from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior
    from hmdiff_ros.study.people_render import PeopleRenderer

    renderer = PeopleRenderer(study_engine.bank, study_engine.topology.full_faces)
    K = np.array([[520.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])
    prior = MediaPipePrior()
    try:
        found = []
        for rng, vertices in _frontal_adults(study_engine, 6):
            person = renderer.render(rng, vertices, K, (640, 480))
            assert person.image.shape == (480, 640, 3) and person.image.dtype == np.uint8
            assert 0.02 < person.silhouette.mean() < 0.5  # a whole person, not a speck nor the frame
            found.append(prior.detect(person.image))
    finally:
        prior.close()
    # 40 of 40 such seeds were detected when this was written; half is the floor we promise
    assert sum(p is not None for p in found) >= 3
    for p in filter(None, found):
        assert p.uv.shape == (PRIOR_JOINTS, 2) and p.xyz.shape == (PRIOR_JOINTS, 3)


def test_study_writes_chunks_resumes_and_refuses_another(tmp_path, capsys, study_needs):
    from hmdiff_ros.cli import main
    from hmdiff_ros.data.study_reader import load_prior_study, read_study_meta

    out = tmp_path / "study"
    assert main([*ARGS, "--out", str(out), "--workers", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["chunks_made"] == 2 and summary["made"] == 8 and summary["chunks_skipped"] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["chunk_00000.npz", "chunk_00001.npz", "meta.json"]
    meta = read_study_meta(out)
    assert meta["complete"] and meta["num"] == 8 and meta["chunk"] == 4 and meta["bodies"]["role"] == "test"
    assert meta["prior"]["static_image_mode"] is True and meta["prior"]["min_detection_confidence"] == 0.5

    s = load_prior_study(out)
    n = 8
    shapes = {
        "index": (n,),
        "joints": (n, 25, 3),
        "gt_uv": (n, PRIOR_JOINTS, 2),
        "gt_in_image": (n, PRIOR_JOINTS),
        "joints_outside": (n,),
        "K": (n, 3, 3),
        "image_size": (n, 2),
        "mp_detected": (n,),
        "mp_uv": (n, PRIOR_JOINTS, 2),
        "mp_vis": (n, PRIOR_JOINTS),
        "mp_xyz": (n, PRIOR_JOINTS, 3),
        "mp_mask_iou": (n,),
        "sim_uv": (n, PRIOR_JOINTS, 2),
        "sim_vis": (n, PRIOR_JOINTS),
        "sim_xyz": (n, PRIOR_JOINTS, 3),
        "true_mask": (n, 64, 64),
        "mp_mask": (n, 64, 64),
        "render_s": (n,),
    }
    assert {k: s[k].shape for k in shapes} == shapes
    assert all(len(v) == n for v in s.values())
    np.testing.assert_array_equal(s["index"], np.arange(n))
    # the real prior's fields are filled exactly where it saw someone, NaN elsewhere
    det = s["mp_detected"]
    assert np.isfinite(s["mp_uv"][det]).all() and np.isnan(s["mp_uv"][~det]).all()
    assert np.isnan(s["mp_mask_iou"][~det]).all() and (s["mp_mask"][~det] == 0).all()
    # the ground truth lines up with its own projection and with the simulated prior
    assert (s["joints_outside"] == (~s["gt_in_image"]).sum(1)).all()
    size = np.maximum(*(s["person_box"][:, 2:] - s["person_box"][:, :2]).T)[:, None]
    near = np.linalg.norm(s["sim_uv"] - s["gt_uv"], axis=-1) / size < 0.5
    assert near[s["gt_in_image"]].mean() > 0.9
    if det.any():  # where MediaPipe found the person, most of its keypoints are near the truth
        close = np.linalg.norm(s["mp_uv"] - s["gt_uv"], axis=-1) / size < 0.5
        assert close[det[:, None] & s["gt_in_image"]].mean() > 0.5

    # the same command again: nothing to do, nothing rewritten
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("chunk_*.npz")}
    assert main([*ARGS, "--out", str(out), "--workers", "2", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["chunks_made"] == 0 and again["chunks_skipped"] == 2
    assert again["detection_rate"] == summary["detection_rate"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("chunk_*.npz")} == stamps

    # another seed in the same folder: one line naming what differs, nothing touched
    assert main([*ARGS, "--out", str(out), "--seed", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds another prior study (seed 0 there, 5 asked)" in err
    assert "--force" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("chunk_*.npz")} == stamps

    # a study recorded before a setting was added at its old behaviour (a config key it lacks,
    # weights of new pose families appended at 0) is the same study; a changed value is not
    meta_path = out / "meta.json"
    recorded = json.loads(meta_path.read_text())
    older = json.loads(json.dumps(recorded))
    del older["engine"]["prior"]["kind"]
    weights = older["engine"]["family_weights"]
    while weights and weights[-1] == 0:
        weights.pop()
    meta_path.write_text(json.dumps(older))
    assert main([*ARGS, "--out", str(out), "--workers", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks_made"] == 0
    older["engine"]["family_weights"][0] += 0.01
    meta_path.write_text(json.dumps(older))
    assert main([*ARGS, "--out", str(out), "--workers", "2", "--json"]) == 2
    assert "another engine" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("chunk_*.npz")} == stamps


def test_a_lost_chunk_is_made_again_the_same_by_any_number_of_workers(tmp_path, capsys, study_needs):
    from hmdiff_ros.cli import main
    from hmdiff_ros.data.study_reader import chunk_path, load_prior_study

    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*ARGS, "--out", str(one), "--workers", "1", "--json"]) == 0
    assert main([*ARGS, "--out", str(two), "--workers", "2", "--json"]) == 0
    capsys.readouterr()
    a, b = load_prior_study(one), load_prior_study(two)
    for k in a:
        if not k.endswith("_s"):  # everything but the timings
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    # a run stopped half way: the missing chunk is made, the other one is left alone
    kept = chunk_path(one, 0).stat().st_mtime_ns
    chunk_path(one, 1).unlink()
    with pytest.raises(ValueError, match="lacks 1 of 2 chunks"):
        load_prior_study(one)
    assert len(load_prior_study(one, partial=True)["index"]) == 4
    assert main([*ARGS, "--out", str(one), "--workers", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["chunks_made"] == 1 and summary["chunks_skipped"] == 1
    assert chunk_path(one, 0).stat().st_mtime_ns == kept
    again = load_prior_study(one)
    for k in a:
        if not k.endswith("_s"):
            np.testing.assert_array_equal(again[k], a[k], err_msg=k)


def test_force_replaces_a_study_and_bad_folders_are_named(tmp_path, capsys, study_needs):
    from hmdiff_ros.cli import main
    from hmdiff_ros.data.study_reader import load_prior_study, read_study_meta
    from hmdiff_ros.study.study_config import StudyConfig

    out = tmp_path / "study"
    sheet = tmp_path / "look" / "sheet.png"
    args = ["data", "prior-study", "--num", "2", "--chunk", "2", "--out", str(out), "--workers", "1"]
    assert main([*args, "--sheet", str(sheet)]) == 0
    assert "MediaPipe detected the person in" in capsys.readouterr().out
    assert cv2.imread(str(sheet)).shape == (192, 512, 3)  # two 256x192 tiles
    (out / "notes.txt").write_text("mine")
    assert (
        main(["data", "prior-study", "--num", "3", "--chunk", "2", "--out", str(out), "--workers", "1", "--force"]) == 0
    )
    assert read_study_meta(out)["num"] == 3 and len(load_prior_study(out)["index"]) == 3
    assert (out / "notes.txt").read_text() == "mine"

    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.png").write_bytes(b"")
    assert main(["data", "prior-study", "--num", "2", "--out", str(other)]) == 2
    assert "is not empty and holds no prior study" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prior_study(tmp_path / "missing")
    with pytest.raises(ValueError, match="--chunk must be an integer >= 1"):
        StudyConfig(num=4, chunk=0)
    with pytest.raises(ValueError, match="full=True"):
        StudyConfig(num=4, engine=replace(StudyConfig(num=1).engine, full=False))


def test_a_study_of_training_bodies_is_training_data_apart_from_the_held_out_study(tmp_path, capsys, study_needs):
    from hmdiff_ros.cli import main
    from hmdiff_ros.data.study_reader import TRAINING_KEYS, load_prior_study, read_study_meta, study_training_set
    from hmdiff_ros.study.study_config import STUDY_SPAWN_KEY, TRAIN_STUDY_SPAWN_KEY

    train, test = tmp_path / "train", tmp_path / "test"
    assert main([*ARGS, "--bodies", "train", "--out", str(train), "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    assert main([*ARGS, "--out", str(test), "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    meta_train, meta_test = read_study_meta(train), read_study_meta(test)
    assert meta_train["bodies"]["role"] == "train" and meta_test["bodies"]["role"] == "test"
    assert meta_train["bodies"]["phenotypes_sha1"] != meta_test["bodies"]["phenotypes_sha1"]
    assert meta_train["stream"]["spawn_key"] == list(TRAIN_STUDY_SPAWN_KEY) != list(STUDY_SPAWN_KEY)
    a, b = load_prior_study(train), load_prior_study(test)
    assert not np.allclose(a["joints_rel"], b["joints_rel"])  # other bodies, poses and cameras
    # the coarse mesh is recorded, root-relative like the joints, in the same frame
    assert a["coarse_rel"].shape == (8, 600, 3)
    assert np.abs(a["coarse_rel"].mean(1) - a["joints_rel"].mean(1)).max() < 0.3

    # one folder, one kind: a test-bodies study there is another study
    assert main([*ARGS, "--out", str(train), "--workers", "1"]) == 2
    assert "holds another prior study" in capsys.readouterr().err
    assert main([*ARGS, "--bodies", "train", "--held-out-only", "--out", str(tmp_path / "x")]) == 2
    assert "has no held-out part" in capsys.readouterr().err

    # training reads the detected people of a training-bodies study, never the held-out study
    with pytest.raises(ValueError, match="held-out bodies.*--bodies train"):
        study_training_set(test, 64)
    det = a["mp_detected"]
    assert det.any()  # the seeded study: MediaPipe finds some of its 8 people
    pool = study_training_set(train, 64)
    assert set(pool) == set(TRAINING_KEYS) and all(len(v) == det.sum() for v in pool.values())
    np.testing.assert_array_equal(pool["prior_xyz"], a["mp_xyz"][det])
    np.testing.assert_array_equal(pool["coarse_rel"], a["coarse_rel"][det])
    np.testing.assert_array_equal(pool["mask"], a["mp_mask"][det])  # 0..255, as recorded

    # mixed into a batch of the training stream, each key keeps the stream's type and meaning:
    # the silhouette MediaPipe saw reaches the proxy as it does in evaluation (a float 0..1 mask
    # cast to the stream's uint8 would leave at most 1/255 of it)

    from hmdiff_ros.data.engine import SyntheticDataset, stream_config
    from hmdiff_ros.model.train import mix_study
    from hmdiff_ros.observation import ProxyConfig, make_proxy

    batch = next(iter(SyntheticDataset(stream_config(), 4, seed=0)))
    mixed = mix_study(batch, pool, 2, np.random.default_rng(0))
    assert all(mixed[k].dtype == batch[k].dtype for k in TRAINING_KEYS)
    proxy = make_proxy(mixed["uv"], mixed["vis"], mixed["mask"], mixed["valid"], ProxyConfig())
    drawn = mixed["prior_xyz"][2:].numpy()
    rows = [int(np.flatnonzero((pool["prior_xyz"] == d).all((1, 2)))[0]) for d in drawn]
    np.testing.assert_allclose(proxy[2:, -2].numpy(), pool["mask"][rows] / 255.0, atol=1e-6)
    assert proxy[2:, -2].max() > 0.5
    with pytest.raises(ValueError, match="study sample 'mask' is torch.float64, the stream's is torch.uint8"):
        mix_study(batch, {**pool, "mask": pool["mask"] / 255.0}, 2, np.random.default_rng(0))

    # a study made before the coarse mesh was recorded: named, not a KeyError
    with np.load(train / "chunk_00000.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "coarse_rel"}
    np.savez(train / "chunk_00000.npz", **arrays)
    with pytest.raises(ValueError, match=r"lacks the coarse mesh \(coarse_rel\)"):
        study_training_set(train, 64)
