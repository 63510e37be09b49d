"""``hmdiff train``: train HMDiff on the streaming synthetic data engine.

Losses: the diffusion target (ε, x_0 or v, per the scheduler) as MSE; plus, on x̂_0, an L1
on vertices and joints (metres) and an L1 on coarse-mesh edge lengths. AdamW with linear
warm-up and cosine decay, gradient clipping, an EMA of the weights (what is saved and
evaluated), bf16 autocast on CUDA, periodic validation on a fixed synthetic batch,
checkpoints (safetensors + JSON) and resume from the output folder.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from hmdiff_ros.body.topology import Topology
from hmdiff_ros.data.engine import SyntheticConfig, SyntheticDataset, SyntheticEngine, batch_rng
from hmdiff_ros.model.checkpoint import CONFIG, save_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.hmdiff import HMDiff, HMDiffConfig
from hmdiff_ros.model.metrics import mpjpe_mm, pa_mpjpe_mm
from hmdiff_ros.model.proxy import make_proxy

log = logging.getLogger(__name__)
STATE = "train_state.safetensors"  # raw weights and optimiser moments, for resume
VAL_SEED = 10_000  # validation batches never overlap training streams (seed = TrainConfig.seed)


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/hmdiff"  # checkpoints, metrics.jsonl; resumed from when it holds a run
    steps: int = 20000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 300
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    loss_x0: float = 1.0  # weight of the L1 on x̂_0 (metres)
    loss_edge: float = 1.0  # weight of the L1 on coarse edge lengths (metres)
    workers: int = 1  # data-loader processes
    seed: int = 0
    val_every: int = 1000
    val_samples: int = 256
    max_minutes: float = 0.0  # stop (and checkpoint) after this wall time, cosine decay by the clock; 0: no limit
    device: str = "auto"  # "auto", "cpu" or "cuda"
    init: str = ""  # start from this checkpoint's weights (fine-tuning); ignored when resuming
    force: bool = False  # start afresh in an ``out`` that holds anything but a resumable run of this model
    model: HMDiffConfig = field(default_factory=HMDiffConfig)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0 < self.lr < 1 or not 0 <= self.ema_decay < 1:
            raise ValueError("lr must be in (0, 1) and ema_decay in [0, 1)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    @classmethod
    def from_dict(cls, d: Dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "model" in d:
            base = HMDiffConfig().to_dict()
            for k, v in d["model"].items():
                base[k] = {**base[k], **v} if isinstance(base.get(k), dict) else v
            d["model"] = HMDiffConfig.from_dict(base)
        return cls(**d)


def load_train_config(path: "str | Path | None", overrides: Dict | None = None) -> TrainConfig:
    d: Dict = {}
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config '{path}' not found")
        d = yaml.safe_load(path.read_text()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"training config '{path}' must be a mapping of keys to values")
    d.update(overrides or {})
    return TrainConfig.from_dict(d)


def points_of(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Ground-truth points ``(B, P, 3)``: coarse vertices then joints, root-relative, metres."""
    return torch.cat([batch["coarse_rel"], batch["joints_rel"]], dim=1).float()


def losses(model: HMDiff, batch: Dict[str, torch.Tensor], proxy: torch.Tensor, cfg: TrainConfig, edges: torch.Tensor):
    sched = model.scheduler
    x0 = points_of(batch) / model.cfg.data_scale  # (B, P, 3) normalised
    noise = torch.randn_like(x0)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), device=x0.device)
    xt = sched.add_noise(x0, noise, t)
    out = model(xt, t, model.encoder(proxy))
    pred = sched.to_x0_eps(out, t, xt)[0] * model.cfg.data_scale  # x̂_0, metres
    gt = x0 * model.cfg.data_scale
    terms = {"diffusion": torch.nn.functional.mse_loss(out, sched.target(x0, noise, t))}
    terms["x0_l1"] = (pred - gt).abs().mean()
    vp, vg = pred[:, : model.num_coarse], gt[:, : model.num_coarse]
    length = lambda v: (v[:, edges[:, 0]] - v[:, edges[:, 1]]).norm(dim=-1)  # noqa: E731
    terms["edge_l1"] = (length(vp) - length(vg)).abs().mean()
    total = terms["diffusion"] + cfg.loss_x0 * terms["x0_l1"] + cfg.loss_edge * terms["edge_l1"]
    return total, terms


