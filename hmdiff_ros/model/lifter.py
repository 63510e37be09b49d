"""The lifter: a small MLP from the prior's observation to root-relative 3D joints.

The learned yardstick HMDiff has to beat. It reads what HMDiff reads of the prior -- the 2D
keypoints in the crop, their visibilities and the prior's 3D joints U -- but no silhouette,
and it predicts our 25 joints (no mesh) in one pass. It trains on the same synthetic stream
as ``hmdiff train`` (:class:`~hmdiff_ros.data.engine.SyntheticDataset`, the same seed and
batches) and validates on the same fixed batches.

Notation (B people, P = 24 prior joints, J = 25 joints):

- input features ``(B, F)``, F = 2P + P + P + 3P (:func:`lifter_inputs`): keypoints in crop
  pixels divided by the crop size and centred (``uv / S - 0.5``), zero where the keypoint is
  off (visibility below ``min_visibility`` or not finite, as :func:`~hmdiff_ros.observation.make_proxy`
  drops its heatmap); the visibilities; the on/off flags; U (metres, root-relative,
  camera-aligned), zero where not finite;
- output ``(B, J, 3)`` metres, root-relative (pelvis at the origin), camera-aligned: U placed
  on its joints (``head_top``, which U lacks, at the origin) plus the network's correction.

Checkpoints are folders like HMDiff's: ``model.safetensors`` and ``config.json`` (``kind``
``"lifter"``, the model config under ``model``, training facts and metrics). Training
(:func:`train_lifter`, ``hmdiff train-lifter``): AdamW with linear warm-up and cosine decay
(by the clock too under ``max_minutes``), gradient clipping and an EMA of the weights (what
is saved and validated), as ``hmdiff train``; an L1 loss on the joints; resumed from its
output folder; Ctrl-C or SIGTERM saves the run (:mod:`~hmdiff_ros.model.interrupts`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, Iterable, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hmdiff_ros.body.joints import JOINT_INDEX, NUM_JOINTS, PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.batches import training_loader, validation_batches
from hmdiff_ros.model.checkpoint import CONFIG, WEIGHTS
from hmdiff_ros.model.distributed import training_device
from hmdiff_ros.model.interrupts import interruptible
from hmdiff_ros.model.metrics import mpjpe_mm, pa_mpjpe_mm
from hmdiff_ros.model.optim import learning_rate, optimiser_step
from hmdiff_ros.model.resume import RunFolder, load_resume_state, resumable, save_resume_state
from hmdiff_ros.observation import ProxyConfig

log = logging.getLogger(__name__)
KIND = "lifter"  # config.json "kind": tells a lifter's checkpoint from HMDiff's
DEFAULT_LIFTER = Path(__file__).resolve().parent / "checkpoints" / "lifter"
NUM_PRIOR = len(PRIOR_JOINT_NAMES)
NUM_INPUTS = NUM_PRIOR * (2 + 1 + 1 + 3)  # uv, visibility, on/off, U
PELVIS = JOINT_INDEX["pelvis"]


@dataclass(frozen=True)
class LifterConfig:
    width: int = 512  # residual stream width
    blocks: int = 4  # residual MLP blocks
    mlp_ratio: float = 0.5  # a block's hidden units / width (keeps the checkpoint under 5 MB)
    dropout: float = 0.0  # the stream never repeats a sample: nothing to over-fit
    crop_size: int = ProxyConfig.crop_size  # keypoints are divided by it (the data's crop size)
    min_visibility: float = ProxyConfig.min_visibility  # keypoints below are off, as in make_proxy

    def __post_init__(self) -> None:
        for name in ("width", "blocks", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "blocks" else 1):
                raise ValueError(f"lifter {name} must be an integer >= {0 if name == 'blocks' else 1}, got {value!r}")
        if not 0 < self.mlp_ratio <= 8:
            raise ValueError(f"lifter mlp_ratio must be in (0, 8], got {self.mlp_ratio!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lifter dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.min_visibility <= 1:
            raise ValueError(f"lifter min_visibility must be in [0, 1], got {self.min_visibility!r}")

    @classmethod
    def from_dict(cls, d: Dict) -> "LifterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"unknown lifter config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> Dict:
        return asdict(self)


def lifter_inputs(uv, visibility, prior_xyz, cfg: LifterConfig) -> torch.Tensor:
    """Features ``(B, F)`` float32 (see the module docstring) from keypoints ``uv`` ``(B, P, 2)``
    in crop pixels, ``visibility`` ``(B, P)`` and U ``prior_xyz`` ``(B, P, 3)`` (numpy or torch;
    the result is on the device of ``uv`` when it is a tensor)."""
    uv, vis, xyz = (torch.as_tensor(a) for a in (uv, visibility, prior_xyz))
    b = len(vis)
    if (
        tuple(vis.shape) != (b, NUM_PRIOR)
        or tuple(uv.shape) != (b, NUM_PRIOR, 2)
        or tuple(xyz.shape) != (b, NUM_PRIOR, 3)
    ):
        raise ValueError(
            f"the lifter takes uv (B, {NUM_PRIOR}, 2), visibility (B, {NUM_PRIOR}) and prior_xyz (B, {NUM_PRIOR}, 3), "
            f"got {tuple(uv.shape)}, {tuple(vis.shape)} and {tuple(xyz.shape)}"
        )
    uv, vis, xyz = uv.float(), vis.float().to(uv.device), xyz.float().to(uv.device)
    vis = torch.nan_to_num(vis, nan=0.0).clamp(0, 1)
    on = (vis >= cfg.min_visibility) & torch.isfinite(uv).all(-1)  # (B, P)
    uv = torch.where(on[..., None], torch.nan_to_num(uv) / cfg.crop_size - 0.5, torch.zeros_like(uv))  # (B, P, 2)
    xyz = torch.where(torch.isfinite(xyz), xyz, torch.zeros_like(xyz))  # (B, P, 3)
    return torch.cat([uv.flatten(1), vis, on.float(), xyz.flatten(1)], dim=1)  # (B, F)


class Block(nn.Module):
    """Pre-norm residual MLP block: ``x + W2 drop(gelu(W1 norm(x)))``."""

    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.drop(F.gelu(self.fc(self.norm(x)))))  # (B, W)


class Lifter(nn.Module):
    """Features -> embedding -> ``blocks`` residual MLP blocks -> norm -> a correction per joint,
    added to U (see the module docstring); the head starts at zero, so an untrained lifter
    returns U re-rooted at the pelvis."""

    def __init__(self, cfg: LifterConfig = LifterConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = max(1, round(cfg.width * cfg.mlp_ratio))
        self.embed = nn.Linear(NUM_INPUTS, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg.width, hidden, cfg.dropout) for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, NUM_JOINTS * 3)
        nn.init.zeros_(self.head.weight)  # starts as U itself
        nn.init.zeros_(self.head.bias)
        self.register_buffer("prior_index", torch.tensor(PRIOR_JOINT_INDICES), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Root-relative joints ``(B, J, 3)`` metres from features ``(B, F)`` (:func:`lifter_inputs`)."""
        h = self.embed(features)  # (B, W)
        for block in self.blocks:
            h = block(h)
        delta = self.head(self.norm(h)).view(len(h), NUM_JOINTS, 3)  # (B, J, 3)
        base = torch.zeros_like(delta).index_copy(
            1, self.prior_index, features[:, -3 * NUM_PRIOR :].view(-1, NUM_PRIOR, 3)
        )
        joints = base + delta  # (B, J, 3)
        return joints - joints[:, PELVIS : PELVIS + 1]  # pelvis at the origin

    @torch.no_grad()
    def predict(self, uv, visibility, prior_xyz):
        """Root-relative joints ``(B, 25, 3)`` metres of people seen as keypoints ``uv``
        ``(B, 24, 2)`` in crop pixels (as :class:`~hmdiff_ros.observation.Observation` holds
        them), ``visibility`` ``(B, 24)`` and the prior's ``prior_xyz`` ``(B, 24, 3)``; one
        person without the batch axis gives ``(25, 3)``. numpy in, numpy out (float32);
        tensors in, tensors out."""
        single = np.ndim(visibility) == 1
        if single:
            uv, visibility, prior_xyz = (a[None] for a in (uv, visibility, prior_xyz))
        tensor = torch.is_tensor(uv)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        joints = self(lifter_inputs(uv, visibility, prior_xyz, self.cfg).to(device))
        self.train(was_training)
        joints = joints[0] if single else joints
        return joints if tensor else joints.cpu().numpy()


