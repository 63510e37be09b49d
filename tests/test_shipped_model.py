"""The shipped checkpoint: it loads, evaluates from the CLI within its measured accuracy,
and the benchmark prints the documented JSON."""

import json

import pytest

from hmdiff_ros.cli import main
from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, WEIGHTS, load_checkpoint

# Measured with the shipped checkpoint (docs/model_card.md) on the 48 samples of the split
# below: a regression bound with margin, not a target.
PA_MPJPE_BOUND_MM = 200.0


def test_shipped_checkpoint_is_small_and_self_describing():
    size = (DEFAULT_CHECKPOINT / WEIGHTS).stat().st_size
    assert size < 20 * 2**20
    meta = json.loads((DEFAULT_CHECKPOINT / CONFIG).read_text())
    assert {"model", "train", "step", "metrics"} <= set(meta)
    model, _ = load_checkpoint()
    assert model.cfg.encoder.kind == "proxy" and model.num_points == 625
    assert model.cfg.prior_tokens  # the shipped model reads the prior (docs/model_card.md)
    assert meta["samples"] >= meta["step"] * meta["train"]["batch_size"]  # its --init's samples counted too


@pytest.fixture(scope="module")
def small_split(engine, tmp_path_factory):
    from hmdiff_ros.data.store import write_split

    return write_split(engine, tmp_path_factory.mktemp("split"), num=48, seed=321, split="test", progress=False)


def test_eval_command_prints_the_contract_json(small_split, capsys):
    assert main(["eval", "--data", str(small_split), "--steps", "4", "--dat", "fast", "--json"]) == 0
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
    assert result["num_samples"] == 48
    assert 0 < result["prior_pa_mpjpe_mm"] < result["prior_mpjpe_mm"]
    assert 0 < result["pa_mpjpe_mm"] < PA_MPJPE_BOUND_MM
    # it earns its place on synthetic data: better than the simulated prior it reads, on its joints
    assert result["pa_mpjpe_mm_on_prior_joints"] < result["prior_pa_mpjpe_mm"]
    assert result["mpjpe_mm_on_prior_joints"] < result["prior_mpjpe_mm"]


def test_eval_rejects_a_missing_checkpoint_or_split(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "none"), "--steps", "4", "--dat", "off", "--json"]) == 2
    assert "not found or incomplete" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "nodata"), "--steps", "4", "--dat", "off", "--json"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_prints_rows_with_a_model_stage(capsys):
    assert main(["bench", "--backend", "torch", "--steps", "2", "--repeats", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["stage"] for r in rows} == {"encoder", "model"}
    for r in rows:
        assert set(r) == {"backend", "stage", "p50_ms", "p90_ms", "p99_ms"}
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert main(["bench", "--backend", "tpu", "--json"]) == 2
