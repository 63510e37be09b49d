"""``hmdiff gpu-check``: its CPU dry run end to end (the same commands the GPU run makes, few
repeats), its refusal to replace a report, and its target verdicts on given rows."""

import json

from hmdiff_ros.cli import main
from hmdiff_ros.cli.gpu_check import REPORT_JSON, REPORT_MD, targets


def test_the_dry_run_runs_the_cpu_parts_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["gpu-check", "--out", str(out), "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"report": str(out / REPORT_MD), "cuda": False, "failed": []}
    report = json.loads((out / REPORT_JSON).read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert (
        steps["capture-safety (meta device)"]["checked"] == 60 and not steps["capture-safety (meta device)"]["problems"]
    )
    assert {r["backend"] for r in steps["bench"]["rows"]} == {"torch", "onnxruntime"}
    assert {r["stage"] for r in steps["bench-pipeline"]["rows"]} >= {"prior", "model", "frame", "stream"}
    assert {r["people"] for r in steps["bench-pipeline"]["rows"]} == {1, 3}
    assert "cuda-graph capture (GPU)" not in steps and report["targets"] == {}
    text = (out / REPORT_MD).read_text()
    assert report["note"] in text and "the GPU steps did not run" in text
    before = (out / REPORT_JSON).read_text()
    assert main(["gpu-check", "--out", str(out), "--dry-run"]) == 2  # a report is never replaced unasked ...
    assert "already holds gpu_check.json; pass --force" in capsys.readouterr().err
    assert (out / REPORT_JSON).read_text() == before  # ... and refused before anything runs


def test_targets_read_the_rows_of_one_run():
    steps = [
        {
            "step": "bench",
            "rows": [
                {"backend": "torch-cuda", "stage": "model", "p50_ms": 9.0},
                {"backend": "torch-cuda-graph", "stage": "model", "p50_ms": 1.5},
            ],
        },
        {
            "step": "bench-pipeline",
            "rows": [
                {"stage": "prior", "people": 1, "p50_ms": 25.0},
                {"stage": "proxy", "people": 1, "p50_ms": 0.5},
                {"stage": "model", "people": 1, "p50_ms": 3.0},
                {"stage": "geometry", "people": 1, "p50_ms": 2.0},
                {"stage": "stream", "people": 1, "fps": 39.0},
                {"stage": "model", "people": 3, "p50_ms": 30.0},
            ],
        },
    ]
    got = targets(steps)
    assert got["graph_model_p50_ms"]["met"] and got["graph_speedup_vs_eager"]["value"] == 6.0
    assert got["model_proxy_geometry_ms"] == {"value": 5.5, "target": 5.0, "met": False}
    assert got["stream_vs_prior_alone_fps"]["target"] == 40.0 and got["stream_vs_prior_alone_fps"]["met"]
    assert targets([]) == {}
