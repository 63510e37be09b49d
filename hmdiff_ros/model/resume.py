"""Where a training run starts and what it leaves: the run in its output folder to resume
(:func:`resumable`; :func:`save_resume_state` and :func:`load_resume_state` for the raw
weights and optimiser moments beside the checkpoint), or the ``--init`` checkpoint to
fine-tune (:func:`load_init`); and the folder itself (:class:`RunFolder`), made on the
first write. ``hmdiff train`` and ``hmdiff train-lifter`` share all but :func:`load_init`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Dict

import torch

from hmdiff_ros.errors import one_line
from hmdiff_ros.files import existing_ancestor, missing_folders, remove_empty
from hmdiff_ros.model.checkpoint import CONFIG, WEIGHTS, load_checkpoint, trained_samples
from hmdiff_ros.model.hmdiff import HMDiff

log = logging.getLogger(__name__)
STATE = "train_state.safetensors"  # raw weights and optimiser moments, for resume
METRICS = "metrics.jsonl"  # one validation record per line
FRESH_HINT = "use --force to train afresh there (its checkpoint is replaced) or choose another --out"


def resumable(
    out: Path, *, force: bool, run: str, differs: Callable[[Dict], "str | None"], steps: int, budget: str, option: str
) -> bool:
    """Whether ``out`` holds a ``run`` (e.g. "training run") of this configuration to resume.
    Anything else there (a finished run, another configuration's, unrelated files) is refused
    unless ``force``: a run never silently replaces trained weights. ``differs``: from the
    run's ``config.json``, what differs from this run (e.g. "another model configuration"),
    or None (``KeyError``, ``TypeError`` or ``ValueError`` where it is no such run's);
    ``steps``: this run's, named ``budget`` in the error of a run already there, which tells
    to raise ``option``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; expected a folder for the run")
    ancestor = existing_ancestor(out.parent)
    if ancestor.exists() and not ancestor.is_dir():  # found now, not when the first checkpoint is written
        raise ValueError(f"--out '{out}': '{ancestor}' is a file; expected a folder for the run")
    if not out.is_dir() or not any(out.iterdir()) or force:
        return False
    if not ((out / CONFIG).is_file() and (out / STATE).is_file()):
        raise ValueError(f"--out '{out}' is not empty and holds no resumable {run}; {FRESH_HINT}")
    try:
        meta = json.loads((out / CONFIG).read_text())
        other, step = differs(meta), int(meta["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--out '{out}': its {CONFIG} is not a {run}'s ({one_line(exc)}); {FRESH_HINT}") from None
    if other:
        raise ValueError(f"--out '{out}' holds a run of {other}; {FRESH_HINT}")
    if step >= steps:
        raise ValueError(
            f"--out '{out}' holds a run already at step {step} of {budget}: nothing to train; "
            f"raise {option} to continue it, or {FRESH_HINT}"
        )
    return True


def jsonable(d):
    """``d`` as it reads back from JSON (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(d, default=str))


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


def load_resume_state(
    out: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    hint: str = FRESH_HINT,
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


def load_init(init: "str | Path", model: HMDiff) -> int:
    """The weights of the ``--init`` checkpoint ``init`` into ``model``; errors name
    ``--init``. Returns the training samples behind them (0 when its config does not say)."""
    try:
        base, meta = load_checkpoint(init)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--init checkpoint '{init}' not found or incomplete (needs {WEIGHTS} and {CONFIG})"
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
        raise ValueError(f"--init checkpoint '{init}' has another model configuration than this run")
    state = base.state_dict()
    first = "prior_encoder.proj.0.weight"  # (D, inputs): the keypoints are its last two columns
    if first in state and state[first].shape != model.state_dict()[first].shape:
        state[first] = torch.cat([state[first], state[first].new_zeros(state[first].shape[0], 2)], dim=1)
    missing, _ = model.load_state_dict(state, strict=False)
    if any(not k.startswith(("prior_encoder.", "prior_base.")) for k in missing):  # cannot happen with equal configs
        raise ValueError(f"--init checkpoint '{init}' lacks weights of this model: {missing[:3]}")
    log.info("starting from the weights of %s (step %s)", init, meta.get("step"))
    return trained_samples(meta) or 0


class RunFolder:
    """The output folder ``path`` of a training run, made on its first write, so that a run
    that fails to start, or stops before it writes, leaves no folder behind (:meth:`close`).
    A fresh run (not ``resume``) drops an earlier run's resume state and metrics there on
    its first write, so that none of them mix into it."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path, self.resume = path, resume
        self._new = missing_folders(path)  # what the first write makes
        self._made = False

    def ready(self) -> Path:
        """``path``, made (a fresh run's cleared) on the first call."""
        if not self._made:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                for name in (STATE, METRICS):
                    (self.path / name).unlink(missing_ok=True)
            self._made = True
        return self.path

    def add_metrics(self, record: Dict) -> None:
        """``record`` as one more line of :data:`METRICS`."""
        with (self.ready() / METRICS).open("a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        """Remove the folders made for the run that are still empty."""
        remove_empty(self._new)
