"""The lifter (an MLP yardstick): shapes, training, checkpoints, ``train-lifter`` and its place in ``ablate``."""

import json

import numpy as np
import pytest
import torch

from hmdiff_ros import defaults
from hmdiff_ros.model.lifter import (
    Lifter,
    LifterConfig,
    LifterTrainConfig,
    lifter_inputs,
    lifter_loss,
    load_lifter,
    save_lifter,
    train_lifter,
)

TINY = LifterConfig(width=32, blocks=1)


def _people(b=3, seed=0):
    rng = np.random.default_rng(seed)
    uv = rng.uniform(0, 64, (b, 24, 2)).astype(np.float32)
    vis = rng.uniform(0, 1, (b, 24)).astype(np.float32)
    xyz = (rng.standard_normal((b, 24, 3)) * 0.3).astype(np.float32)
    return uv, vis, xyz


def _trained(model: Lifter, seed=0) -> Lifter:
    """Weights away from the zero-initialised head, so that outputs differ from U."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_shapes_single_person_tensors_and_size():
    model = _trained(Lifter())
    uv, vis, xyz = _people()
    joints = model.predict(uv, vis, xyz)
    assert joints.shape == (3, 25, 3) and joints.dtype == np.float32
    assert np.allclose(joints[:, 17], 0)  # root-relative: the pelvis at the origin
    assert np.allclose(model.predict(uv[1], vis[1], xyz[1]), joints[1], atol=1e-5)
    out = model.predict(torch.as_tensor(uv), torch.as_tensor(vis), torch.as_tensor(xyz))
    assert torch.is_tensor(out) and out.shape == (3, 25, 3)
    assert sum(p.numel() for p in model.parameters()) * 4 <= 5e6  # the default checkpoint stays under 5 MB
    with pytest.raises(ValueError, match="uv"):
        model.predict(uv[:, :17], vis, xyz)


def test_a_fresh_lifter_returns_u_and_missing_keypoints_are_zeroed():
    uv, vis, xyz = _people(2)
    joints = Lifter(TINY).predict(uv, vis, xyz)
    from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES

    pelvis = PRIOR_JOINT_NAMES.index("pelvis")
    assert np.allclose(joints[:, list(PRIOR_JOINT_INDICES)], xyz - xyz[:, [pelvis]], atol=1e-6)
    uv[0, 3] = np.nan
    vis[0, 5], vis[0, 4] = 0.1, 0.9
    f = lifter_inputs(uv, vis, xyz, TINY).view(2, -1)
    keypoints = f[:, :48].view(2, 24, 2)
    assert torch.isfinite(f).all()
    assert (keypoints[0, 3] == 0).all() and (keypoints[0, 5] == 0).all() and (keypoints[0, 4] != 0).all()


def test_a_few_hundred_steps_cut_the_loss(engine):
    from hmdiff_ros.data.engine import batch_rng

    stream = [engine.generate(batch_rng(5, i), 64, proxy=False) for i in range(6)]
    stream = [{k: torch.as_tensor(b[k]) for k in ("uv", "vis", "prior_xyz", "joints_rel")} for b in stream]
    torch.manual_seed(0)
    model = Lifter(LifterConfig(width=128, blocks=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(300):
        loss = lifter_loss(model, stream[step % len(stream)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:12]), np.mean(losses[-12:])
    assert last < 0.6 * first, (first, last)


def test_save_and_load_give_identical_outputs(tmp_path):
    model = _trained(Lifter(TINY))
    save_lifter(tmp_path / "ckpt", model, {"step": 3})
    again, meta = load_lifter(tmp_path / "ckpt")
    assert meta["kind"] == "lifter" and meta["step"] == 3 and again.cfg == TINY
    uv, vis, xyz = _people()
    assert np.array_equal(model.predict(uv, vis, xyz), again.predict(uv, vis, xyz))
    with pytest.raises(FileNotFoundError, match="train-lifter"):
        load_lifter(tmp_path / "nothing")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model": {"encoder": {}}}))
    with pytest.raises(ValueError, match="not a lifter checkpoint"):
        load_lifter(tmp_path / "ckpt")


def _cfg(out, **kw):
    base = dict(out=str(out), samples=8, batch_size=4, workers=0, val_every=1, val_samples=8, model=TINY)
    return LifterTrainConfig(**{**base, **kw})


def test_training_checkpoints_resumes_and_refuses_what_it_cannot_resume(tmp_path, engine):
    run = tmp_path / "run"
    result = train_lifter(_cfg(run), progress=False)
    assert result["step"] == 2 and result["samples"] == 8 and result["val"]["num_samples"] == 8
    assert {"model.safetensors", "config.json", "metrics.jsonl", "train_state.safetensors"} <= {
        p.name for p in run.iterdir()
    }
    again = train_lifter(_cfg(run, samples=12), progress=False)  # resumed: one more step
    assert again["step"] == 3
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(ValueError, match="nothing to train"):
        train_lifter(_cfg(run, samples=12), progress=False)
    with pytest.raises(ValueError, match="another lifter"):
        train_lifter(_cfg(run, samples=40, batch_size=8), progress=False)
    model, _ = load_lifter(run)
    assert model.cfg == TINY


def test_train_lifter_refuses_a_non_empty_out_without_force(tmp_path, capsys, engine):
    from hmdiff_ros.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["train-lifter", "--out", str(out), "--samples", "4", "--batch-size", "4", "--workers", "0"]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main([*args, "--force", "--val-every", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 1 and (out / "model.safetensors").is_file()


def test_ablate_reports_the_lifter_beside_the_prior_and_hmdiff(tmp_path, engine, topology, monkeypatch, caplog):
    from hmdiff_ros.data.store import write_split
    from hmdiff_ros.model.checkpoint import save_checkpoint
    from hmdiff_ros.model.denoiser import DenoiserConfig
    from hmdiff_ros.model.encoder import EncoderConfig
    from hmdiff_ros.model.hmdiff import HMDiff, HMDiffConfig
    from hmdiff_ros.model.scheduler import SchedulerConfig
    from hmdiff_ros.study import ablate as ablate_module

    tiny = HMDiffConfig(
        encoder=EncoderConfig(width=32, base_channels=8),
        denoiser=DenoiserConfig(width=32, heads=2, self_blocks=1, cross_blocks=1, vertex_groups=8),
        scheduler=SchedulerConfig(num_train_timesteps=100),
    )
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "hmdiff", HMDiff(tiny, topology))
    train_lifter(_cfg(tmp_path / "lifter", samples=4), progress=False)
    split = write_split(engine, tmp_path / "split", num=6, seed=1, split="test", progress=False)
    kw = dict(data=split, limit=4, steps=(1,), modes=("off",), progress=False)

    summary = ablate_module.ablate(tmp_path / "hmdiff", out=tmp_path / "a", lifter=tmp_path / "lifter", **kw)
    assert summary["lifter"] == str(tmp_path / "lifter")
    yard = json.loads((tmp_path / "a" / "ablation.json").read_text())["yardsticks"]
    assert set(yard) == {"prior", "lifter", "hmdiff"}
    assert yard["lifter"]["num_samples"] == yard["hmdiff"]["num_samples"] == yard["prior"]["num_samples"] == 4
    assert yard["hmdiff"]["steps"] == defaults.STEPS and yard["hmdiff"]["dat"] == defaults.DAT_MODE
    assert yard["lifter"]["pa_mpjpe_mm"] <= yard["lifter"]["mpjpe_mm"] + 1e-6
    text = (tmp_path / "a" / "ablation.md").read_text()
    assert "## Yardsticks" in text and "| lifter (MLP; 4 training samples)" in text and "simulated prior" in text
    # DAT's parts over sampling seeds: a spread, from runs that differ by their seed only
    results = json.loads((tmp_path / "a" / "ablation.json").read_text())["results"]
    parts = [r for r in results if r["kind"] == "parts"]
    assert [r["seed"] for r in parts] == list(ablate_module.SEEDS) and parts[0]["mpjpe_mm"] != parts[1]["mpjpe_mm"]
    assert "## DAT's parts" in text and "| off | off | off |" in text and " ± " in text
    assert [r["hypotheses"] for r in results if r["kind"] == "hypotheses"] == list(ablate_module.HYPOTHESES)

    monkeypatch.setattr(ablate_module, "DEFAULT_LIFTER", tmp_path / "no_lifter")
    ablate_module.ablate(tmp_path / "hmdiff", out=tmp_path / "b", **kw)
    assert json.loads((tmp_path / "b" / "ablation.json").read_text())["yardsticks"]["lifter"] is None
    assert sum("no lifter checkpoint" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(FileNotFoundError, match="--lifter"):
        ablate_module.ablate(tmp_path / "hmdiff", out=tmp_path / "c", lifter=tmp_path / "no_lifter", **kw)