def lifter_loss(model: Lifter, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """L1 (metres) between the predicted and the true root-relative joints ``joints_rel``."""
    pred = model(lifter_inputs(batch["uv"], batch["vis"], batch["prior_xyz"], model.cfg))  # (B, J, 3)
    return (pred - batch["joints_rel"].float()).abs().mean()


def save_lifter(folder: "str | Path", model: Lifter, extra: Dict | None = None) -> Path:
    """``model.safetensors`` and ``config.json`` into ``folder`` (made if missing)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(folder / WEIGHTS)
    meta = {"kind": KIND, "model": model.cfg.to_dict(), **(extra or {})}
    (folder / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_lifter(folder: "str | Path | None" = None, map_location: str = "cpu") -> Tuple[Lifter, Dict]:
    """The lifter of checkpoint ``folder`` (default: the shipped one), rebuilt from its
    ``config.json``, in eval mode, and that config. ``FileNotFoundError`` when a file is
    missing, ``ValueError`` when one is unreadable or does not fit the other."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else DEFAULT_LIFTER
    weights, config = folder / WEIGHTS, folder / CONFIG
    if not weights.is_file() or not config.is_file():
        raise FileNotFoundError(
            f"lifter checkpoint '{folder}' not found or incomplete (needs {WEIGHTS} and {CONFIG}); "
            "train one with 'hmdiff train-lifter --out DIR'"
        )
    try:
        meta = json.loads(config.read_text())
        if meta.get("kind") != KIND:
            raise ValueError(f"its kind is {meta.get('kind')!r}, not {KIND!r}")
        model = Lifter(LifterConfig.from_dict(meta["model"]))
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"'{folder}' is not a lifter checkpoint: {CONFIG} is truncated, corrupt or not a lifter's "
            f"({type(exc).__name__}: {one_line(exc)})"
        ) from None
    try:
        model.load_state_dict(load_file(str(weights), device=map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"lifter checkpoint '{folder}': {WEIGHTS} is truncated, corrupt or does not fit {CONFIG} ({one_line(exc)})"
        ) from None
    return model.to(map_location).eval(), meta


@torch.no_grad()
def evaluate_lifter(model: Lifter, batches: Iterable[Dict]) -> Dict:
    """Metrics (mm) over engine-style batches (``uv``, ``vis``, ``prior_xyz``, ``joints_rel``):
    ``mpjpe_mm``/``pa_mpjpe_mm`` on our 25 joints, and on the prior's 24
    (``mpjpe_mm_on_prior_joints``, ``pa_mpjpe_mm_on_prior_joints``, aligned as
    :func:`~hmdiff_ros.model.evaluate.evaluate` aligns HMDiff's), root-relative, camera frame."""
    q = list(PRIOR_JOINT_INDICES)
    errs: Dict[str, list] = {
        k: [] for k in ("mpjpe_mm", "pa_mpjpe_mm", "mpjpe_mm_on_prior_joints", "pa_mpjpe_mm_on_prior_joints")
    }
    for b in batches:
        pred = np.asarray(
            model.predict(np.asarray(b["uv"]), np.asarray(b["vis"]), np.asarray(b["prior_xyz"])), np.float64
        )
        gt = np.asarray(b["joints_rel"], np.float64)
        errs["mpjpe_mm"].append(mpjpe_mm(pred, gt))
        errs["pa_mpjpe_mm"].append(pa_mpjpe_mm(pred, gt))
        errs["mpjpe_mm_on_prior_joints"].append(mpjpe_mm(pred[:, q], gt[:, q]))
        errs["pa_mpjpe_mm_on_prior_joints"].append(pa_mpjpe_mm(pred[:, q], gt[:, q]))
    out = {k: round(float(np.concatenate(v).mean()), 2) for k, v in errs.items()}
    out["num_samples"] = int(sum(len(v) for v in errs["mpjpe_mm"]))
    return out


# ---------------------------------------------------------------------------------------------
# training: ``hmdiff train-lifter``

DEFAULT_SAMPLES = 10_093 * 128  # the shipped HMDiff's budget: 10,093 steps of 128 (docs/model_card.md)
_CHECKS = {  # field: (test, what is expected)
    "out": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty folder path"),
    "samples": (lambda v: v >= 1, ">= 1"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: 0 < v < 1, "between 0 and 1, exclusive"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "grad_clip": (lambda v: v > 0, "> 0"),
    "workers": (lambda v: 0 <= v <= 64, "in 0..64"),
    "seed": (lambda v: v >= 0, ">= 0"),
    "val_every": (lambda v: v >= 1, ">= 1"),
    "val_samples": (lambda v: v >= 1, ">= 1"),
    "max_minutes": (lambda v: v >= 0, ">= 0, 0 for no limit"),
    "device": (lambda v: v in ("auto", "cpu", "cuda"), "one of 'auto', 'cpu', 'cuda'"),
    "prior": (lambda v: v in ("hand", "fitted"), "one of 'hand', 'fitted'"),
    "families": (lambda v: v in ("default", "robot"), "one of 'default', 'robot'"),
}


@dataclass(frozen=True)
class LifterTrainConfig:
    out: str = "runs/lifter"  # checkpoint, metrics.jsonl; resumed from when it holds a lifter run
    samples: int = DEFAULT_SAMPLES  # training samples; steps = ceil(samples / batch_size)
    batch_size: int = 128  # the shipped HMDiff's: with the same seed, the very batches it trained on
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 300
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    workers: int = 1  # data-loader processes
    seed: int = 0  # seed of the training stream (that of 'hmdiff train')
    val_every: int = 1000  # steps between validations (and checkpoints)
    val_samples: int = 256  # the fixed validation batches of 'hmdiff train'
    max_minutes: float = 0.0  # stop (and checkpoint) after this wall time, cosine decay by the clock; 0: no limit
    device: str = "auto"  # "auto", "cpu" or "cuda"
    force: bool = False  # start afresh in an ``out`` that holds anything but a resumable lifter run
    prior: str = "hand"  # the prior simulator of the stream, as 'hmdiff train --prior'
    families: str = "default"  # the pose-family weights, as 'hmdiff train --families'
    model: LifterConfig = field(default_factory=LifterConfig)

    def __post_init__(self) -> None:
        if isinstance(self.out, Path):
            object.__setattr__(self, "out", str(self.out))
        for name, (test, expected) in _CHECKS.items():
            value = getattr(self, name)
            ok = (
                isinstance(value, str)
                if name in ("out", "device", "prior", "families")
                else isinstance(value, (int, float))
            )
            if not ok or isinstance(value, bool) or not test(value):
                raise ValueError(f"{name} must be {expected}, got {value!r}")
        if not isinstance(self.model, LifterConfig):
            raise ValueError(f"model must be a LifterConfig, got {type(self.model).__name__}")

    @property
    def steps(self) -> int:
        return -(-self.samples // self.batch_size)


def train_lifter(cfg: LifterTrainConfig, progress: bool = True) -> Dict:
    """Train the lifter (or resume the run in ``cfg.out``); returns the last record of
    ``metrics.jsonl`` with ``out``. Nothing is written before the first checkpoint; Ctrl-C
    saves the state at the step reached (the same command resumes it) and is raised again."""
    from tqdm import tqdm

    from hmdiff_ros.data.engine import SyntheticEngine, stream_config

    torch.manual_seed(cfg.seed)
    device = training_device(cfg.device)
    out = Path(cfg.out)
    resume = _resumable(out, cfg)
    model = Lifter(cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = (
        load_resume_state(out, model, opt, device, "use --force to train afresh there or choose another --out")
        if resume
        else 0
    )
    ema = load_lifter(out, map_location=str(device))[0] if start else Lifter(cfg.model).to(device)
    if not start:
        ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)

    data_cfg = stream_config(cfg.prior, cfg.families, cfg.model.crop_size)  # as 'hmdiff train' makes it
    val = validation_batches(SyntheticEngine(data_cfg), cfg.val_samples, proxy=False)
    loader = training_loader(data_cfg, cfg.batch_size, seed=cfg.seed, workers=cfg.workers, skip=start)
    t0 = time.time()

    def lr_at(step: int) -> float:
        return learning_rate(cfg, step, (time.time() - t0) / 60)

    folder = RunFolder(out, resume)

    def save(step: int, record: Dict) -> None:
        if "val" in record:
            folder.add_metrics(record)
        _save_state(folder.ready(), model, ema, opt, step, cfg, record)

    bar = tqdm(total=cfg.steps, initial=start, desc="train-lifter", unit="step", disable=not progress)
    step = saved = start
    window: list = []  # training losses since the last record
    record: Dict = {}

    def save_interrupted() -> None:
        bar.close()
        if step > saved:
            save(step, {"step": step, "minutes": round((time.time() - t0) / 60, 2), "interrupted": True})
            log.warning(
                "interrupted at step %d of %d: state saved to %s; run the same command to resume", step, cfg.steps, out
            )

    try:
        with interruptible(loader, save_interrupted) as batches:
            for batch in batches:
                if step >= cfg.steps:
                    break
                batch = {k: batch[k].to(device) for k in ("uv", "vis", "prior_xyz", "joints_rel")}
                model.train()
                loss = lifter_loss(model, batch)
                optimiser_step(
                    loss, model, ema, opt, step, lr=lr_at(step), grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay
                )
                step += 1
                window.append(loss.item())
                bar.update(1)
                bar.set_postfix(l1_mm=f"{1000 * loss.item():.1f}", refresh=False)
                timeout = cfg.max_minutes > 0 and (time.time() - t0) / 60 > cfg.max_minutes
                if step % cfg.val_every == 0 or step == cfg.steps or timeout:
                    minutes = (time.time() - t0) / 60
                    record = {
                        "step": step,
                        "samples": step * cfg.batch_size,
                        "minutes": round(minutes, 2),
                        "samples_per_s": round((step - start) * cfg.batch_size / max(minutes * 60, 1e-9), 1),
                        "loss_l1_m": round(float(np.mean(window)), 5),
                        "lr": round(lr_at(step - 1), 7),
                        "val": evaluate_lifter(ema, val),
                    }
                    window = []
                    save(step, record)
                    saved = step
                    tqdm.write(json.dumps(record), file=sys.stderr)
                if timeout:
                    break
    finally:
        bar.close()
        folder.close()
    return {"out": str(out), **record}


def _resumable(out: Path, cfg: LifterTrainConfig) -> bool:
    """Whether ``out`` holds a lifter run of this configuration to resume: a run of another
    lifter, batch size or seed, or one already at ``cfg.steps``, is refused (unless
    ``cfg.force``)."""

    def differs(meta: Dict) -> "str | None":
        same = meta["kind"] == KIND and meta["model"] == cfg.model.to_dict()
        same = same and all(meta["train"][k] == getattr(cfg, k) for k in ("batch_size", "seed"))
        return None if same else "another lifter, batch size or seed"

    return resumable(
        out,
        force=cfg.force,
        run="lifter run",
        differs=differs,
        steps=cfg.steps,
        budget=f"{cfg.steps} ({cfg.samples} samples)",
        option="--samples",
    )


def _save_state(folder: Path, model: Lifter, ema: Lifter, opt, step: int, cfg: LifterTrainConfig, record: Dict) -> None:
    """EMA weights as the checkpoint; raw weights and optimiser moments beside it, for resume."""
    train = {**asdict(cfg), "model": cfg.model.to_dict()}
    save_lifter(folder, ema, {"train": train, "step": step, "samples": step * cfg.batch_size, "metrics": record})
    save_resume_state(folder, model, opt)