@torch.no_grad()
def evaluate_batches(model: HMDiff, batches, steps: int, dat: DATConfig, hypotheses: int = 1, seed: int = 0) -> Dict:
    """Metrics (mm) over engine-style batches (numpy, with ``proxy``)."""
    gen = torch.Generator().manual_seed(seed)
    errs: Dict[str, list] = {"mpjpe_mm": [], "pa_mpjpe_mm": [], "mpvpe_mm": [], "pa_mpvpe_mm": []}
    device = next(model.parameters()).device
    for b in batches:
        out = model.sample(
            torch.as_tensor(b["proxy"], device=device), torch.as_tensor(b["prior_xyz"], device=device),
            torch.as_tensor(b["vis"], device=device), steps=steps, dat=dat, hypotheses=hypotheses,
            generator=gen if device.type == "cpu" else None,
        )  # fmt: skip
        pred = out.points.cpu().numpy().astype(np.float64)
        verts, joints = pred[:, : model.num_coarse], pred[:, model.num_coarse :]
        gj, gv = b["joints_rel"].astype(np.float64), b["coarse_rel"].astype(np.float64)
        errs["mpjpe_mm"].append(mpjpe_mm(joints, gj))
        errs["pa_mpjpe_mm"].append(pa_mpjpe_mm(joints, gj))
        errs["mpvpe_mm"].append(mpjpe_mm(verts, gv))
        errs["pa_mpvpe_mm"].append(pa_mpjpe_mm(verts, gv))
    out = {k: round(float(np.concatenate(v).mean()), 2) for k, v in errs.items()}
    out["num_samples"] = int(sum(len(v) for v in errs["mpjpe_mm"]))
    return out


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def _save_state(
    folder: Path, model: HMDiff, ema: HMDiff, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig, metrics: Dict
) -> None:
    """EMA weights as the checkpoint; raw weights + optimiser moments beside it, for resume."""
    from safetensors.torch import save_file

    extra = {"train": _jsonable(asdict(cfg)), "step": step, "metrics": metrics}
    save_checkpoint(folder, ema, extra)
    state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, s in enumerate(opt.state_dict()["state"].values()):
        for k, v in s.items():
            if torch.is_tensor(v):
                state[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
    save_file(state, str(folder / STATE))


def _resumable(out: Path, cfg: TrainConfig) -> bool:
    """Whether ``out`` holds a run of this model to resume. Anything else there (a finished
    checkpoint, another model's run, unrelated files) is refused unless ``cfg.force``: a run
    never silently replaces trained weights."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; expected a folder for the run")
    if not out.is_dir() or not any(out.iterdir()) or cfg.force:
        return False
    hint = "use --force to train afresh there (its checkpoint is replaced) or choose another --out"
    if not ((out / CONFIG).is_file() and (out / STATE).is_file()):
        raise ValueError(f"--out '{out}' is not empty and holds no resumable training run; {hint}")
    try:
        meta = json.loads((out / CONFIG).read_text())
        model, step = meta["model"], int(meta["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--out '{out}': its {CONFIG} is not a training run's ({exc}); {hint}") from None
    if model != _jsonable(cfg.model.to_dict()):
        raise ValueError(f"--out '{out}' holds a run of another model configuration; {hint}")
    if step >= cfg.steps:
        raise ValueError(
            f"--out '{out}' holds a run already at step {step} of --steps {cfg.steps}: nothing to train; "
            f"raise --steps to continue it, or {hint}"
        )
    return True


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


def train(cfg: TrainConfig, progress: bool = True) -> Dict:
    from safetensors.torch import load_file
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    device = _device(cfg)
    out = Path(cfg.out)
    resume = _resumable(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # a fresh run (``force``): no earlier state or metrics mix into it
        for name in (STATE, "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
    topology = Topology.load()
    model = HMDiff(cfg.model, topology).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if resume:
        meta = json.loads((out / CONFIG).read_text())
        state = load_file(str(out / STATE))
        model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        opt_state = opt.state_dict()
        for i, p in enumerate(opt_state["param_groups"][0]["params"]):
            keys = [k for k in state if k.startswith(f"opt.{i}.")]
            if keys:
                opt_state["state"][p] = {k.split(".", 2)[2]: state[k].to(device) for k in keys}
        opt.load_state_dict(opt_state)
        start = int(meta["step"])
        log.info("resuming %s from step %d", out, start)
    elif cfg.init:
        from hmdiff_ros.model.checkpoint import load_checkpoint

        base, meta = load_checkpoint(cfg.init)
        if base.cfg.to_dict() != model.cfg.to_dict():
            raise ValueError(f"--init checkpoint '{cfg.init}' has another model configuration than this run")
        model.load_state_dict(base.state_dict())
        log.info("starting from the weights of %s (step %s)", cfg.init, meta.get("step"))
    ema = copy.deepcopy(model).eval()
    if start and (out / "model.safetensors").is_file():
        ema.load_state_dict(load_file(str(out / "model.safetensors"), device=str(device)))
    for p in ema.parameters():
        p.requires_grad_(False)

    data_cfg = SyntheticConfig(proxy=dataclass_replace_crop(cfg))
    engine = SyntheticEngine(data_cfg)  # builds/loads the shape bank before workers start
    val = [
        engine.generate(batch_rng(VAL_SEED, i), min(256, cfg.val_samples - 256 * i))
        for i in range((cfg.val_samples + 255) // 256)
    ]
    stream = SyntheticDataset(data_cfg, cfg.batch_size, seed=cfg.seed)
    stream.skip = start  # batches already used
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers)
    edges = torch.as_tensor(_edges(topology.coarse_faces), device=device)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.max_minutes > 0:  # a time budget decays the rate by the clock when it is the tighter limit
            frac = max(frac, (time.time() - t0) / 60 / cfg.max_minutes)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    metrics_file = out / "metrics.jsonl"
    t0, last, seen = time.time(), time.time(), 0
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress)
    metrics: Dict = {}
    step = start
    for batch in loader:
        if step >= cfg.steps:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        proxy = make_proxy(batch["uv"], batch["vis"], batch["mask"], batch["valid"], data_cfg.proxy)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, terms = losses(model, batch, proxy, cfg, edges)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        step += 1
        seen += len(proxy)
        bar.update(1)
        if step % 20 == 0:
            rate = seen / (time.time() - last)
            bar.set_postfix(
                loss=f"{loss.item():.4f}", x0_mm=f"{terms['x0_l1'].item() * 1000:.1f}", samples_s=f"{rate:.0f}"
            )
            last, seen = time.time(), 0
        timeout = cfg.max_minutes > 0 and (time.time() - t0) / 60 > cfg.max_minutes
        if step % cfg.val_every == 0 or step == cfg.steps or timeout:
            metrics = {
                "step": step, "minutes": round((time.time() - t0) / 60, 1),
                "loss": round(loss.item(), 5), **{k: round(v.item(), 5) for k, v in terms.items()},
                "val_dat_off": evaluate_batches(ema, val, steps=4, dat=DATConfig(mode="off")),
                "val_dat_fast": evaluate_batches(ema, val, steps=4, dat=DATConfig(mode="fast")),
            }  # fmt: skip
            with metrics_file.open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            _save_state(out, model, ema, opt, step, cfg, metrics)
            tqdm.write(json.dumps(metrics))
        if timeout:
            log.info("time budget of %.1f min reached at step %d", cfg.max_minutes, step)
            break
    bar.close()
    return metrics


def dataclass_replace_crop(cfg: TrainConfig):
    from hmdiff_ros.model.proxy import ProxyConfig

    return ProxyConfig(crop_size=cfg.model.encoder.input_size)


def _edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)
