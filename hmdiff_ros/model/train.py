"""``hmdiff train``: train HMDiff on the streaming synthetic data engine.

Losses: the diffusion target (ε, x_0 or v, per the scheduler) as MSE; plus, on x̂_0, an L1
on vertices and joints (metres) and an L1 on coarse-mesh edge lengths. AdamW with linear
warm-up and cosine decay, gradient clipping, an EMA of the weights (what is saved and
evaluated), bf16 autocast on CUDA, periodic validation on a fixed synthetic batch,
checkpoints (safetensors + JSON) and resume from the output folder. Under ``torchrun``
(``WORLD_SIZE`` > 1) each process trains on its own batches of the stream with
``DistributedDataParallel``; process 0 validates and writes the run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import numbers
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path, PurePath
from typing import Dict, NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from hmdiff_ros import defaults
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.data.engine import (
    FAMILY_SETS,
    SyntheticDataset,
    SyntheticEngine,
    batch_rng,
    quiet_worker,
    stream_config,
)
from hmdiff_ros.data.observe import PRIOR_KINDS
from hmdiff_ros.data.prior_study import TRAINING_KEYS, study_training_set
from hmdiff_ros.errors import interrupt_signal, one_line
from hmdiff_ros.files import existing_ancestor, missing_folders, remove_empty
from hmdiff_ros.model.checkpoint import CONFIG, save_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.evaluate import evaluate_batches
from hmdiff_ros.model.hmdiff import HMDiff, HMDiffConfig
from hmdiff_ros.observation import make_proxy

log = logging.getLogger(__name__)
STATE = "train_state.safetensors"  # raw weights and optimiser moments, for resume
VAL_SEED = 10_000  # validation batches never overlap training streams (seed = TrainConfig.seed)
# data-loader processes: a fixed bound, so that a config valid on one machine is valid on all;
# beyond a few per core they only add memory and start-up time (each holds its own data engine)
MAX_WORKERS = 64


# the checks of every ``TrainConfig`` field but ``model``: (kind, test, what is expected)
_INT, _FLOAT, _STR, _BOOL = "an integer", "a finite number", "a string", "true or false"
FIELD_CHECKS = {
    "out": (_STR, lambda v: v.strip() != "", "a non-empty folder path"),
    "steps": (_INT, lambda v: v >= 1, ">= 1"),
    "batch_size": (_INT, lambda v: v >= 1, ">= 1"),
    "lr": (_FLOAT, lambda v: 0 < v < 1, "between 0 and 1, exclusive"),
    "weight_decay": (_FLOAT, lambda v: v >= 0, ">= 0"),
    "warmup_steps": (_INT, lambda v: v >= 0, ">= 0"),
    "ema_decay": (_FLOAT, lambda v: 0 <= v < 1, "in [0, 1)"),
    "grad_clip": (_FLOAT, lambda v: v > 0, "> 0"),
    "loss_x0": (_FLOAT, lambda v: v >= 0, ">= 0"),
    "loss_edge": (_FLOAT, lambda v: v >= 0, ">= 0"),
    "focus_steps": (_FLOAT, lambda v: 0 <= v <= 1, "in [0, 1]"),
    "workers": (_INT, lambda v: v >= 0, ">= 0"),
    "seed": (_INT, lambda v: v >= 0, ">= 0"),
    "val_every": (_INT, lambda v: v >= 1, ">= 1"),
    "val_samples": (_INT, lambda v: v >= 1, ">= 1"),
    "max_minutes": (_FLOAT, lambda v: v >= 0, ">= 0, 0 for no limit"),
    "device": (_STR, lambda v: v in ("auto", "cpu", "cuda"), "one of 'auto', 'cpu', 'cuda'"),
    "init": (_STR, lambda v: True, "a checkpoint folder path, or empty"),
    "prior": (_STR, lambda v: v in PRIOR_KINDS, f"one of {', '.join(map(repr, PRIOR_KINDS))}"),
    "families": (_STR, lambda v: v in FAMILY_SETS, f"one of {', '.join(map(repr, FAMILY_SETS))}"),
    "force": (_BOOL, lambda v: True, "true or false"),
    "study": (_STR, lambda v: True, "a prior-study folder of training bodies, or empty"),
    "study_fraction": (_FLOAT, lambda v: 0 <= v < 1, "in [0, 1)"),
}
# PyYAML reads YAML 1.1, where an exponent without a dot (``lr: 1e-3``) is a string
_YAML_EXPONENT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _is_kind(value, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if kind == _INT:
        return isinstance(value, numbers.Integral)
    return math.isfinite(float(value))


def _check_value(name: str, value, kind: str, test=lambda v: True, expected: str = ""):
    """``value`` of key ``name`` as ``kind`` (ints as ``int``, numbers as ``float``), or a
    ``ValueError`` naming the key, the value and what is expected."""
    if not _is_kind(value, kind):
        what = expected if kind in (_STR, _BOOL) and expected else f"{kind} {expected}".strip()
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if kind == _INT:
        value = int(value)
    elif kind == _FLOAT:
        value = float(value)
    if not test(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def _kind_of(default) -> str:
    if isinstance(default, bool):
        return _BOOL
    if isinstance(default, int):
        return _INT
    return _FLOAT if isinstance(default, float) else _STR


def _from_yaml_number(value, kind: str):
    if kind == _FLOAT and isinstance(value, str) and _YAML_EXPONENT.match(value.strip()):
        return float(value)
    return value


def _model_range(key: str, kind: str) -> tuple:
    """(test, expected) of a model config number: counts and sizes >= 1 (blocks >= 0), other
    numbers > 0; the configs' own checks then apply."""
    if kind == _INT:
        return (lambda v: v >= 0, ">= 0") if key.endswith("_blocks") else (lambda v: v >= 1, ">= 1")
    if kind == _FLOAT:
        return lambda v: v > 0, "> 0"
    return lambda v: True, ""


