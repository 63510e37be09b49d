"""Bad inputs are named before any model work: NaN, inf and wrong shapes in the data of
``hmdiff eval`` and ``hmdiff eval-real`` (by file, frame or sample and field), images beyond
the documented size limit at the Python API, and the inputs of ``hmdiff bag``, ``eval-real``
and ``bench-pipeline``, checked before their model loads. ``hmdiff bench`` runs with its
defaults and names the backend that ran."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from hmdiff_ros.cli import main

# --- no model may load --------------------------------------------------------------------------


@pytest.fixture()
def no_models(monkeypatch):
    """Every model loader raises (and notes the call): a command that checks its inputs first
    fails on them with exit 2 and never gets here."""
    import hmdiff_ros.model.checkpoint
    import hmdiff_ros.model.evaluate
    import hmdiff_ros.model.lifter
    import hmdiff_ros.pipeline.pipeline
    import hmdiff_ros.runtime.backends

    calls = []

    def loader(name):
        def load(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called before the inputs were checked")

        return load

    for module, name in (
        (hmdiff_ros.runtime.backends, "load_model"),
        (hmdiff_ros.pipeline.pipeline, "build_pipeline"),
        (hmdiff_ros.model.checkpoint, "load_checkpoint"),
        (hmdiff_ros.model.evaluate, "load_checkpoint"),
        (hmdiff_ros.model.lifter, "load_lifter"),
    ):
        monkeypatch.setattr(module, name, loader(f"{module.__name__}.{name}"))
    return calls


def refused(argv, capsys, *expected) -> str:
    """Runs ``hmdiff argv``: exit 2 and one error line that holds every ``expected`` text."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


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


# --- the Python API: images beyond the documented size ------------------------------------------


class RecordingPrior:
    def __init__(self):
        self.calls = 0

    def detect(self, image, box=None):
        self.calls += 1
        return None


def _pipeline(prior):
    from hmdiff_ros.pipeline.pipeline import Pipeline

    model = SimpleNamespace(cfg=SimpleNamespace(encoder=SimpleNamespace(input_size=64)))
    model.eval = lambda: model
    return Pipeline(model, prior, topology=SimpleNamespace())


@pytest.mark.parametrize("shape", [(20001, 10, 3), (10, 20001, 3), (10001, 10001, 3)])
def test_the_pipeline_refuses_images_beyond_max_side_before_any_work(shape):
    """Before: a 20000x20000 frame went through (6.2 GB peak) although image.py documents 10,000."""
    from hmdiff_ros.image import MAX_SIDE, ImageError

    prior = RecordingPrior()
    pipe = _pipeline(prior)
    image = np.broadcast_to(np.zeros(1, np.uint8), shape)  # no memory behind it
    expected = rf"^image is too large \({shape[1]}x{shape[0]} pixels; at most {MAX_SIDE} on a side\)$"
    for call in (pipe, pipe.run, pipe.prepare):
        with pytest.raises(ImageError, match=expected):
            call(image)
    assert prior.calls == 0


def test_the_limit_is_inclusive():
    from hmdiff_ros.image import MAX_SIDE, check_image

    prior = RecordingPrior()
    image = np.zeros((MAX_SIDE, 8, 3), np.uint8)
    assert check_image(image) is image
    assert _pipeline(prior)(image) == [] and prior.calls == 1


# --- hmdiff bench with its defaults -------------------------------------------------------------


def _expected_auto_row(steps: int) -> str:
    from hmdiff_ros.runtime.backends import load_model
    from hmdiff_ros.runtime.cuda_graph import TorchCudaModel

    model = load_model("auto", steps=(steps,))
    return "torch-cuda-graph" if isinstance(model, TorchCudaModel) else model.backend


