"""Inference backends behind one interface: ``load_model(backend, ...)`` returns an object with
the :meth:`HMDiff.sample` signature, ``cfg``, ``num_coarse`` and ``num_points``, so the frame
pipeline runs on any of them unchanged.

- ``torch``: the eager PyTorch model (every DAT mode; ``compile=True`` adds ``torch.compile``).
- ``onnxruntime``: the exported graphs (``hmdiff export``) in ONNX Runtime, execution
  providers in the order TensorRT EP -> CUDA -> CPU, whatever is installed. A frame is one
  call of the unrolled sampler when one was exported for the asked steps and DAT mode; other
  step counts run the encoder and denoiser graphs in the DDIM loop.
- ``tensorrt``: native TensorRT 10 engines built from the same ONNX files
  (:mod:`hmdiff_ros.runtime.tensorrt_backend`), on CUDA torch tensors.
- ``auto``: the fastest that works here: tensorrt (with a GPU), then onnxruntime (with an
  export), then torch. A backend that cannot load (library missing, no GPU, no export)
  falls back along tensorrt -> onnxruntime -> torch with one log line, never a crash.

Every loaded model says what really runs: ``backend`` (``torch``, ``onnxruntime`` or
``tensorrt``), ``fallback_reasons`` (``"name: error"`` for each backend that was skipped on the
way, empty when none) and ``max_batch`` (the largest people x hypotheses batch the backend
takes in one call; ``None``: unlimited). The two graph backends share
:class:`~hmdiff_ros.runtime.graph.GraphModel`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch
from torch import nn

from hmdiff_ros import defaults
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from hmdiff_ros.runtime.export import check_export
from hmdiff_ros.runtime.graph import GraphModel
from hmdiff_ros.runtime.tensorrt_backend import load_tensorrt

log = logging.getLogger(__name__)
CONCRETE_BACKENDS = tuple(b for b in defaults.BACKENDS if b != "auto")  # torch, onnxruntime, tensorrt
FALLBACK_ORDER = CONCRETE_BACKENDS[::-1]  # fastest first, torch last: it always loads


def ort_providers() -> List[str]:
    """Installed ONNX Runtime execution providers, in our order of preference."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OrtModule(nn.Module):
    """One ONNX Runtime session as a module: torch tensors in, torch tensors out."""

    def __init__(self, session, inputs: Sequence[str]) -> None:
        super().__init__()
        self.session, self.inputs = session, list(inputs)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.inputs, tensors, strict=True)}
        feeds = {n: (v.astype(np.int64) if n == "timestep" else v.astype(np.float32)) for n, v in feeds.items()}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def load_onnxruntime(checkpoint: "str | Path | None" = None, engines: "str | Path" = defaults.ENGINES) -> GraphModel:
    """The HMDiff interface on the ONNX export in ``engines`` (made from ``checkpoint``)."""
    import onnxruntime as ort

    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    folder = Path(engines)
    manifest = check_export(folder, ckpt)
    providers = ort_providers()
    opts = ort.SessionOptions()
    # measured on 2 CPU cores: EXTENDED beats ALL (whose layout changes cost more than they
    # save on these small graphs), and spinning threads fight PyTorch's between calls
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def session(name: str):
        try:
            return ort.InferenceSession(str(folder / name), opts, providers=providers)
        except Exception as exc:  # ONNX Runtime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
            raise ValueError(
                f"ONNX file '{folder / name}' could not be loaded by ONNX Runtime "
                f"({type(exc).__name__}: {one_line(exc)}); run 'hmdiff export --out {folder} --force'"
            ) from None

    model, _ = load_checkpoint(ckpt)
    model.encoder = OrtModule(session("encoder.onnx"), ["proxy"])
    model.denoiser = OrtModule(session("denoiser.onnx"), ["sample", "timestep", "image_tokens"])
    samplers, exported_dat = {}, {}
    for name, info in manifest["files"].items():
        if "steps" in info and (folder / name).is_file():
            mod = OrtModule(session(name), ["proxy", "noise", "prior_xyz", "prior_vis"])
            dat = dict(info["dat"])
            samplers[(int(info["steps"]), dat.pop("mode"))] = mod
            exported_dat[info["dat"]["mode"]] = dat
    log.info("onnxruntime backend: %s, providers %s, one-call samplers %s", folder, providers, sorted(samplers))
    return GraphModel(model, "onnxruntime", samplers, exported_dat)


def _load(name: str, checkpoint, engines, compile: bool):
    if name == "tensorrt":
        return load_tensorrt(checkpoint, engines)
    if name == "onnxruntime":
        return load_onnxruntime(checkpoint, engines)
    model, _ = load_checkpoint(checkpoint)
    if compile:
        model.denoiser = torch.compile(model.denoiser)
    model.backend, model.max_batch = "torch", None
    return model


def load_model(
    backend: str = defaults.BACKEND,
    checkpoint: "str | Path | None" = None,
    engines: "str | Path" = defaults.ENGINES,
    compile: bool = False,
    fallback: bool = True,
):
    """The model on ``backend`` (``torch``, ``onnxruntime``, ``tensorrt`` or ``auto``);
    ``fallback=False`` raises instead of falling back (benchmarks must not mislabel).

    The model's ``backend`` is the one that loaded and ``fallback_reasons`` why the ones before
    it did not. A broken or missing checkpoint breaks every backend: its own error (a one-line
    ``ValueError`` or ``FileNotFoundError`` naming the checkpoint) is raised from the last one."""
    if backend not in defaults.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(defaults.BACKENDS)}")
    order = FALLBACK_ORDER if backend == "auto" else FALLBACK_ORDER[FALLBACK_ORDER.index(backend) :]
    reasons: List[str] = []
    for i, name in enumerate(order):
        try:
            model = _load(name, checkpoint, engines, compile)
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            if not fallback or i == len(order) - 1:
                raise
            reasons.append(f"{name}: {one_line(exc)}")
            # auto expects to skip what is not installed or exported; a broken or stale export is a warning
            level = logging.INFO if backend == "auto" and not isinstance(exc, ValueError) else logging.WARNING
            log.log(level, "backend %s unavailable (%s); falling back to %s", name, one_line(exc), order[i + 1])
            continue
        model.fallback_reasons = reasons
        return model
    raise AssertionError("unreachable: the last backend returns or raises")  # pragma: no cover