def _model_config(d) -> HMDiffConfig:
    """``HMDiffConfig`` from the ``model`` mapping of a training config (keys it does not give
    keep the defaults); errors name the key (``model.denoiser.width``) and the value."""
    if not isinstance(d, dict):
        raise ValueError(f"model must be a mapping of model config keys to values, got {d!r}")
    base = HMDiffConfig()
    sections = {f.name: f for f in fields(HMDiffConfig)}
    unknown = sorted(str(k) for k in d if k not in sections)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; known: {sorted(sections)}")
    built = {}
    for name in sections:
        current = getattr(base, name)
        if not is_dataclass(current):
            kind = _kind_of(current)
            built[name] = _check_value(
                f"model.{name}", _from_yaml_number(d.get(name, current), kind), kind, *_model_range(name, kind)
            )
            continue
        given = d.get(name, {})
        if not isinstance(given, dict):
            raise ValueError(f"model.{name} must be a mapping of keys to values, got {given!r}")
        known = {f.name: getattr(current, f.name) for f in fields(current)}
        unknown = sorted(str(k) for k in given if k not in known)
        if unknown:
            raise ValueError(f"unknown model.{name} keys {unknown}; known: {sorted(known)}")
        values = {}
        for key, default in known.items():
            kind = _kind_of(default)
            value = _from_yaml_number(given.get(key, default), kind)
            values[key] = _check_value(f"model.{name}.{key}", value, kind, *_model_range(f"{name}.{key}", kind))
        try:
            built[name] = type(current)(**values)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise ValueError(f"model.{name}: {exc}") from None
    return HMDiffConfig(**built)


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/hmdiff"  # checkpoints, metrics.jsonl; resumed from when it holds a run
    steps: int = 20000
    batch_size: int = 64  # per process: under torchrun the effective batch is batch_size * world_size
    lr: float = 1e-3  # not scaled with the number of processes
    weight_decay: float = 0.01
    warmup_steps: int = 300
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    loss_x0: float = 1.0  # weight of the L1 on x̂_0 (metres)
    loss_edge: float = 1.0  # weight of the L1 on coarse edge lengths (metres)
    # fraction of each batch trained at the steps a few-step sampler visits (FOCUS_STEPS' timesteps)
    # instead of a uniform step: the capacity goes where sampling reads the network
    focus_steps: float = 0.0
    workers: int = 1  # data-loader processes, at most MAX_WORKERS
    seed: int = 0
    val_every: int = 1000
    val_samples: int = 256
    max_minutes: float = 0.0  # stop (and checkpoint) after this wall time, cosine decay by the clock; 0: no limit
    device: str = "auto"  # "auto", "cpu" or "cuda"
    init: str = ""  # start from this checkpoint's weights (fine-tuning); ignored when resuming
    prior: str = "hand"  # the prior simulator of the stream: "hand" or "fitted" (to MediaPipe, the prior study)
    families: str = "default"  # the pose-family weights: "default" or "robot" (ROBOT_FAMILY_WEIGHTS)
    force: bool = False  # start afresh in an ``out`` that holds anything but a resumable run of this model
    # MediaPipe's own outputs on renders of training bodies (``hmdiff data prior-study --bodies
    # train``): this share of each batch is drawn from the study's detected samples in place of
    # the stream's, so that the model learns from the real prior's errors as well as simulated ones
    study: str = ""
    study_fraction: float = 0.0
    model: HMDiffConfig = field(default_factory=HMDiffConfig)

    def __post_init__(self) -> None:
        """Every field's type and range; errors name the key and the value. ``out`` and
        ``init`` may also be paths; ints given for float fields become floats."""
        for name, (kind, test, expected) in FIELD_CHECKS.items():
            value = getattr(self, name)
            if name in ("out", "init", "study") and isinstance(value, PurePath):
                value = str(value)
            object.__setattr__(self, name, _check_value(name, value, kind, test, expected))
        if self.workers > MAX_WORKERS:
            raise ValueError(
                f"workers must be at most {MAX_WORKERS} (data-loader processes; more only add memory and "
                f"start-up time), got {self.workers}"
            )
        if self.study_fraction > 0 and not self.study.strip():
            raise ValueError(
                f"study_fraction {self.study_fraction} needs study: a prior study of training bodies "
                "(hmdiff data prior-study --bodies train)"
            )
        if not isinstance(self.model, HMDiffConfig):
            raise ValueError(f"model must be an HMDiffConfig, got {type(self.model).__name__}")
        if self.model.encoder.width != self.model.denoiser.width:  # the image tokens feed the denoiser
            raise ValueError(
                f"model.encoder.width ({self.model.encoder.width}) must equal model.denoiser.width "
                f"({self.model.denoiser.width})"
            )

    @classmethod
    def from_dict(cls, d: Dict) -> "TrainConfig":
        """From a mapping of field names to values (as in a YAML file); ``model`` overrides the
        default ``HMDiffConfig`` key by key."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a mapping of keys to values, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        d = {k: _from_yaml_number(v, FIELD_CHECKS[k][0]) if k in FIELD_CHECKS else v for k, v in d.items()}
        if "model" in d:
            d["model"] = _model_config(d["model"])
        return cls(**d)


def _yaml_error(exc) -> str:
    """A YAML parse error in one line: where, what, and while doing what."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return one_line(exc)
    context = getattr(exc, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def _unique_key_loader():
    """A YAML ``SafeLoader`` that refuses a key given twice in one mapping (PyYAML would keep the
    last silently), naming the key and both lines. Keys merged in with ``<<`` may be overridden."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first: Dict = {}
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        line = first.get(key)
                    except TypeError:  # an unhashable key: the constructor's own error names it
                        continue
                    if line is not None:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r} (first given on line {line})", key_node.start_mark
                        )
                    first[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_train_config(path: "str | Path | None", overrides: Dict | None = None) -> TrainConfig:
    """The config of YAML file ``path`` (if any) with ``overrides`` (command-line options) on
    top. Errors are ``ValueError``/``FileNotFoundError`` naming the file and the key; those of
    the file's own values are prefixed with the file's name."""
    d: Dict = {}
    if path is not None:
        import yaml

        path = Path(path)
        if path.is_dir():
            raise ValueError(f"training config '{path}' is a folder; expected a YAML file")
        if not path.is_file():
            raise FileNotFoundError(f"training config '{path}' not found")
        try:
            d = yaml.load(path.read_text(), Loader=_unique_key_loader()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"training config '{path}' is not valid YAML: {_yaml_error(exc)}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"training config '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not isinstance(d, dict):
            raise ValueError(f"training config '{path}' must be a mapping of keys to values, got {type(d).__name__}")
        try:
            TrainConfig.from_dict(d)  # the file's own values, so that their errors name the file
        except ValueError as exc:
            raise ValueError(f"training config '{path}': {exc}") from None
    return TrainConfig.from_dict({**d, **(overrides or {})})


def points_of(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Ground-truth points ``(B, P, 3)``: coarse vertices then joints, root-relative, metres."""
    return torch.cat([batch["coarse_rel"], batch["joints_rel"]], dim=1).float()


def mix_study(batch: Dict[str, torch.Tensor], pool: Dict[str, np.ndarray], count: int, rng) -> Dict[str, torch.Tensor]:
    """``batch`` with its last ``count`` samples replaced by samples drawn (with ``rng``) from
    ``pool`` (:func:`~hmdiff_ros.data.prior_study.study_training_set`), for the keys training
    reads (:data:`~hmdiff_ros.data.prior_study.TRAINING_KEYS`); other keys are dropped. The
    pool must hold each key in the batch's own type (a uint8 mask is 0..255, a float one 0..1:
    a cast between them would change what the model sees), else ``ValueError``."""
    size = len(batch["uv"])
    count = min(count, size)
    pick = rng.integers(0, len(pool["uv"]), count)
    out = {}
    for k in TRAINING_KEYS:
        ours, theirs = batch[k], torch.as_tensor(pool[k][pick])
        if theirs.dtype != ours.dtype:
            raise ValueError(f"study sample '{k}' is {theirs.dtype}, the stream's is {ours.dtype}: expected the same")
        out[k] = torch.cat([ours[: size - count], theirs.to(ours.device)])
    return out


FOCUS_STEPS = (1, 2, 3, 4)  # the DDIM step counts whose timesteps ``focus_steps`` trains at


def focus_timesteps(sched) -> torch.Tensor:
    """Every timestep the DDIM sampler visits at :data:`FOCUS_STEPS` steps (trailing spacing)."""
    from hmdiff_ros.model.scheduler import DDIMScheduler

    probe = DDIMScheduler(sched.config)
    visited = set()
    for k in FOCUS_STEPS:
        probe.set_timesteps(k)
        visited.update(probe.timesteps.tolist())
    return torch.tensor(sorted(visited))


def losses(model: HMDiff, batch: Dict[str, torch.Tensor], proxy: torch.Tensor, cfg: TrainConfig, edges: torch.Tensor):
    sched = model.scheduler
    x0 = points_of(batch) / model.cfg.data_scale  # (B, P, 3) normalised
    noise = torch.randn_like(x0)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), device=x0.device)
    if cfg.focus_steps > 0:  # a share of the batch at the few-step samplers' own steps
        visited = focus_timesteps(sched).to(x0.device)
        pick = visited[torch.randint(0, len(visited), (len(x0),), device=x0.device)]
        t = torch.where(torch.rand(len(x0), device=x0.device) < cfg.focus_steps, pick, t)
    xt = sched.add_noise(x0, noise, t)
    prior_xyz, prior_vis = batch["prior_xyz"].float(), batch["vis"].float()
    out = model(xt, t, model.encode(proxy, prior_xyz, prior_vis), model.prior_offset(prior_xyz, prior_vis))
    pred = sched.to_x0_eps(out, t, xt)[0] * model.cfg.data_scale  # x̂_0, metres
    gt = x0 * model.cfg.data_scale
    terms = {"diffusion": torch.nn.functional.mse_loss(out, sched.target(x0, noise, t))}
    terms["x0_l1"] = (pred - gt).abs().mean()
    vp, vg = pred[:, : model.num_coarse], gt[:, : model.num_coarse]
    length = lambda v: (v[:, edges[:, 0]] - v[:, edges[:, 1]]).norm(dim=-1)  # noqa: E731
    terms["edge_l1"] = (length(vp) - length(vg)).abs().mean()
    total = terms["diffusion"] + cfg.loss_x0 * terms["x0_l1"] + cfg.loss_edge * terms["edge_l1"]
    return total, terms


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            why = "built without CUDA" if torch.version.cuda is None else "no GPU found"
            raise ValueError(f"--device cuda: CUDA is not available here (torch {torch.__version__}, {why})")
        return torch.device("cuda")
    return torch.device("cpu")


