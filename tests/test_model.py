"""HMDiff model: scheduler maths, DAT, sampling, checkpoints, training and evaluation."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from hmdiff_ros.model.dat import DAT, DATConfig
from hmdiff_ros.model.denoiser import DenoiserConfig
from hmdiff_ros.model.encoder import EncoderConfig
from hmdiff_ros.model.hmdiff import HMDiff, HMDiffConfig
from hmdiff_ros.model.metrics import mpjpe_mm, pa_mpjpe_mm, procrustes_align
from hmdiff_ros.model.scheduler import PREDICTION_TYPES, DDIMScheduler, SchedulerConfig

TINY = HMDiffConfig(
    encoder=EncoderConfig(width=32, base_channels=8),
    denoiser=DenoiserConfig(width=32, heads=2, self_blocks=1, cross_blocks=1, vertex_groups=8),
    scheduler=SchedulerConfig(num_train_timesteps=100),
)


@pytest.fixture(scope="module")
def tiny(topology):
    torch.manual_seed(0)
    return HMDiff(TINY, topology).eval()


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 26, 64, 64, generator=g), torch.randn(b, 24, 3, generator=g) * 0.3, torch.ones(b, 24)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_scheduler_recovers_x0_and_eps_from_any_target(prediction_type):
    sched = DDIMScheduler(SchedulerConfig(prediction_type=prediction_type))
    x0, eps = torch.randn(5, 7, 3, dtype=torch.float64), torch.randn(5, 7, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 900, 998])
    xt = sched.add_noise(x0, eps, t)
    a = sched.alphas_cumprod[t].reshape(-1, 1, 1)
    torch.testing.assert_close(xt, a.sqrt() * x0 + (1 - a).sqrt() * eps)
    x0_hat, eps_hat = sched.to_x0_eps(sched.target(x0, eps, t), t, xt)
    torch.testing.assert_close(x0_hat, x0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(eps_hat, eps, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 4, 50])
def test_ddim_with_the_true_x0_and_noise_stays_on_the_trajectory(steps):
    sched = DDIMScheduler()
    sched.set_timesteps(steps)
    assert len(sched.timesteps) == steps and sched.timesteps[0] == 999 and (sched.timesteps.diff() < 0).all()
    x0, eps = torch.randn(3, 4, 3, dtype=torch.float64), torch.randn(3, 4, 3, dtype=torch.float64)
    x = sched.add_noise(x0, eps, torch.full((3,), 999))
    for t in sched.timesteps.tolist():
        prev = sched.previous_timestep(t)
        x = sched.step(x0, eps, t, x).prev_sample
        expected = x0 if prev < 0 else sched.add_noise(x0, eps, torch.full((3,), prev))
        torch.testing.assert_close(x, expected)
    torch.testing.assert_close(x, x0)


def test_cosine_schedule_is_monotone_and_ends_near_pure_noise():
    a = DDIMScheduler().alphas_cumprod
    assert (a.diff() < 0).all() and a[0] > 0.999 and a[-1] < 1e-4


def test_scheduler_eta_is_seeded_and_stochastic():
    sched = DDIMScheduler()
    sched.set_timesteps(4)
    x0, eps, x = torch.randn(2, 3, 3), torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    run = lambda seed: sched.step(x0, eps, 999, x, eta=1.0, generator=torch.Generator().manual_seed(seed)).prev_sample  # noqa: E731
    torch.testing.assert_close(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_scheduler_matches_diffusers_ddim(prediction_type):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (optional cross-check)")
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
    )
    ours = DDIMScheduler(SchedulerConfig(prediction_type=prediction_type))
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod.float(), atol=1e-6, rtol=1e-5)
    ref.set_timesteps(4)
    ours.set_timesteps(4)
    assert ours.timesteps.tolist() == ref.timesteps.tolist()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    for t in ours.timesteps.tolist():
        out = torch.randn(2, 5, 3, dtype=torch.float64)
        expected = ref.step(out, t, x, eta=0.0).prev_sample
        x0, eps = ours.to_x0_eps(out, torch.tensor(t), x)
        x_ours = ours.step(x0, eps, t, x).prev_sample
        torch.testing.assert_close(x_ours, expected, atol=1e-5, rtol=1e-5)
        x = expected


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SchedulerConfig(prediction_type="score"), "prediction_type must be one of"),
        (lambda: SchedulerConfig(beta_schedule="sigmoid"), "beta_schedule"),
        (lambda: DDIMScheduler().set_timesteps(0), "num_inference_steps"),
        (lambda: DDIMScheduler().set_timesteps(2000), "num_inference_steps"),
        (lambda: DATConfig(mode="slow"), "dat mode must be one of"),
        (lambda: DATConfig(tau=2.0), "tau"),
        (lambda: DenoiserConfig(width=30, heads=4), "divisible"),
        (lambda: EncoderConfig(kind="depth"), "encoder kind"),
    ],
)
def test_bad_options_raise_errors_listing_the_allowed_values(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_dat_alignment_reduces_the_gap_by_about_lambda(tiny):
    sched = tiny.scheduler
    aligner = DAT(DATConfig(scale=0.5), tiny.dat_map, tiny.cfg.data_scale)
    x0 = torch.randn(3, tiny.num_points, 3) * 0.5
    prior = torch.randn(3, 24, 3) * 0.3
    w = torch.ones(3, 24)
    xt = torch.randn(3, tiny.num_points, 3)
    gap, grad = aligner.gap_and_grad(x0, prior, w)
    a = sched.alphas_cumprod[50]
    eps = (xt - a.sqrt() * x0) / (1 - a).sqrt()
    x0_new, eps_new = aligner.align(x0, eps, xt, a, gap, grad, torch.tensor([True, True, False]))
    new_gap, _ = aligner.gap_and_grad(x0_new, prior, w)
    assert (new_gap[:2] < 0.75 * gap[:2]).all() and (new_gap[:2] > 0.3 * gap[:2]).all()
    torch.testing.assert_close(new_gap[2], gap[2])
    # x̂_0' and ε' stay consistent with the same noisy sample.
    torch.testing.assert_close(a.sqrt() * x0_new + (1 - a).sqrt() * eps_new, xt, atol=1e-4, rtol=1e-4)


def test_dat_closed_form_gradient_matches_autograd(tiny):
    aligner = DAT(DATConfig(), tiny.dat_map, tiny.cfg.data_scale)
    x0 = (torch.randn(2, tiny.num_points, 3, dtype=torch.float64) * 0.5).requires_grad_(True)
    prior = torch.randn(2, 24, 3, dtype=torch.float64) * 0.3
    w = torch.rand(2, 24, dtype=torch.float64)
    gap, grad = aligner.gap_and_grad(x0, prior, w)
    (auto,) = torch.autograd.grad(gap.sum(), x0)
    torch.testing.assert_close(grad, auto)


@pytest.mark.parametrize("mode", ["off", "fast", "full"])
def test_sampling_shapes_hypotheses_and_seeds(tiny, mode):
    proxy, prior, vis = _inputs(2)

    def run(seed, m):
        gen = torch.Generator().manual_seed(seed)
        return tiny.sample(proxy, prior, vis, steps=3, dat=DATConfig(mode=mode), hypotheses=m, generator=gen)

    out = run(0, 3)
    assert out.points.shape == (2, tiny.num_points, 3) and out.hypotheses.shape == (2, 3, tiny.num_points, 3)
    assert out.joint_std.shape == (2, 25) and (out.joint_std > 0).all()
    assert out.gaps.shape == (3, 6) and torch.isfinite(out.points).all()
    torch.testing.assert_close(run(0, 3).points, out.points, atol=1e-3, rtol=0)  # autograd sums may reorder
    assert not torch.allclose(run(1, 3).points, out.points)
    if mode != "off":
        assert torch.isfinite(out.gaps).all()


def test_dat_pulls_samples_towards_the_prior(tiny):
    proxy, prior, vis = _inputs(4, seed=3)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    off = tiny.sample(proxy, prior, vis, steps=4, dat=DATConfig(mode="off"), generator=gen())
    on = tiny.sample(proxy, prior, vis, steps=4, dat=DATConfig(mode="fast", tau=0.0, max_fraction=1.0), generator=gen())
    aligner = DAT(DATConfig(), tiny.dat_map, tiny.cfg.data_scale)
    norm = lambda p: p / tiny.cfg.data_scale  # noqa: E731
    gap_off, _ = aligner.gap_and_grad(norm(off.points), prior, vis)
    gap_on, _ = aligner.gap_and_grad(norm(on.points), prior, vis)
    assert (gap_on < gap_off).all()


def test_bad_sampling_inputs_raise_clear_errors(tiny):
    proxy, prior, vis = _inputs(1)
    with pytest.raises(ValueError, match=r"proxy must have shape \(B, 26, S, S\)"):
        tiny.sample(proxy[:, :3], prior, vis)
    bad = proxy.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tiny.sample(bad, prior, vis)
    with pytest.raises(ValueError, match="DAT needs the prior"):
        tiny.sample(proxy, dat=DATConfig(mode="fast"))
    with pytest.raises(ValueError, match="hypotheses"):
        tiny.sample(proxy, prior, vis, hypotheses=0)


def test_checkpoint_round_trip_and_errors(tiny, tmp_path):
    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "ckpt", tiny, {"step": 7})
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["step"] == 7 and loaded.cfg == tiny.cfg
    proxy, prior, vis = _inputs(1)
    a = tiny.sample(proxy, prior, vis, generator=torch.Generator().manual_seed(0)).points
    b = loaded.sample(proxy, prior, vis, generator=torch.Generator().manual_seed(0)).points
    torch.testing.assert_close(a, b)
    assert not list((tmp_path / "ckpt").glob("*.pt*")), "no pickle files"
    with pytest.raises(FileNotFoundError, match="not found or incomplete"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model": {"encoder": {}}}))
    with pytest.raises(ValueError, match="not a valid HMDiff checkpoint"):
        load_checkpoint(tmp_path / "ckpt")


def test_procrustes_and_errors():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(3, 25, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    pred = 1.3 * gt @ q.T + 0.5
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-9)
    assert pa_mpjpe_mm(pred, gt).max() < 1e-6
    np.testing.assert_allclose(mpjpe_mm(gt + [0.003, 0.004, 0.0], gt), 5.0)


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


def test_polar_rotation_matches_svd_kabsch_and_rejects_reflections():
    from hmdiff_ros.model.dat import polar_rotation

    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 20, 3, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(40, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.linalg.det(q).sign()[:, None, None]  # proper rotations
    b = a @ q.transpose(-1, -2) + 0.02 * torch.randn(a.shape, generator=g, dtype=torch.float64)
    h = torch.einsum("bqi,bqj->bij", a, b)
    u, _, vt = torch.linalg.svd(h)
    kabsch = vt.transpose(-1, -2) @ u.transpose(-1, -2)
    rot = polar_rotation(h)
    torch.testing.assert_close(rot, kabsch, atol=1e-9, rtol=0)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(40, 3, 3))
    mirror = torch.einsum("bqi,bqj->bij", a, b * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(polar_rotation(mirror[:1]), torch.eye(3, dtype=torch.float64)[None])


def test_dat_rigid_rotation_recovers_a_turned_body(tiny):
    """A prediction turned about the root is turned back onto the prior in one step."""
    import math as m

    aligner = DAT(DATConfig(), tiny.dat_map, tiny.cfg.data_scale)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, tiny.num_points, 3, generator=g, dtype=torch.float64) * 0.5
    f = torch.einsum("qp,bpd->bqd", tiny.dat_map.double(), x0) * tiny.cfg.data_scale  # the prior, exactly
    c, s = m.cos(2.5), m.sin(2.5)
    turn = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)  # 143 degrees about y
    w = torch.ones(2, 24, dtype=torch.float64)
    rot = aligner.rotation(x0 @ turn.T, f, w, torch.tensor([True, False]))
    back = (x0 @ turn.T) @ rot.transpose(-1, -2)
    torch.testing.assert_close(back[0], x0[0], atol=1e-8, rtol=0)
    torch.testing.assert_close(rot[1], torch.eye(3, dtype=torch.float64))  # inactive: untouched


def test_dat_step_is_bounded_when_its_direction_barely_helps(tiny):
    aligner = DAT(DATConfig(scale=1.0), tiny.dat_map, tiny.cfg.data_scale)
    x0 = torch.randn(1, tiny.num_points, 3) * 0.5
    prior = torch.randn(1, 24, 3) * 0.3
    gap, grad = aligner.gap_and_grad(x0, prior, torch.ones(1, 24))
    ortho = torch.randn_like(grad)
    ortho = ortho - (ortho * grad).sum() / (grad * grad).sum() * grad + 1e-6 * grad  # almost orthogonal
    a = tiny.scheduler.alphas_cumprod[50]
    x0_new, _ = aligner.align(x0, torch.zeros_like(x0), x0, a, gap, grad, torch.tensor([True]), grad_h=ortho)
    bound = 1.0 * gap / (0.2 * grad.norm())
    assert (x0_new - x0).norm() <= bound * 1.0001


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


def test_prior_tokens_read_the_prior_and_old_configs_load_without_them(topology, tmp_path):
    from dataclasses import replace

    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = HMDiff(replace(TINY, prior_tokens=True), topology).eval()
    proxy, prior, vis = _inputs(2)
    noise = torch.randn(2, model.num_points, 3, generator=torch.Generator().manual_seed(1))
    off = DATConfig(mode="off")
    a = model.sample(proxy, prior, vis, dat=off, noise=noise).points
    b = model.sample(proxy, prior.flip(-1), vis, dat=off, noise=noise).points  # another U, DAT off
    assert (a - b).abs().max() > 1e-4, "the denoiser must read U"
    assert model.encode(proxy, prior, vis).shape[1] == TINY.encoder.input_size**2 // 64 + 24
    with pytest.raises(ValueError, match="reads the prior"):
        model.sample(proxy, None, None, dat=off)
    # a joint below the visibility cut reads as off, whatever its coordinates
    low = vis.clone()
    low[:, 3] = 0.1
    moved = prior.clone()
    moved[:, 3] += 5.0
    torch.testing.assert_close(model.encode(proxy, prior, low), model.encode(proxy, moved, low))
    save_checkpoint(tmp_path / "ckpt", model, {})
    assert load_checkpoint(tmp_path / "ckpt")[0].cfg.prior_tokens
    old = TINY.to_dict()
    del old["prior_tokens"]  # configs written before prior tokens existed
    assert HMDiffConfig.from_dict(old) == TINY


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


def test_heatmap_keypoints_read_the_proxy_keypoints_back():
    from hmdiff_ros.model.encoder import heatmap_keypoints
    from hmdiff_ros.observation import ProxyConfig, make_proxy

    cfg = ProxyConfig()
    s = cfg.crop_size
    g = np.random.default_rng(0)
    uv = g.uniform(6, s - 7, (3, 24, 2)).astype(np.float32)  # sub-pixel, inside the crop
    vis = np.ones((3, 24), np.float32)
    vis[0, 5] = 0.2  # below the cut: no heatmap
    uv[1, 7] = np.nan  # not finite: no heatmap
    uv[2, 9] = (-40.0, 20.0)  # far outside the crop
    proxy = make_proxy(uv, vis, np.zeros((3, s, s)), np.ones((3, s, s)), cfg)
    got = heatmap_keypoints(torch.as_tensor(proxy[:, :24])).numpy()
    want = uv / s - 0.5
    on = np.ones((3, 24), bool)
    on[0, 5] = on[1, 7] = on[2, 9] = False
    assert np.abs(got[on] - want[on]).max() * s < 1e-3  # crop pixels
    assert (got[~on] == 0).all()
    # cut by the crop's edge: pulled inwards, never outside the crop
    edge = heatmap_keypoints(
        torch.as_tensor(
            make_proxy(
                np.array([[[0.5, 30.0]] * 24], np.float32),
                np.ones((1, 24), np.float32),
                np.zeros((1, s, s)),
                np.ones((1, s, s)),
                cfg,
            )[:, :24]
        )
    )
    assert -0.5 < edge[0, 0, 0].item() < 0.5 / s - 0.5 + 1.0 / s


def test_a_keypoint_token_model_reads_the_keypoints_and_fine_tunes_from_one_without(topology, tmp_path):
    from dataclasses import replace

    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from hmdiff_ros.model.resume import load_init

    with pytest.raises(ValueError, match="needs prior_tokens"):
        replace(TINY, prior_keypoints=True)
    torch.manual_seed(0)
    model = HMDiff(replace(TINY, prior_tokens=True, prior_keypoints=True), topology).eval()
    proxy, prior, vis = _inputs(2)
    moved = proxy.clone()
    moved[:, 3] = proxy[:, 3].roll(2, dims=-1)  # one keypoint's heatmap two pixels to the right
    n = TINY.encoder.input_size**2 // 64
    with torch.no_grad():
        a, b = model.encode(proxy, prior, vis), model.encode(moved, prior, vis)
    assert (a[:, n + 3] - b[:, n + 3]).abs().max() > 1e-4, "keypoint 3's token must read its heatmap"
    torch.testing.assert_close(a[:, n + 4 :], b[:, n + 4 :])  # the other prior tokens do not
    assert HMDiffConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "prior_keypoints"}) == TINY
    # grown from a prior-token checkpoint without keypoints: starts as that checkpoint
    base = HMDiff(replace(TINY, prior_tokens=True), topology).eval()
    save_checkpoint(tmp_path / "base", base, {})
    load_init(tmp_path / "base", model)
    noise = torch.randn(2, model.num_points, 3, generator=torch.Generator().manual_seed(1))
    off = DATConfig(mode="off")
    torch.testing.assert_close(
        model.sample(proxy, prior, vis, dat=off, noise=noise).points,
        base.sample(proxy, prior, vis, dat=off, noise=noise).points,
    )
    with pytest.raises(ValueError, match="another model configuration"):  # keypoints cannot be dropped
        save_checkpoint(tmp_path / "grown", model, {})
        load_init(tmp_path / "grown", base)
    assert load_checkpoint(tmp_path / "grown")[0].cfg.prior_keypoints


def test_the_prior_residual_adds_a_linear_read_of_u_to_x0_and_grows_from_zero(topology, tmp_path):
    from dataclasses import replace

    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from hmdiff_ros.model.resume import load_init

    with pytest.raises(ValueError, match="prior_residual needs"):
        replace(TINY, prior_residual=True)  # no prior tokens
    with pytest.raises(ValueError, match="prior_residual needs"):
        replace(TINY, prior_tokens=True, prior_residual=True, scheduler=SchedulerConfig(prediction_type="epsilon"))
    torch.manual_seed(0)
    base = HMDiff(replace(TINY, prior_tokens=True, prior_keypoints=True), topology).eval()
    save_checkpoint(tmp_path / "base", base, {})
    model = HMDiff(replace(base.cfg, prior_residual=True), topology).eval()
    load_init(tmp_path / "base", model)
    proxy, prior, vis = _inputs(2)
    vis[1, 6] = 0.1  # an off joint: U there is not read
    noise = torch.randn(2, model.num_points, 3, generator=torch.Generator().manual_seed(1))
    off = DATConfig(mode="off")
    a = model.sample(proxy, prior, vis, steps=1, dat=off, noise=noise).points
    torch.testing.assert_close(
        a, base.sample(proxy, prior, vis, steps=1, dat=off, noise=noise).points
    )  # starts as base
    with torch.no_grad():  # x̂_0 gains mean + W U: one step from the noisiest level ends on x̂_0
        model.prior_base.mean.fill_(0.1)
        model.prior_base.weight[:, 2] = 1.0  # every point moves with prior joint 2
    moved = prior.clone()
    moved[:, 2] += torch.tensor([0.05, 0.0, 0.0])
    moved[1, 6] += 3.0  # off: no effect
    b = model.sample(proxy, prior, vis, steps=1, dat=off, noise=noise).points
    c = model.sample(proxy, moved, vis, steps=1, dat=off, noise=noise).points
    scale = model.cfg.data_scale
    torch.testing.assert_close(b - a, (0.1 * scale + prior[:, None, 2, :]).expand_as(a), atol=1e-5, rtol=0)
    # moving U changes the tokens too; the base's share is exactly the joint's move
    base_only = model.prior_offset(moved, vis) - model.prior_offset(prior, vis)
    torch.testing.assert_close(
        base_only * scale, torch.tensor([0.05, 0.0, 0.0]).expand_as(base_only), atol=1e-6, rtol=0
    )
    assert (c - b).abs().max() > 0
    save_checkpoint(tmp_path / "res", model, {})
    assert load_checkpoint(tmp_path / "res")[0].cfg.prior_residual


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


def test_dat_first_step_always_aligns_and_tau_acts_at_two_steps(tiny):
    proxy, prior, vis = _inputs(4, seed=3)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731

    def run(tau, max_fraction=1.0):
        cfg = DATConfig(mode="fast", tau=tau, max_fraction=max_fraction)
        return tiny.sample(proxy, prior, vis, steps=2, dat=cfg, generator=gen()).points

    aligner = DAT(DATConfig(mode="fast", tau=0.5, max_fraction=1.0), tiny.dat_map, tiny.cfg.data_scale)
    gap = torch.tensor([1.0, 2.0])
    assert aligner.is_active(gap, gap, 0, 2).all()  # the first step is the reference: always aligned
    strict = DAT(DATConfig(mode="fast", tau=1.0, max_fraction=1.0), tiny.dat_map, 1.0)
    assert strict.is_active(gap, gap, 0, 2).all()  # ... at tau 1 too (its gap was compared with itself: 1 > 1)
    assert aligner.is_active(torch.tensor([0.4, 1.2]), gap, 1, 2).tolist() == [False, True]  # R = 0.4, 0.6
    assert not DAT(DATConfig(mode="fast", max_fraction=0.5), tiny.dat_map, 1.0).is_active(gap, gap, 1, 2).any()
    # at 2 steps tau decides whether the second step aligns: 0 aligns every sample, 1 only a grown gap
    assert not torch.allclose(run(0.0), run(1.0))
    # with half of the steps aligned only the first step aligns, whatever tau
    torch.testing.assert_close(run(0.0, 0.5), run(1.0, 0.5))


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
