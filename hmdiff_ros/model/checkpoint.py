"""Checkpoints: a folder with ``model.safetensors`` (weights) and ``config.json`` (the model
config it rebuilds from, plus training facts and metrics). Never pickle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Tuple

from hmdiff_ros.errors import one_line
from hmdiff_ros.model.hmdiff import HMDiff, HMDiffConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "hmdiff_proxy_anny"


def save_checkpoint(folder: "str | Path", model: HMDiff, extra: Dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(folder / WEIGHTS)
    meta = {"model": model.cfg.to_dict(), **(extra or {})}
    (folder / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def checkpoint_hash(folder: "str | Path") -> str:
    return hashlib.sha256((Path(folder) / WEIGHTS).read_bytes()).hexdigest()[:16]


def load_checkpoint(folder: "str | Path | None" = None, map_location: str = "cpu") -> Tuple[HMDiff, Dict]:
    """Rebuild the model from ``config.json`` and load its weights.

    Errors are one line naming the folder and the file at fault: ``FileNotFoundError`` when a
    file is missing, ``ValueError`` when one is unreadable, truncated, corrupt or does not fit
    the other."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else DEFAULT_CHECKPOINT
    weights, config = folder / WEIGHTS, folder / CONFIG
    if not weights.is_file() or not config.is_file():
        raise FileNotFoundError(
            f"checkpoint '{folder}' not found or incomplete (needs {WEIGHTS} and {CONFIG}); "
            "train one with 'hmdiff train' or omit --checkpoint for the shipped one"
        )
    try:
        meta = json.loads(config.read_text())
        model = HMDiff(HMDiffConfig.from_dict(meta["model"]))
    except (OSError, KeyError, TypeError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise ValueError(
            f"checkpoint '{folder}' is not a valid HMDiff checkpoint: {CONFIG} is truncated, corrupt or not a "
            f"model config ({type(exc).__name__}: {one_line(exc)}); expected JSON with the model config under 'model'"
        ) from None
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"checkpoint '{folder}': {WEIGHTS} is truncated or corrupt ({one_line(exc)}); "
            f"expected a safetensors file of {sum(1 for _ in model.state_dict())} weight tensors"
        ) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint '{folder}': the weights in {WEIGHTS} do not fit the model described in {CONFIG} "
            f"({one_line(exc)})"
        ) from None
    return model.eval(), meta


def trained_samples(meta: Dict) -> "int | None":
    """Training samples behind a checkpoint, from its config: ``samples`` where training wrote
    it (a fine-tuned run counts its ``--init``'s too), else ``step`` x ``batch_size`` x the
    processes; None when it does not say."""
    if isinstance(meta.get("samples"), int):
        return meta["samples"]
    try:
        return int(meta["step"]) * int(meta["train"]["batch_size"]) * int(meta.get("world_size", 1))
    except (KeyError, TypeError, ValueError):
        return None