def test_bench_runs_with_its_default_backend_and_names_the_one_that_ran(tmp_path, monkeypatch, capsys):
    """Before: 'hmdiff bench' refused its own default, --backend auto."""
    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    assert main(["bench", "--repeats", "1", "--warmup", "0", "--steps", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["stage"] for r in rows] == ["encoder", "model"]
    assert {r["backend"] for r in rows} == {_expected_auto_row(1)}
    import torch

    if not torch.cuda.is_available():  # auto on a CPU: ONNX Runtime missing -> PyTorch runs, and says so
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        assert main(["bench", "--repeats", "1", "--warmup", "0", "--steps", "1", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [(r["backend"], r["stage"]) for r in rows] == [("torch", "encoder"), ("torch", "model")]


def test_bench_runs_auto_and_the_backend_it_loads_once(tmp_path, monkeypatch):
    from hmdiff_ros.runtime.bench import bench

    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    picked = _expected_auto_row(1)
    rows = bench(["auto", "torch"], steps=1, repeats=1, warmup=0)
    names = [r["backend"] for r in rows if r["stage"] == "model"]
    assert "auto" not in names and names[0] == picked and sorted(set(names)) == sorted(names)
    assert "torch" in names


# --- hmdiff bag and bench-pipeline: inputs before the model -------------------------------------


def _one_image_bag(path: Path) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from hmdiff_ros.ros import convert as C

    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
        img = f.make(
            "sensor_msgs/msg/Image",
            header=C.header(f, 10, 0, "cam"),
            height=8,
            width=8,
            encoding="rgb8",
            is_bigendian=0,
            step=24,
            data=np.zeros(8 * 8 * 3, np.uint8),
        )
        writer.write(conn, 10**10, store.serialize_cdr(img, "sensor_msgs/msg/Image"))
    return path


def test_bag_checks_its_inputs_before_the_model(tmp_path, capsys, no_models):
    """Before: 5-6 s of model loading, then the error."""
    pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")
    src = _one_image_bag(tmp_path / "in")
    out = tmp_path / "out"
    refused(["bag", str(tmp_path / "nothing"), str(out)], capsys, f"input bag '{tmp_path / 'nothing'}' does not exist")
    refused(["bag", str(src), str(out), "--image-topic", "/nope"], capsys, "image topic '/nope' is not in the bag")
    refused(["bag", str(src), str(out), "--camera-info-topic", "/cam/image"], capsys, "camera info topic '/cam/image'")
    refused(["bag", str(src), str(src / "x")], capsys, "is the input bag or inside it")
    out.mkdir()
    refused(["bag", str(src), str(out)], capsys, f"output bag '{out}' already exists")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8\n")
    refused(["bag", str(broken), str(tmp_path / "o2")], capsys, f"cannot read bag '{broken}'")
    refused(["bag", str(src), str(tmp_path / "o3"), "--namespace", "not a name"], capsys, "namespace")
    refused(
        ["bag", str(src), str(tmp_path / "o4"), "--checkpoint", str(tmp_path / "ckpt")],
        capsys,
        f"--checkpoint '{tmp_path / 'ckpt'}' not found or incomplete: it does not exist",
    )
    assert no_models == [] and not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_bench_pipeline_checks_its_inputs_before_the_model(tmp_path, capsys, no_models):
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.zeros((16, 1300, 3), np.uint8))
    refused(
        ["bench-pipeline", "--image", str(wide), "--people", "1", "8"],
        capsys,
        f"--people 8: the image '{wide}' repeated side by side is 10400 pixels wide",
        "(10000)",
    )
    refused(
        ["bench-pipeline", "--checkpoint", str(tmp_path / "ckpt")],
        capsys,
        f"--checkpoint '{tmp_path / 'ckpt'}' not found or incomplete: it does not exist",
    )
    assert no_models == []


def test_bench_refuses_dat_full_on_a_graph_backend_before_the_model(capsys, no_models):
    refused(["bench", "--backend", "onnxruntime", "--dat", "full"], capsys, "--dat full", "onnxruntime")
    assert no_models == []


def test_bench_pipeline_names_an_image_too_small_before_the_model(tmp_path, capsys, no_models):
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
    refused(["bench-pipeline", "--image", str(tiny)], capsys, f"--image '{tiny}'", "too small")
    assert no_models == []


def test_eval_protocol_reads_its_study_and_real_data_before_the_model(tmp_path, capsys, no_models):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("not a study")
    refused(["eval-protocol", "--sets", "test", "--study", str(notes)], capsys, str(notes))
    refused(["eval-protocol", "--sets", "test", "--real", str(tmp_path / "none")], capsys, str(tmp_path / "none"))
    assert no_models == []


def test_run_names_inputs_it_cannot_read_without_loading_the_model(tmp_path, capsys, monkeypatch):
    """A missing file, a dangling link, a pipe, an empty file, text named .png: each is named
    (exit 1, the run's per-input failures) and no model is loaded for them."""
    import hmdiff_ros.pipeline.run as run_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for inputs that cannot be read")

    monkeypatch.setattr(run_module, "build_pipeline", no_model)
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "cam.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    bad = ["missing.jpg", "link.jpg", "cam.jpg", "empty.png", "notes.png"]
    code = main(["run", *(str(tmp_path / n) for n in bad), "--out", str(tmp_path / "out"), "--json"])
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert code == 1 and len(records) == len(bad)
    assert all(r["error"] and r["backend"] is None for r in records)
    assert "file not found" in records[0]["error"] and "leads nowhere" in records[1]["error"]
    assert "not a regular file" in records[2]["error"]
    assert all("not an image OpenCV can decode" in r["error"] for r in records[3:])


def test_a_failed_input_is_listed_on_one_line_whatever_its_name(tmp_path, capsys):
    odd = tmp_path / "two\nlines.png"
    odd.write_text("not an image")
    assert main(["run", str(odd), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == "hmdiff: 1 of 1 inputs failed:" and "two\\nlines.png" in err[-1], err
