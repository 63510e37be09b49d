"""Bad data is named before any model work: NaN, inf and wrong shapes in the data of
``hmdiff eval`` (a synthetic split: by file, sample and array) and ``hmdiff eval-real``
(Human3.6M, COCO and MPII: by file, frame or record and field), and those commands' other
inputs checked before their model loads. Other commands' inputs:
tests/test_input_checks_commands.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from cli_refusals import refused

# --- hmdiff eval: synthetic splits --------------------------------------------------------------


def _split(folder: Path, n: int = 4) -> Path:
    """A split in the layout of 'hmdiff data make', with random finite contents."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    arrays = {
        "uv": rng.uniform(0, 64, (n, 24, 2)).astype(np.float32),
        "vis": np.ones((n, 24), np.float32),
        "mask": rng.integers(0, 256, (n, 64, 64)).astype(np.uint8),
        "valid": np.ones((n, 64, 64), bool),
        "prior_xyz": rng.normal(0, 0.3, (n, 24, 3)).astype(np.float32),
        "coarse": rng.normal(0, 0.3, (n, 600, 3)).astype(np.float32),
        "coarse_rel": rng.normal(0, 0.3, (n, 600, 3)).astype(np.float32),
        "joints_rel": rng.normal(0, 0.3, (n, 25, 3)).astype(np.float32),
        "occluder": np.full((n, 4), np.nan, np.float32),  # not read by eval: NaN there is fine
    }
    np.savez_compressed(folder / "samples.npz", **arrays)
    meta = {"format": 1, "split": "test", "num": n, "seed": 0, "config": {"proxy": {"crop_size": 64}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _edit(folder: Path, **changes) -> Path:
    arrays = dict(np.load(folder / "samples.npz"))
    for name, change in changes.items():
        arrays[name] = change(arrays[name])
    np.savez(folder / "samples.npz", **arrays)
    return folder / "samples.npz"


def _set(index, value):
    def change(a):
        a = a.copy()
        a[index] = value
        return a

    return change


@pytest.mark.parametrize(
    "field, index, value, what",
    [
        ("joints_rel", (2, 7, 1), np.nan, "sample 2 has NaN in 'joints_rel'"),
        ("prior_xyz", (1, 0, 0), np.inf, "sample 1 has inf in 'prior_xyz'"),
        ("coarse_rel", (3, 599, 2), -np.inf, "sample 3 has inf in 'coarse_rel'"),
        ("uv", (0, 5, 0), np.nan, "sample 0 has NaN in 'uv'"),
    ],
)
def test_a_nan_or_inf_in_a_split_names_the_file_sample_and_array(
    tmp_path, capsys, no_models, field, index, value, what
):
    """Before: numpy's "SVD did not converge" from the Procrustes fit, after the model ran."""
    from hmdiff_ros.data.store import SplitReader

    split = _split(tmp_path / "s")
    assert len(SplitReader(split)) == 4  # NaN in an array eval does not read ('occluder') is fine
    samples = _edit(split, **{field: _set(index, value)})
    with pytest.raises(ValueError, match="expected finite numbers") as exc:
        SplitReader(split)
    assert str(exc.value).startswith(f"'{samples}': {what}") and "\n" not in str(exc.value)
    refused(["eval", "--data", str(split), "--steps", "1", "--dat", "off"], capsys, str(samples), what)
    assert no_models == []


def test_many_bad_samples_are_counted(tmp_path):
    from hmdiff_ros.data.store import SplitReader

    split = _split(tmp_path / "s")
    _edit(split, vis=_set((slice(1, 4), 3), np.nan))
    with pytest.raises(ValueError, match=r"sample 1 has NaN in 'vis' \(and 2 more samples\)"):
        SplitReader(split)


@pytest.mark.parametrize(
    "field, change, what",
    [
        ("uv", lambda a: np.zeros((4, 24, 3), np.float32), "array 'uv' has shape (4, 24, 3), expected (4, 24, 2)"),
        ("mask", lambda a: a[:, :32, :32], "array 'mask' has shape (4, 32, 32), expected (4, 64, 64)"),
        ("joints_rel", lambda a: a[:, :24], "array 'joints_rel' has shape (4, 24, 3), expected (4, 25, 3)"),
        ("coarse_rel", lambda a: a[:, :500], "array 'coarse_rel' has shape (4, 500, 3), expected (4, 600, 3)"),
        ("vis", lambda a: np.full((4, 24), "x"), "array 'vis' holds <U1, expected numbers"),
    ],
)
def test_a_split_array_of_the_wrong_shape_or_kind_is_named(tmp_path, field, change, what):
    from hmdiff_ros.data.store import SplitReader

    split = _split(tmp_path / "s")
    _edit(split, **{field: change})
    with pytest.raises(ValueError) as exc:
        SplitReader(split)
    assert what in str(exc.value) and "samples.npz" in str(exc.value)


def test_eval_reads_its_data_before_the_model(tmp_path, monkeypatch):
    """The API too: evaluate() reads and checks the split before it loads the checkpoint."""
    import hmdiff_ros.model.evaluate as evaluate_module

    calls = []
    monkeypatch.setattr(evaluate_module, "load_checkpoint", lambda *a, **k: calls.append(a) or 1 / 0)
    split = _split(tmp_path / "s")
    _edit(split, joints_rel=_set((0, 0, 0), np.nan))
    with pytest.raises(ValueError, match="sample 0 has NaN in 'joints_rel'"):
        evaluate_module.evaluate(data=split, steps=1, dat="off")
    assert calls == []


# --- hmdiff eval-real ---------------------------------------------------------------------------


H36M_NAME = "S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg"


@pytest.fixture()
def real_root(tmp_path):
    """A tiny real-data folder in the fixtures' layout: two Human3.6M frames, a COCO photo with
    two people, an MPII record; every value finite."""
    rng = np.random.default_rng(0)
    root = tmp_path / "real"
    (root / "h36m" / H36M_NAME).parent.mkdir(parents=True)
    cv2.imwrite(str(root / "h36m" / H36M_NAME), np.full((100, 120, 3), 10, np.uint8))
    S = np.concatenate([rng.normal(0, 0.4, (2, 17, 3)) + [0, 0, 4], np.ones((2, 17, 1))], -1)
    np.savez(
        root / "h36m" / "test_h36m_body3d.npz",
        imgname=np.array([H36M_NAME, H36M_NAME]),
        S=S,
        center=np.array([[60.0, 50.0], [60.0, 50.0]]),
        scale=np.array([0.4, 0.4]),
    )
    cams = {("S1", "54138969"): {"f": np.array([[500.0], [500.0]]), "c": np.array([[60.0], [50.0]])}}
    (root / "h36m" / "cameras.pkl").write_bytes(pickle.dumps(cams))
    (root / "coco").mkdir()
    cv2.imwrite(str(root / "coco" / "a.jpg"), np.full((100, 120, 3), 200, np.uint8))
    kp = np.zeros((17, 3))
    kp[5:17, :2] = rng.uniform(20, 80, (12, 2))
    kp[5:17, 2] = 2
    ann = [
        {"image_id": 1, "bbox": [10, 10, 50, 80], "keypoints": kp.ravel().tolist()},
        {"image_id": 1, "bbox": [70, 10, 40, 80], "keypoints": kp.ravel().tolist()},
    ]
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": ann}
    (root / "coco" / "test_coco.json").write_text(json.dumps(coco))
    (root / "mpii").mkdir()
    cv2.imwrite(str(root / "mpii" / "b.jpg"), np.full((100, 120, 3), 200, np.uint8))
    record = {"image": "b.jpg", "joints": [[30.0, 40.0]] * 16, "joints_vis": [1] * 16, "center": [60, 50], "scale": 0.4}
    (root / "mpii" / "test_mpii.json").write_text(json.dumps([record]))
    return root


def _npz_edit(path: Path, key: str, index, value) -> None:
    arrays = dict(np.load(path))
    arrays[key] = arrays[key].copy()
    arrays[key][index] = value
    np.savez(path, **arrays)


def _h36m_s_nan(root):
    _npz_edit(root / "h36m" / "test_h36m_body3d.npz", "S", (1, 11, 0), np.nan)  # 11: left shoulder, a limb


def _h36m_scale_zero(root):
    _npz_edit(root / "h36m" / "test_h36m_body3d.npz", "scale", 0, 0.0)


def _camera_inf(root):
    cams = pickle.loads((root / "h36m" / "cameras.pkl").read_bytes())
    cams[("S1", "54138969")]["f"] = np.array([[np.inf], [500.0]])
    (root / "h36m" / "cameras.pkl").write_bytes(pickle.dumps(cams))


def _coco_edit(field, value):
    def edit(root):
        path = root / "coco" / "test_coco.json"
        coco = json.loads(path.read_text())
        coco["annotations"][1][field] = value
        path.write_text(json.dumps(coco))  # json writes NaN and Infinity, and reads them back

    return edit


def _mpii_edit(field, value):
    def edit(root):
        path = root / "mpii" / "test_mpii.json"
        records = json.loads(path.read_text())
        records[0][field] = value
        path.write_text(json.dumps(records))

    return edit


@pytest.mark.parametrize(
    "damage, file, what",
    [
        (_h36m_s_nan, "h36m/test_h36m_body3d.npz", f"(frame 1 '{H36M_NAME}'): S holds NaN"),
        (_h36m_scale_zero, "h36m/test_h36m_body3d.npz", f"(frame 0 '{H36M_NAME}'): scale must be > 0, got [0.0]"),
        (_camera_inf, "h36m/cameras.pkl", "(camera S1 54138969 of frame 0): f holds inf"),
        (_coco_edit("keypoints", [float("nan")] * 51), "coco/test_coco.json", "(annotation 1, image_id 1): keypoints"),
        (
            _coco_edit("bbox", [70, 10, float("inf"), 80]),
            "coco/test_coco.json",
            "(annotation 1, image_id 1): bbox holds inf",
        ),
        (
            _mpii_edit("joints", [[float("nan"), 1.0]] * 16),
            "mpii/test_mpii.json",
            "(record 0 'b.jpg'): joints holds NaN",
        ),
        (_mpii_edit("scale", -1.0), "mpii/test_mpii.json", "(record 0 'b.jpg'): scale must be > 0"),
    ],
)
def test_bad_values_in_real_data_name_the_file_frame_and_field(real_root, capsys, no_models, damage, file, what):
    """Before: the model loaded, then a NaN in S failed as "SVD did not converge" and NaN
    keypoints or boxes were scored as misses or skipped without a word."""
    from hmdiff_ros.study.real_data import read_real

    data = read_real(real_root)
    assert (len(data.frames_3d), len(data.people_2d)) == (2, 3)
    damage(real_root)
    with pytest.raises(ValueError) as exc:
        read_real(real_root)
    assert str(exc.value).startswith(f"eval-real file '{real_root / file}' {what}"), str(exc.value)
    assert "\n" not in str(exc.value)
    refused(["eval-real", "--data", str(real_root)], capsys, str(real_root / file), what)
    assert no_models == []


def test_eval_real_scores_what_it_read(real_root):
    """evaluate_real takes what read_real read, or the folder (read then)."""
    from hmdiff_ros.study.eval_real import evaluate_real
    from hmdiff_ros.study.real_data import read_real

    class Nobody:
        cfg = SimpleNamespace(hfov_deg=60.0)

        def __call__(self, image, K, boxes):
            return []

    by_folder = evaluate_real(Nobody(), real_root, progress=False)
    by_data = evaluate_real(Nobody(), read_real(real_root), progress=False)
    assert by_folder == by_data and by_data["missed_3d"] == 2 and by_data["num_people_2d"] == 3


def test_eval_real_checks_its_inputs_before_the_model(real_root, tmp_path, capsys, no_models):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    refused(["eval-real", "--data", str(tmp_path / "nothing")], capsys, f"'{tmp_path / 'nothing'}' does not exist")
    refused(
        ["eval-real", "--data", str(real_root), "--out", str(a_file)], capsys, f"--out '{a_file}' is an existing file"
    )
    refused(
        ["eval-real", "--data", str(real_root), "--checkpoint", str(tmp_path / "ckpt")],
        capsys,
        f"--checkpoint '{tmp_path / 'ckpt'}' not found or incomplete: it does not exist",
    )
    (tmp_path / "lifter").mkdir()
    refused(
        ["eval-real", "--data", str(real_root), "--lifter", str(tmp_path / "lifter")],
        capsys,
        f"--lifter '{tmp_path / 'lifter'}' not found or incomplete: it lacks model.safetensors and config.json",
    )
    assert no_models == [] and a_file.read_text() == "mine"


def test_eval_checks_its_checkpoint_before_loading_anything(tmp_path, capsys, no_models):
    split = _split(tmp_path / "s")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"")
    refused(
        ["eval", "--data", str(split), "--steps", "1", "--dat", "off", "--checkpoint", str(weights)],
        capsys,
        f"--checkpoint '{weights}' is a file; expected a checkpoint folder",
    )
    assert no_models == []
