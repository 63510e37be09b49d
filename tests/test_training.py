"""Training HMDiff on the tiny model (tests/tiny_model.py): a run checkpoints, validates,
evaluates, resumes and fine-tunes from another run's weights, refusing another model
configuration; weights it cannot resume are never replaced; Ctrl-C, SIGTERM to the process
group and a killed data worker save the run for the same command to resume; the train
command's one record on stdout; a prior-token model fine-tuned on the fitted stream; focus
steps; and the prior study's people mixed into batches."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from tiny_model import TINY
from tiny_model import inputs as _inputs


def test_training_runs_checkpoints_and_resumes(tmp_path, engine):
    from hmdiff_ros.model.checkpoint import load_checkpoint
    from hmdiff_ros.model.evaluate import evaluate
    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import TrainConfig

    cfg = TrainConfig(
        out=str(tmp_path / "run"), steps=2, batch_size=4, workers=0, val_every=2, val_samples=8, model=TINY
    )
    metrics = train(cfg, progress=False)
    assert metrics["step"] == 2 and math.isfinite(metrics["loss"])
    assert (tmp_path / "run" / "model.safetensors").is_file()
    again = train(TrainConfig(**{**cfg.__dict__, "steps": 3}), progress=False)
    assert again["step"] == 3
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 3]
    from hmdiff_ros.data.store import write_split

    split = write_split(engine, tmp_path / "split", num=6, seed=1, split="test", progress=False)
    result = evaluate(tmp_path / "run", split, steps=2, dat="fast")
    assert set(result) == {"mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm", "num_samples"}
    assert result["num_samples"] == 6 and result["pa_mpjpe_mm"] <= result["mpjpe_mm"] + 1e-6
    # fine-tuning starts from a checkpoint's weights; another model configuration is refused
    from dataclasses import replace

    tuned = TrainConfig(
        **{
            **cfg.__dict__,
            "out": str(tmp_path / "ft"),
            "steps": 1,
            "lr": 1e-9,
            "warmup_steps": 1,
            "init": str(tmp_path / "run"),
        }
    )
    train(tuned, progress=False)
    a, meta_a = load_checkpoint(tmp_path / "run")
    b, meta_b = load_checkpoint(tmp_path / "ft")
    assert meta_a["samples"] == 3 * 4  # 3 steps of batch 4
    assert meta_b["samples"] == 3 * 4 + 1 * 4 and meta_b["init_samples"] == 12  # the init's count too
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(x, y, atol=1e-5), name
    other = replace(TINY, denoiser=replace(TINY.denoiser, self_blocks=2))
    with pytest.raises(ValueError, match="another model configuration"):
        train(TrainConfig(**{**tuned.__dict__, "out": str(tmp_path / "ft2"), "model": other}), progress=False)


def test_training_never_replaces_weights_it_cannot_resume(tmp_path, engine):
    from dataclasses import replace

    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import TrainConfig

    trained = tmp_path / "trained"  # a finished checkpoint without its training state
    trained.mkdir()
    cfg = TrainConfig(out=str(trained), steps=1, batch_size=2, workers=0, val_every=1, val_samples=4, model=TINY)
    (trained / "model.safetensors").write_bytes(b"trained weights")
    with pytest.raises(ValueError, match="holds no resumable training run; use --force"):
        train(cfg, progress=False)
    assert (trained / "model.safetensors").read_bytes() == b"trained weights"
    run = TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "run")})
    train(run, progress=False)
    with pytest.raises(ValueError, match="already at step 1 of --steps 1: nothing to train"):
        train(run, progress=False)
    other = replace(TINY, denoiser=replace(TINY.denoiser, self_blocks=2))
    with pytest.raises(ValueError, match="another model configuration"):
        train(TrainConfig(**{**run.__dict__, "steps": 2, "model": other}), progress=False)
    forced = train(TrainConfig(**{**cfg.__dict__, "force": True}), progress=False)
    assert forced["step"] == 1 and (trained / "model.safetensors").read_bytes() != b"trained weights"


def test_ctrl_c_saves_the_run_and_the_same_command_resumes_it(tmp_path, engine, monkeypatch, caplog):
    import logging

    import hmdiff_ros.model.losses as losses_module
    from hmdiff_ros.model.resume import STATE
    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import TrainConfig

    run = tmp_path / "run"
    cfg = TrainConfig(out=str(run), steps=5, batch_size=2, workers=0, val_every=100, val_samples=4, model=TINY)
    real, calls = losses_module.losses, []

    def interrupted_at(n):
        def losses(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        return losses

    # Ctrl-C in the first step: nothing to save, no folder left behind
    monkeypatch.setattr(losses_module, "losses", interrupted_at(1))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert not run.exists()
    # Ctrl-C in step 4 (no validation yet): the state after 3 steps is saved, then re-raised
    calls.clear()
    monkeypatch.setattr(losses_module, "losses", interrupted_at(4))
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.model.train"), pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    meta = json.loads((run / "config.json").read_text())
    assert meta["step"] == 3 and meta["metrics"]["step"] == 3 and meta["metrics"]["interrupted"] is True
    assert (run / STATE).is_file() and (run / "model.safetensors").is_file()
    assert not (run / "metrics.jsonl").exists()  # validation lines only
    assert f"interrupted at step 3 of 5: training state saved to {run}" in caplog.text
    assert "run the same command again to resume" in caplog.text
    # the same command resumes from step 3 (two more steps); --init is ignored with a warning
    calls.clear()
    caplog.clear()
    monkeypatch.setattr(losses_module, "losses", interrupted_at(0))
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.model.train"):
        metrics = train(TrainConfig(**{**cfg.__dict__, "init": str(tmp_path / "elsewhere")}), progress=False)
    assert metrics["step"] == 5 and len(calls) == 2
    assert f"--init {tmp_path / 'elsewhere'} is ignored: the run in {run} is resumed from step 3" in caplog.text
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [5]


TINY_YAML = """\
model:
  encoder: {width: 32, base_channels: 8}
  denoiser: {width: 32, heads: 2, self_blocks: 1, cross_blocks: 1, vertex_groups: 8}
  scheduler: {num_train_timesteps: 100}
