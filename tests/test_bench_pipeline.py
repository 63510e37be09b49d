"""``hmdiff bench-pipeline``: its ``--json`` rows (a contract), ``--people`` and ``--report``."""

import json

import numpy as np
import pytest

from hmdiff_ros.cli import main
from hmdiff_ros.runtime.bench import tiled_people

STAGE_KEYS = {"backend", "stage", "people", "p50_ms", "p90_ms", "p99_ms"}
FRAME_KEYS = {"backend", "stage", "people", "fps", "latency_p50_ms"}


def test_tiled_people_gives_one_box_per_copy():
    image = np.zeros((4, 5, 3), np.uint8)
    assert tiled_people(image, 1)[1] is None
    tiled, boxes = tiled_people(image, 3)
    assert tiled.shape == (4, 15, 3) and [b.tolist() for b in boxes] == [[0, 0, 5, 4], [5, 0, 10, 4], [10, 0, 15, 4]]


def test_json_rows_per_stage_and_frame_for_one_and_two_people(tmp_path, capsys):
    report = tmp_path / "report"
    args = ["bench-pipeline", "--repeats", "1", "--people", "1", "2", "--steps", "1", "--hypotheses", "1"]
    args += ["--backend", "torch"]  # torch asked for: compared with torch, it runs once
    assert main([*args, "--json", "--report", str(report)]) == 0
    rows = json.loads(capsys.readouterr().out)
    frames = [r for r in rows if r["stage"] in ("frame", "stream")]
    stages = [r for r in rows if r["stage"] not in ("frame", "stream")]
    assert [(r["people"], r["stage"]) for r in frames] == [(1, "frame"), (1, "stream"), (2, "frame"), (2, "stream")]
    assert all(set(r) == FRAME_KEYS and r["fps"] > 0 and r["latency_p50_ms"] > 0 for r in frames)
    assert all(set(r) == STAGE_KEYS and r["backend"] == "torch" for r in stages)
    assert {r["stage"] for r in stages} == {"prior", "proxy", "encoder", "sampling", "dat", "model", "geometry"}
    assert sorted({r["people"] for r in stages}) == [1, 2]
    text = (report / "bench.md").read_text()
    assert (
        "| torch | 2 | frame |" in text
        and "| torch | 2 | stream |" in text
        and (report / "bench.png").read_bytes()[:4] == b"\x89PNG"
    )
    # the report is refused before any benchmark runs, unless --force
    assert main([*args, "--report", str(report)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_the_default_backend_is_measured_beside_pytorch_eager(capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    args = ["bench-pipeline", "--repeats", "1", "--steps", "1", "--hypotheses", "1", "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in rows if r["stage"] == "frame"] == ["onnxruntime", "torch"]
    ort = {r["stage"] for r in rows if r["backend"] == "onnxruntime"}
    # one graph call samples with DAT: no sampling/dat split for it, the model stage is measured
    assert ort == {"prior", "proxy", "encoder", "model", "geometry", "frame", "stream"}
    assert main([*args, "--compare", "tflite"]) == 2
    assert "--compare: unknown backends ['tflite']" in capsys.readouterr().err
