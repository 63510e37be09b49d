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
- ``auto`` (the default): the fastest that works here: tensorrt (with a GPU and engines), then,
  with a GPU, torch on it with the sampler in CUDA graphs (:mod:`hmdiff_ros.runtime.cuda_graph`,
  reported as ``torch``), then onnxruntime (on the export of the checkpoint made once in the
  user's cache when ``engines`` holds none: :func:`export_folder`), then torch. A backend that
  cannot load (library missing, no GPU, a broken export) falls back along that order with one
  log line, never a crash.

Every loaded model says what really runs: ``backend`` (``torch``, ``onnxruntime`` or
``tensorrt``), ``fallback_reasons`` (``"name: error"`` for each backend that was skipped on the
way, empty when none) and ``max_batch`` (the largest people x hypotheses batch the backend
takes in one call; ``None``: unlimited). The two graph backends share
:class:`~hmdiff_ros.runtime.graph.GraphModel`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from hmdiff_ros import defaults
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from hmdiff_ros.runtime.cuda_graph import load_torch_cuda
from hmdiff_ros.runtime.export_cache import cached_export
from hmdiff_ros.runtime.graph import GraphModel
from hmdiff_ros.runtime.manifest import MANIFEST, check_export
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
    """One ONNX graph in ONNX Runtime as a module: torch tensors in, torch tensors out.

    A session's thread count is fixed when it is made, so a call runs on a session with as
    many threads as PyTorch has now (``torch.get_num_threads()``), made on first use by
    ``make_session(threads)``: a stream that gives the model half of the cores while the prior
    runs beside it (:func:`hmdiff_ros.pipeline.stream.model_threads`) gets it here too."""

    def __init__(self, make_session: Callable[[int], object], inputs: Sequence[str]) -> None:
        super().__init__()
        self.make_session, self.inputs = make_session, list(inputs)
        self.sessions: Dict[int, object] = {}
        self.session_for(torch.get_num_threads())  # a broken file fails at load, not at the first frame

    def session_for(self, threads: int):
        if threads not in self.sessions:
            self.sessions[threads] = self.make_session(threads)
        return self.sessions[threads]

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.inputs, tensors, strict=True)}
        feeds = {n: (v.astype(np.int64) if n == "timestep" else v.astype(np.float32)) for n, v in feeds.items()}
        return torch.from_numpy(self.session_for(torch.get_num_threads()).run(None, feeds)[0])


def export_folder(
    checkpoint: "str | Path | None", engines: "str | Path | None", steps: Sequence[int] = (defaults.STEPS,)
) -> Path:
    """The ONNX export to run: the one in ``engines`` where that folder holds one (``hmdiff
    export``: used as it is, refused if stale), else the export of ``checkpoint`` in the user's
    cache, made on first use (:func:`~hmdiff_ros.runtime.export_cache.cached_export`, with samplers
    for ``steps``)."""
    if engines is not None and (Path(engines) / MANIFEST).exists():
        return Path(engines)
    folder = cached_export(checkpoint, steps)
    log.info("no ONNX export in '%s': using the cached export %s", engines, folder)
    return folder


def load_onnxruntime(
    checkpoint: "str | Path | None" = None,
    engines: "str | Path | None" = defaults.ENGINES,
    steps: Sequence[int] = (defaults.STEPS,),
) -> GraphModel:
    """The HMDiff interface on the ONNX export of ``checkpoint`` (:func:`export_folder`)."""
    import onnxruntime as ort

    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    folder = export_folder(ckpt, engines, steps)
    manifest = check_export(folder, ckpt)
    providers = ort_providers()
    opts = ort.SessionOptions()
    # measured on 2 CPU cores: EXTENDED beats ALL (whose layout changes cost more than they
    # save on these small graphs); threads that spin between the graph's many small nodes make
    # the one-call sampler 1.3x faster than threads that sleep (12.7 ms against 17.0 ms), but
    # only if they stop spinning when a call returns: else they starve the other sessions and
    # PyTorch (a frame took 72.5 ms instead of 16.6)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")

    def session(name: str, inputs: Sequence[str]) -> OrtModule:
        def make(threads: int):
            opts.intra_op_num_threads = threads
            try:
                return ort.InferenceSession(str(folder / name), opts, providers=providers)
            except Exception as exc:  # ONNX Runtime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
                raise ValueError(
                    f"ONNX file '{folder / name}' could not be loaded by ONNX Runtime "
                    f"({type(exc).__name__}: {one_line(exc)}); run 'hmdiff export --out {folder} --force'"
                ) from None

        return OrtModule(make, inputs)

    model, _ = load_checkpoint(ckpt)
    model.encoder = session("encoder.onnx", ["proxy"])
    model.denoiser = session("denoiser.onnx", ["sample", "timestep", "image_tokens"])
    samplers, exported_dat = {}, {}
    for name, info in manifest["files"].items():
        if "steps" in info and (folder / name).is_file():
            mod = session(name, ["proxy", "noise", "prior_xyz", "prior_vis"])
            dat = dict(info["dat"])
            samplers[(int(info["steps"]), dat.pop("mode"))] = mod
            exported_dat[info["dat"]["mode"]] = dat
    log.info("onnxruntime backend: %s, providers %s, one-call samplers %s", folder, providers, sorted(samplers))
    return GraphModel(model, "onnxruntime", samplers, exported_dat)


def _load(name: str, checkpoint, engines, compile: bool, steps: Sequence[int]):
    if name == "tensorrt":
        return load_tensorrt(checkpoint, engines)
    if name == "torch-cuda":  # auto on a machine with CUDA: PyTorch on the GPU, a CUDA graph per frame
        return load_torch_cuda(checkpoint)
    if name == "onnxruntime":
        return load_onnxruntime(checkpoint, engines, steps)
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
    steps: Sequence[int] = (defaults.STEPS,),
):
    """The model on ``backend`` (``torch``, ``onnxruntime``, ``tensorrt`` or ``auto``);
    ``fallback=False`` raises instead of falling back (benchmarks must not mislabel).
    ``steps``: the DDIM step counts to have one-call samplers for, where ONNX Runtime runs the
    cached export (:func:`export_folder`); other counts run the DDIM loop over its graphs.

    The model's ``backend`` is the one that loaded and ``fallback_reasons`` why the ones before
    it did not. A broken or missing checkpoint breaks every backend: its own error (a one-line
    ``ValueError`` or ``FileNotFoundError`` naming the checkpoint) is raised from the last one."""
    if backend not in defaults.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(defaults.BACKENDS)}")
    order = FALLBACK_ORDER if backend == "auto" else FALLBACK_ORDER[FALLBACK_ORDER.index(backend) :]
    if backend == "auto" and torch.cuda.is_available():  # a GPU: PyTorch there before the CPU's ONNX Runtime
        order = ("tensorrt", "torch-cuda", *order[1:])
    reasons: List[str] = []
    for i, name in enumerate(order):
        try:
            model = _load(name, checkpoint, engines, compile, steps)
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
