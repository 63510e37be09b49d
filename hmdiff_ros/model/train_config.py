"""The training config of ``hmdiff train``: :class:`TrainConfig`, the check of every key
(:data:`FIELD_CHECKS`, the ``model`` mapping key by key) and the YAML file it is read from
(:func:`load_train_config`). Errors name the file, the key and the value."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path, PurePath
from typing import Dict

from hmdiff_ros.data.engine import FAMILY_SETS
from hmdiff_ros.data.observe import PRIOR_KINDS
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.hmdiff import HMDiffConfig

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