class Ranks(NamedTuple):
    """The processes of a run: this one's ``rank`` and ``local_rank`` (its GPU on this machine)
    of ``world_size`` in all."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def launch_ranks(environ=None) -> Ranks:
    """The ``Ranks`` that ``torchrun`` gives this process in ``RANK``, ``LOCAL_RANK`` and
    ``WORLD_SIZE`` (``environ``: default ``os.environ``); one process when they are unset."""
    env = os.environ if environ is None else environ
    values = []
    for name, default in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        text = str(env.get(name, "")).strip()
        try:
            values.append(int(text) if text else default)
        except ValueError:
            raise ValueError(f"{name} must be an integer (torchrun sets it), got {text!r}") from None
    ranks = Ranks(*values)
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size or ranks.local_rank < 0:
        raise ValueError(
            f"RANK {ranks.rank}, LOCAL_RANK {ranks.local_rank}, WORLD_SIZE {ranks.world_size}: "
            "expected WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
        )
    return ranks if ranks.world_size > 1 else Ranks()


class _Objective(torch.nn.Module):
    """The training loss as a module, so that ``DistributedDataParallel`` sees every use of the
    weights (the encoder too) in one ``forward``."""

    def __init__(self, model: HMDiff, cfg: TrainConfig, edges: torch.Tensor) -> None:
        super().__init__()
        self.model, self.cfg, self.edges = model, cfg, edges

    def forward(self, batch: Dict[str, torch.Tensor], proxy: torch.Tensor):
        return losses(self.model, batch, proxy, self.cfg, self.edges)


def _save_state(
    folder: Path,
    model: HMDiff,
    ema: HMDiff,
    opt: torch.optim.Optimizer,
    step: int,
    cfg: TrainConfig,
    metrics: Dict,
    world_size: int = 1,
    init_samples: int = 0,
) -> None:
    """EMA weights as the checkpoint; raw weights + optimiser moments beside it, for resume.
    ``world_size``: the processes that trained it (``cfg.batch_size`` is per process);
    ``init_samples``: the training samples of the ``--init`` checkpoint, counted in ``samples``."""
    extra = {
        "train": _jsonable(asdict(cfg)),
        "step": step,
        "metrics": metrics,
        "world_size": world_size,
        "samples": init_samples + step * cfg.batch_size * world_size,
        "init_samples": init_samples,
    }
    save_checkpoint(folder, ema, extra)
    save_resume_state(folder, model, opt)


def save_resume_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """The raw weights and optimiser moments a run resumes from (``STATE`` in ``folder``),
    replaced in one step: never a truncated state beside the checkpoint."""
    from safetensors.torch import save_file

    state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, s in enumerate(opt.state_dict()["state"].values()):
        for k, v in s.items():
            if torch.is_tensor(v):
                state[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
    tmp = folder / (STATE + ".tmp")
    try:
        save_file(state, str(tmp))
        tmp.replace(folder / STATE)
    finally:
        tmp.unlink(missing_ok=True)


def _resumable(out: Path, cfg: TrainConfig) -> bool:
    """Whether ``out`` holds a run of this model to resume. Anything else there (a finished
    checkpoint, another model's run, unrelated files) is refused unless ``cfg.force``: a run
    never silently replaces trained weights."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; expected a folder for the run")
    ancestor = existing_ancestor(out.parent)
    if ancestor.exists() and not ancestor.is_dir():  # found now, not when the first checkpoint is written
        raise ValueError(f"--out '{out}': '{ancestor}' is a file; expected a folder for the run")
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


