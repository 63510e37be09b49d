"""Commands name bad inputs before any model work: images beyond the documented size limit at
the Python API, and the inputs of ``hmdiff bag``, ``bench``, ``bench-pipeline``,
``eval-protocol`` and ``run``, checked before their model loads. ``hmdiff bench`` runs with its
defaults and names the backend that ran. The data of eval and eval-real:
tests/test_input_checks_data.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from cli_refusals import refused

from hmdiff_ros.cli import main

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