"""


def test_the_train_command_prints_one_record_on_stdout_and_progress_on_stderr(tmp_path, engine, capsys):
    from hmdiff_ros.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(config),
        "--out",
        str(run),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--val-every",
        "1",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1, captured.out  # the final record only
    assert json.loads(lines[0])["step"] == 2
    # each validation's metrics are progress: on stderr, one per validation
    shown = [json.loads(x) for x in captured.err.splitlines() if x.startswith("{")]
    assert [m["step"] for m in shown] == [1, 2]


def _stderr_reader(proc):
    """The text a process writes to stderr so far, read by a thread (tqdm writes no newlines)."""
    import threading

    chunks = []

    def read():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            chunks.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return lambda: b"".join(chunks).decode(errors="replace"), thread


def test_sigterm_to_the_process_group_with_data_workers_saves_the_run(tmp_path, engine):
    """systemd, docker and Slurm stop a job with SIGTERM to every process of its group: the
    data-loader workers die too. The run is saved, exits 143 without tracebacks, and resumes."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    run = tmp_path / "run"

    def command(steps):
        return [
            sys.executable,
            "-m",
            "hmdiff_ros.cli",
            "train",
            "--config",
            str(config),
            "--out",
            str(run),
            "--steps",
            str(steps),
            "--batch-size",
            "4",
            "--workers",
            "2",
            "--val-every",
            "100000",
            "--device",
            "cpu",
        ]

    proc = subprocess.Popen(command(100000), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        err, reader = _stderr_reader(proc)
        deadline = time.time() + 90
        while not re.search(r"\| *([3-9]|\d\d+)/100000", err()) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, err()
        assert time.time() < deadline, f"no training steps within 90 s: {err()[-2000:]}"
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    text = err()
    assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    assert text.strip().splitlines()[-1] == "hmdiff train: interrupted (SIGTERM)"
    step = json.loads((run / "config.json").read_text())["step"]
    assert step >= 3 and (run / "train_state.safetensors").is_file() and (run / "model.safetensors").is_file()
    assert f"interrupted at step {step} of 100000: training state saved" in text
    assert not list(run.glob("*.tmp"))
    # the run resumes where it stopped
    done = subprocess.run(command(step + 2), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {run} from step {step}" in done.stderr
    assert json.loads(done.stdout)["step"] == step + 2
    assert json.loads((run / "config.json").read_text())["step"] == step + 2


def test_a_worker_killed_by_a_signal_is_an_interruption_not_an_internal_error(tmp_path, engine, monkeypatch):
    """The data loader's report of a killed worker (a RuntimeError) saves the run like Ctrl-C
    and is raised as KeyboardInterrupt of that signal; other errors pass through."""
    import signal

    import hmdiff_ros.model.losses as losses_module
    from hmdiff_ros.model.interrupts import worker_signal
    from hmdiff_ros.model.resume import STATE
    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import TrainConfig

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # a background job ignores SIGINT
    assert worker_signal(RuntimeError("DataLoader worker (pid 12) is killed by signal: Terminated. ")) == signal.SIGTERM
    assert worker_signal(RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed. ")) == signal.SIGKILL
    assert worker_signal(RuntimeError("DataLoader worker (pid(s) 12) exited unexpectedly")) is None
    assert worker_signal(RuntimeError("DataLoader worker (pid 12) exited unexpectedly with exit code 1.")) is None
    assert worker_signal(RuntimeError("CUDA out of memory")) is None
    assert worker_signal(ValueError("DataLoader worker (pid 12) is killed by signal: Terminated.")) is None

    class Dead:
        exitcode = -signal.SIGTERM

    assert worker_signal(RuntimeError("DataLoader worker (pid(s) 12) exited unexpectedly"), [Dead()]) == 15

    run = tmp_path / "run"
    cfg = TrainConfig(out=str(run), steps=5, batch_size=2, workers=0, val_every=100, val_samples=4, model=TINY)
    real, calls = losses_module.losses, []

    def losses(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")
        return real(*args, **kwargs)

    monkeypatch.setattr(losses_module, "losses", losses)
    with pytest.raises(KeyboardInterrupt) as exc:
        train(cfg, progress=False)
    assert exc.value.args == (signal.SIGTERM,)
    assert json.loads((run / "config.json").read_text())["step"] == 2 and (run / STATE).is_file()
    calls.clear()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(losses_module, "losses", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not an interruption: nothing saved over the run
        train(cfg, progress=False)
    assert json.loads((run / "config.json").read_text())["step"] == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # handlers put back


def test_data_workers_ignore_ctrl_c_but_not_sigterm():
    import signal

    from hmdiff_ros.data.engine import quiet_worker

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        quiet_worker(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is before[1]
    finally:
        signal.signal(signal.SIGINT, before[0])


def test_a_prior_token_model_fine_tunes_from_one_without_on_the_fitted_stream(tmp_path):
    from dataclasses import replace

    from hmdiff_ros.model.checkpoint import load_checkpoint
    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import TrainConfig

    base = TrainConfig(
        out=str(tmp_path / "base"), steps=1, batch_size=4, workers=0, val_every=1, val_samples=4, model=TINY
    )
    train(base, progress=False)
    tuned = replace(
        base,
        out=str(tmp_path / "tuned"),
        init=str(tmp_path / "base"),
        model=replace(TINY, prior_tokens=True),
        prior="fitted",
        families="robot",
        lr=1e-9,
        warmup_steps=1,
    )
    metrics = train(tuned, progress=False)
    assert metrics["step"] == 1
    a, b = load_checkpoint(tmp_path / "base")[0], load_checkpoint(tmp_path / "tuned")[0]
    assert b.cfg.prior_tokens and not a.cfg.prior_tokens
    for name, x in a.state_dict().items():  # the shared weights start from the base run
        assert torch.allclose(x, b.state_dict()[name], atol=1e-5), name
    meta = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert meta["train"]["prior"] == "fitted" and meta["train"]["families"] == "robot"
    with pytest.raises(ValueError, match="prior must be one of"):
        TrainConfig(prior="mediapipe")
    with pytest.raises(ValueError, match="another model configuration"):  # tokens cannot be dropped
        train(replace(base, out=str(tmp_path / "x"), init=str(tmp_path / "tuned")), progress=False)


def test_focus_steps_train_that_share_of_a_batch_at_the_few_step_samplers_timesteps(tiny, monkeypatch):
    from dataclasses import replace

    from hmdiff_ros.model.losses import FOCUS_STEPS, focus_timesteps, losses
    from hmdiff_ros.model.train_config import TrainConfig

    sched = tiny.scheduler
    visited = set(focus_timesteps(sched).tolist())
    for k in FOCUS_STEPS:
        sched.set_timesteps(k)
        assert set(sched.timesteps.tolist()) <= visited
    drawn = []
    add_noise = type(sched).add_noise
    monkeypatch.setattr(type(sched), "add_noise", lambda self, x0, n, t: drawn.append(t) or add_noise(self, x0, n, t))
    n = 256
    batch = {
        "coarse_rel": torch.zeros(n, tiny.num_coarse, 3),
        "joints_rel": torch.zeros(n, tiny.num_joints, 3),
        "prior_xyz": torch.zeros(n, 24, 3),
        "vis": torch.ones(n, 24),
    }
    proxy = _inputs(n)[0]
    cfg = TrainConfig(model=TINY)
    torch.manual_seed(0)
    for focus in (1.0, 0.0, 0.5):
        with torch.no_grad():
            losses(tiny, batch, proxy, replace(cfg, focus_steps=focus), torch.tensor([[0, 1]]))
        share = np.isin(drawn[-1].numpy(), sorted(visited)).mean()
        if focus == 1.0:
            assert share == 1.0
        elif focus == 0.0:
            assert share < 0.2  # uniform over 100 steps: the visited few by chance
        else:
            assert 0.3 < share < 0.8
    with pytest.raises(ValueError, match="focus_steps must be in \\[0, 1\\]"):
        TrainConfig(focus_steps=1.5)


def test_mix_study_puts_the_studys_people_in_the_last_rows_of_a_batch():
    from hmdiff_ros.data.study_reader import TRAINING_KEYS
    from hmdiff_ros.model.train import mix_study

    n, m = 8, 5
    shapes = {"uv": (24, 2), "vis": (24,), "prior_xyz": (24, 3), "mask": (4, 4), "valid": (4, 4)}
    shapes.update(coarse_rel=(600, 3), joints_rel=(25, 3))
    batch = {k: torch.zeros((n, *s)) for k, s in shapes.items()}
    batch["K"] = torch.zeros(n, 3, 3)  # a key training does not read
    pool = {
        k: np.arange(1, m + 1, dtype=np.float32).reshape(m, *[1] * len(s)) * np.ones((m, *s), np.float32)
        for k, s in shapes.items()
    }
    out = mix_study(batch, pool, 3, np.random.default_rng(0))
    assert set(out) == set(TRAINING_KEYS)
    for k in TRAINING_KEYS:
        assert out[k].shape == batch[k].shape and out[k].dtype == torch.float32
        assert (out[k][:5] == 0).all() and (out[k][5:] >= 1).all()
    picked = out["uv"][5:, 0, 0]
    assert all((out[k][5:].flatten(1) == picked[:, None]).all() for k in TRAINING_KEYS)  # whole samples
    again = mix_study(batch, pool, 3, np.random.default_rng(0))
    assert all(torch.equal(out[k], again[k]) for k in TRAINING_KEYS)  # the draw follows the generator
    assert (mix_study(batch, pool, 0, np.random.default_rng(0))["uv"] == 0).all()


def test_a_study_fraction_needs_a_study_and_training_refuses_a_held_out_study(tmp_path, capsys, monkeypatch):
    pytest.importorskip("anny", reason="the Anny body model is not installed")
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    from hmdiff_ros.cli import main
    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import TrainConfig

    with pytest.raises(ValueError, match="study_fraction 0.25 needs study"):
        TrainConfig(study_fraction=0.25)
    with pytest.raises(ValueError, match=r"study_fraction.*in \[0, 1\)"):
        TrainConfig(study="x", study_fraction=1.0)
    study = ["data", "prior-study", "--num", "8", "--chunk", "8", "--workers", "1", "--json"]
    assert main([*study, "--bodies", "train", "--out", str(tmp_path / "train")]) == 0
    assert main([*study, "--out", str(tmp_path / "test")]) == 0
    capsys.readouterr()
    cfg = TrainConfig(
        out=str(tmp_path / "run"), steps=2, batch_size=4, workers=0, val_every=2, val_samples=4, model=TINY
    )
    with pytest.raises(ValueError, match="held-out bodies"):
        train(dataclasses.replace(cfg, study=str(tmp_path / "test"), study_fraction=0.5), progress=False)
    assert not (tmp_path / "run").exists()
    import hmdiff_ros.model.train as training

    mixed = []
    real_mix = training.mix_study

    def counted(batch, pool, count, rng):
        mixed.append(count)
        return real_mix(batch, pool, count, rng)

    monkeypatch.setattr(training, "mix_study", counted)
    metrics = train(dataclasses.replace(cfg, study=str(tmp_path / "train"), study_fraction=0.5), progress=False)
    assert metrics["step"] == 2 and math.isfinite(metrics["loss"])
    assert mixed == [2, 2]  # half of each batch of 4, every step
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["study_fraction"] == 0.5 and saved["study"] == str(tmp_path / "train")