def load_init(cfg: TrainConfig, model: HMDiff) -> int:
    """The weights of the ``--init`` checkpoint into ``model``; errors name ``--init``.
    Returns the training samples behind them (0 when its config does not say)."""
    from hmdiff_ros.model.checkpoint import CONFIG as CONFIG_FILE
    from hmdiff_ros.model.checkpoint import WEIGHTS, load_checkpoint, trained_samples

    try:
        base, meta = load_checkpoint(cfg.init)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--init checkpoint '{cfg.init}' not found or incomplete (needs {WEIGHTS} and {CONFIG_FILE})"
        ) from None
    except ValueError as exc:
        raise ValueError(f"--init {exc}") from None
    # a model that adds prior tokens may start from one without them: its prior encoder starts
    # fresh; one that adds the keypoints to its prior tokens, or the prior residual, starts as the
    # checkpoint (the new weights zero)
    grown = {k: getattr(model.cfg, k) for k in ("prior_tokens", "prior_keypoints", "prior_residual")}
    if {**base.cfg.to_dict(), **grown} != model.cfg.to_dict() or any(
        getattr(base.cfg, k) and not v for k, v in grown.items()
    ):
        raise ValueError(f"--init checkpoint '{cfg.init}' has another model configuration than this run")
    state = base.state_dict()
    first = "prior_encoder.proj.0.weight"  # (D, inputs): the keypoints are its last two columns
    if first in state and state[first].shape != model.state_dict()[first].shape:
        state[first] = torch.cat([state[first], state[first].new_zeros(state[first].shape[0], 2)], dim=1)
    missing, _ = model.load_state_dict(state, strict=False)
    if any(not k.startswith(("prior_encoder.", "prior_base.")) for k in missing):  # cannot happen with equal configs
        raise ValueError(f"--init checkpoint '{cfg.init}' lacks weights of this model: {missing[:3]}")
    log.info("starting from the weights of %s (step %s)", cfg.init, meta.get("step"))
    return trained_samples(meta) or 0


