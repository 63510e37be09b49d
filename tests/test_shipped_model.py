"""The shipped checkpoint: it loads, evaluates from the CLI within its measured accuracy,
and the benchmark prints the documented JSON."""

import json
from pathlib import Path

import pytest

from hmdiff_ros.cli import main
from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, WEIGHTS, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# The shipped checkpoint's figures on the test sets, as ``hmdiff eval-protocol --sets test``
# recorded them (docs/model_card.md, "What it reaches"): the bound follows the recorded figure.
PROTOCOL_TEST = ROOT / "docs" / "figures" / "protocol_test.json"
# PA-MPJPE on synthetic-test may be at most this much above the recorded mean: the recorded one is
# the mean over 3 sampling seeds (their spread: 0.2 mm), this test runs the first seed; a
# checkpoint 3 mm worse on the same 512 samples is worse beyond the seeds' noise and the
# interval of the mean's half-width (2.2 mm), and the figure the model card quotes no longer holds.
PA_MPJPE_MARGIN_MM = 3.0


def test_shipped_checkpoint_is_small_and_self_describing():
    size = (DEFAULT_CHECKPOINT / WEIGHTS).stat().st_size
    assert size < 20 * 2**20
    meta = json.loads((DEFAULT_CHECKPOINT / CONFIG).read_text())
    assert {"model", "train", "step", "metrics"} <= set(meta)
    model, _ = load_checkpoint()
    assert model.cfg.encoder.kind == "proxy" and model.num_points == 625
    assert model.cfg.prior_tokens  # the shipped model reads the prior (docs/model_card.md)
    assert meta["samples"] >= meta["step"] * meta["train"]["batch_size"]  # its --init's samples counted too


def test_eval_reaches_the_recorded_figure_on_the_test_split_and_prints_the_contract_json(capsys):
    """``hmdiff eval`` on the protocol's synthetic-test split (512 held-out samples) with the
    settings the recorded figures were measured with: the contract JSON, the same samples (the
    prior's and the lifter's figures, which involve no sampling, match the recorded ones to
    0.01 mm) and the model's PA-MPJPE within PA_MPJPE_MARGIN_MM of the recorded one."""
    from hmdiff_ros.study.protocol import synthetic_split

    recorded = json.loads(PROTOCOL_TEST.read_text())["result"]  # docs/figures.py record
    synthetic = recorded["sets"]["synthetic-test"]
    figures = {k: v["mean"] for k, v in synthetic["figures"].items()}
    split = synthetic_split("synthetic-test", synthetic["num_samples"])
    args = ["eval", "--data", str(split), "--steps", str(recorded["steps"]), "--dat", recorded["dat"]["mode"]]
    assert main([*args, "--hypotheses", str(recorded["hypotheses"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the contract: the model's figures, and the simulated prior's beside them (its 24 joints)
    assert set(result) == {
        "mpjpe_mm",
        "pa_mpjpe_mm",
        "mpvpe_mm",
        "pa_mpvpe_mm",
        "num_samples",
        "prior_mpjpe_mm",
        "prior_pa_mpjpe_mm",
        "mpjpe_mm_on_prior_joints",
        "pa_mpjpe_mm_on_prior_joints",
        "lifter_mpjpe_mm",
        "lifter_pa_mpjpe_mm",
    }
    assert result["num_samples"] == synthetic["num_samples"]
    for name in ("prior_mpjpe_mm", "prior_pa_mpjpe_mm", "lifter_mpjpe_mm", "lifter_pa_mpjpe_mm"):
        assert result[name] == pytest.approx(figures[name], abs=0.01), name  # the recorded samples
    assert 0 < result["pa_mpjpe_mm"] <= figures["pa_mpjpe_mm"] + PA_MPJPE_MARGIN_MM, (result, figures)
    # it earns its place on synthetic data: better than the simulated prior it reads, on its joints
    assert result["pa_mpjpe_mm_on_prior_joints"] < result["prior_pa_mpjpe_mm"]
    assert result["mpjpe_mm_on_prior_joints"] < result["prior_mpjpe_mm"]


def test_eval_rejects_a_missing_checkpoint_or_split(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "none"), "--steps", "4", "--dat", "off", "--json"]) == 2
    assert "not found or incomplete" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "nodata"), "--steps", "4", "--dat", "off", "--json"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_prints_rows_with_a_model_stage_and_the_ratio_to_pytorch(capsys):
    """The JSON rows (a contract); timings decide nothing here, but a run of PyTorch and ONNX
    Runtime carries the ratio of their p50s measured in that one run on the ONNX Runtime rows."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'hmdiff_ros[onnx]')")
    args = ["bench", "--backend", "torch,onnxruntime", "--steps", "2", "--repeats", "2", "--warmup", "0", "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["stage"]) for r in rows] == [
        ("torch", "encoder"),
        ("torch", "model"),
        ("onnxruntime", "encoder"),
        ("onnxruntime", "model"),
    ]
    torch_p50 = {r["stage"]: r["p50_ms"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        keys = {"backend", "stage", "p50_ms", "p90_ms", "p99_ms"}
        assert set(r) == (keys if r["backend"] == "torch" else keys | {"p50_vs_torch"})
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        if r["backend"] == "onnxruntime":
            assert r["p50_vs_torch"] == round(r["p50_ms"] / torch_p50[r["stage"]], 3)
    assert main(args[:-1]) == 0  # the text lines say it too
    lines = capsys.readouterr().out.splitlines()
    assert [("x PyTorch's p50" in line) for line in lines] == [False, False, True, True], lines
    assert main(["bench", "--backend", "tpu", "--json"]) == 2