def load_resume_state(
    out: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    hint: str = "use --force to train afresh there (its checkpoint is replaced) or choose another --out",
) -> int:
    """Raw weights and optimiser moments of the run in ``out`` (:func:`save_resume_state`);
    returns its step. ``hint``: what the error of an unreadable state tells the user to do."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        step = int(json.loads((out / CONFIG).read_text())["step"])
        state = load_file(str(out / STATE))
        model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        opt_state = opt.state_dict()
        for i, p in enumerate(opt_state["param_groups"][0]["params"]):
            keys = [k for k in state if k.startswith(f"opt.{i}.")]
            if keys:
                opt_state["state"][p] = {k.split(".", 2)[2]: state[k].to(device) for k in keys}
        opt.load_state_dict(opt_state)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(
            f"--out '{out}': its training state {STATE} is truncated, corrupt or of another run "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); {hint}"
        ) from None
    return step


_WORKER_KILLED = re.compile(r"DataLoader worker \(pid[^)]*\) is killed by signal: ([^.]+)")


def worker_signal(exc: BaseException, workers=()) -> "int | None":
    """The signal that killed a data-loader worker when ``exc`` is the loader's report of that
    (a process-group SIGTERM, as systemd, docker or Slurm stop jobs, reaches the workers too);
    ``workers``: the loader's processes, whose exit codes tell when the report does not. None
    for any other error (a worker that failed on its own is a bug, not an interruption)."""
    if not isinstance(exc, RuntimeError) or "DataLoader worker" not in str(exc):
        return None
    found = _WORKER_KILLED.search(str(exc))
    if found:
        by_text = {signal.strsignal(s): s for s in signal.Signals if signal.strsignal(s)}
        return by_text.get(found.group(1).strip(), signal.SIGTERM)
    if "exited unexpectedly" in str(exc) and "exit code" not in str(exc):
        for w in workers:  # a process ended by a signal has minus it as exit code
            code = getattr(w, "exitcode", None)
            if isinstance(code, int) and code < 0:
                with contextlib.suppress(ValueError):
                    return signal.Signals(-code)
    return None


class _Interrupts:
    """The signals of a training run: the first interruption -- Ctrl-C, SIGTERM, or the data
    loader's report (on SIGCHLD) of a worker killed by a signal -- is raised as
    ``KeyboardInterrupt``; after it, further ones are ignored, so that the run's state is
    saved in full and the workers are stopped without more errors. Only handlers that are
    Python functions are wrapped (a SIGTERM left to its default still ends the process);
    :meth:`restore` puts them back. Off the main thread nothing is installed."""

    def __init__(self) -> None:
        self.signum: "int | None" = None  # the signal of the interruption, once there is one
        self._previous: Dict = {}

    def install(self, signum: "int | None") -> None:
        try:
            previous = signal.getsignal(signum) if signum is not None else None
        except ValueError:
            return
        if not callable(previous) or signum in self._previous:
            return

        def handler(num, frame):
            if self.signum is not None:
                return  # already stopping: a second signal, or the workers ending, must not cut the save short
            try:
                previous(num, frame)
            except BaseException as exc:
                caught = self.caught(exc)
                if caught is None or isinstance(exc, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt(caught) from None

        try:
            signal.signal(signum, handler)
        except ValueError:  # not the main thread
            return
        self._previous[signum] = previous

    def caught(self, exc: BaseException, workers=()) -> "int | None":
        """The signal ``exc`` stands for (Ctrl-C: SIGINT), recorded as the interruption; None
        when ``exc`` is no interruption."""
        if isinstance(exc, KeyboardInterrupt):
            signum = interrupt_signal(exc)
        else:
            signum = worker_signal(exc, workers)
        if self.signum is None:
            self.signum = signum
        return signum

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def _stop_workers(batches) -> None:
    """End the data loader's worker processes now, as the loader does when its iterator is
    collected, while ``_Interrupts`` still holds the signals: the loader reports workers that
    end by a signal as errors, which would otherwise be printed then."""
    stop = getattr(batches, "_shutdown_workers", None)
    if stop is not None:
        stop()


def train(cfg: TrainConfig, progress: bool = True) -> Dict:
    """Train (or resume the run in ``cfg.out``); returns the last validation metrics.

    Everything is checked and loaded before ``cfg.out`` is created or touched: a run that
    fails to start leaves no folder behind. Ctrl-C (``KeyboardInterrupt``) after at least one
    new step saves the training state at that step, so that the same command resumes it, and
    is raised again. So does a data-loader worker killed by a signal (a process-group SIGTERM,
    as systemd, docker or Slurm stop jobs), raised as ``KeyboardInterrupt(signal)``; a second
    signal while the state is saved is ignored.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on its own batches of the
    stream (``cfg.batch_size`` each; the learning rate is not scaled) with
    ``DistributedDataParallel`` (NCCL on ``cuda:LOCAL_RANK``, Gloo on the CPU); process 0
    validates, writes the run and, when interrupted, saves it; every process returns its
    metrics."""
    ranks = launch_ranks()
    if ranks.world_size == 1:
        return _train(cfg, progress, ranks, _device(cfg))
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE is {ranks.world_size}, but this torch is built without torch.distributed")
    device = _device(cfg)
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {ranks.local_rank}: this machine has {torch.cuda.device_count()} GPUs; "
                "start at most that many processes per machine"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world_size)
    try:
        metrics = [_train(cfg, progress, ranks, device)]
        dist.broadcast_object_list(metrics, src=0)  # process 0's: the others validate nothing
        return metrics[0]
    finally:
        dist.destroy_process_group()


def _train(cfg: TrainConfig, progress: bool, ranks: Ranks, device: torch.device) -> Dict:
    """:func:`train` in this process of ``ranks``, on ``device`` (its process group, if
    several, started)."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    several, lead = ranks.world_size > 1, ranks.rank == 0
    out = Path(cfg.out)
    resume = _resumable(out, cfg)
    topology = Topology.load()
    model = HMDiff(cfg.model, topology).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = init_samples = 0
    if resume:
        start = load_resume_state(out, model, opt, device)
        init_samples = int(json.loads((out / CONFIG).read_text()).get("init_samples", 0))
        if cfg.init:
            log.warning("--init %s is ignored: the run in %s is resumed from step %d", cfg.init, out, start)
        log.info("resuming %s from step %d", out, start)
    elif cfg.init:
        init_samples = load_init(cfg, model)
    ema = copy.deepcopy(model).eval()
    if start and (out / "model.safetensors").is_file():
        from safetensors import SafetensorError

        try:
            ema.load_state_dict(load_file(str(out / "model.safetensors"), device=str(device)))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ValueError(
                f"--out '{out}': its model.safetensors is truncated or corrupt ({' '.join(str(exc).split())[:200]}); "
                "use --force to train afresh there or choose another --out"
            ) from None
    for p in ema.parameters():
        p.requires_grad_(False)
    if several:  # the same weights everywhere, but each process its own noise and timesteps
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, ranks.rank]).generate_state(1)[0]))

    data_cfg = stream_config(cfg.prior, cfg.families, cfg.model.encoder.input_size)
    if several and not lead:
        dist.barrier()  # process 0 builds the shape bank (once), the others then load it
    engine = SyntheticEngine(data_cfg)  # builds/loads the shape bank before workers start
    if several and lead:
        dist.barrier()
    val = [
        engine.generate(batch_rng(VAL_SEED, i), min(256, cfg.val_samples - 256 * i))
        for i in range((cfg.val_samples + 255) // 256)
        if lead
    ]
    pool, study_count = None, round(cfg.study_fraction * cfg.batch_size)
    if study_count > 0:
        pool = study_training_set(cfg.study, cfg.model.encoder.input_size)
        if lead:
            log.info(
                "%d of each batch of %d from the prior study %s (%d people MediaPipe detected)",
                study_count,
                cfg.batch_size,
                cfg.study,
                len(pool["uv"]),
            )
    stream = SyntheticDataset(data_cfg, cfg.batch_size, seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size)
    stream.skip = start  # steps already taken
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=cfg.workers, worker_init_fn=quiet_worker if cfg.workers else None
    )
    edges = torch.as_tensor(_edges(topology.coarse_faces), device=device)
    net = _Objective(model, cfg, edges)
    if several:  # averages the gradients in backward; the EMA, validation and saves use ``model``
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    shared_minutes = 0.0  # several processes: process 0's time at the last step, so that all agree

    def minutes() -> float:
        return shared_minutes if several else (time.time() - t0) / 60

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.max_minutes > 0:  # a time budget decays the rate by the clock when it is the tighter limit
            frac = max(frac, minutes() / cfg.max_minutes)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    metrics_file = out / "metrics.jsonl"
    new_folders = missing_folders(out)
    prepared = False

    def prepare_out() -> None:
        """Create ``out`` on the first write; a fresh run (``force``) drops the earlier state
        and metrics there then, so that none of them mix into it."""
        nonlocal prepared
        if not prepared:
            out.mkdir(parents=True, exist_ok=True)
            if not resume:
                for name in (STATE, "metrics.jsonl"):
                    (out / name).unlink(missing_ok=True)
            prepared = True

    t0, last, seen = time.time(), time.time(), 0
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress or not lead)
    metrics: Dict = {}
    step = saved = start  # saved: the step of the state on disk
    loss = terms = None
    interrupts, batches = _Interrupts(), None
    interrupts.install(signal.SIGINT)
    interrupts.install(signal.SIGTERM)
    try:
        batches = iter(loader)
        interrupts.install(getattr(signal, "SIGCHLD", None))  # the loader's handler, set as its workers start
        for batch in batches:
            if step >= cfg.steps:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if pool is not None:  # the draw depends on the step only, so a resumed run draws the same
                batch = mix_study(batch, pool, study_count, np.random.default_rng([cfg.seed, ranks.rank, step]))
            proxy = make_proxy(batch["uv"], batch["vis"], batch["mask"], batch["valid"], data_cfg.proxy)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, terms = net(batch, proxy)
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
            if several and cfg.max_minutes > 0:  # process 0's clock decides, so that all stop together
                shared = torch.tensor([(time.time() - t0) / 60], dtype=torch.float64, device=device)
                dist.broadcast(shared, src=0)
                shared_minutes = float(shared.item())
            timeout = cfg.max_minutes > 0 and minutes() > cfg.max_minutes
            if step % cfg.val_every == 0 or step == cfg.steps or timeout:
                if lead:
                    metrics = {
                        "step": step,
                        "minutes": round((time.time() - t0) / 60, 1),
                        "loss": round(loss.item(), 5),
                        **{k: round(v.item(), 5) for k, v in terms.items()},
                        "val_dat_off": evaluate_batches(ema, val, steps=defaults.STEPS, dat=DATConfig(mode="off")),
                        "val_dat_fast": evaluate_batches(ema, val, steps=defaults.STEPS, dat=DATConfig(mode="fast")),
                    }
                    prepare_out()
                    with metrics_file.open("a") as f:
                        f.write(json.dumps(metrics) + "\n")
                    _save_state(out, model, ema, opt, step, cfg, metrics, ranks.world_size, init_samples)
                    tqdm.write(json.dumps(metrics), file=sys.stderr)  # progress; stdout is the caller's
                saved = step
                if several:
                    dist.barrier()  # the others wait here, not in the next step's gradient all-reduce
            if timeout:
                if lead:
                    log.info("time budget of %.1f min reached at step %d", cfg.max_minutes, step)
                break
    except (KeyboardInterrupt, RuntimeError) as exc:
        signum = interrupts.caught(exc, getattr(batches, "_workers", ()))
        if signum is None:
            raise
        bar.close()
        if step > saved and lead:  # several processes: process 0 saves, the others just stop
            # no validation (it would take long): the state and the last training loss only
            state = {"step": step, "minutes": round((time.time() - t0) / 60, 1), "interrupted": True}
            if loss is not None:
                state["loss"] = round(loss.item(), 5)
            prepare_out()
            _save_state(out, model, ema, opt, step, cfg, state, ranks.world_size, init_samples)
            log.warning(
                "interrupted at step %d of %d: training state saved to %s; run the same command again to resume",
                step,
                cfg.steps,
                out,
            )
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt(signum) from None  # a worker killed by a signal: stopped as by that signal
    finally:
        try:
            _stop_workers(batches)
        finally:
            interrupts.restore()
        bar.close()
        if lead:
            remove_empty(new_folders)  # a run that wrote nothing leaves no empty folders
    return metrics


def _edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)
