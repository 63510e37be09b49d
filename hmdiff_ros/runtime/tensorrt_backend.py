"""TensorRT 10 engines from the exported ONNX files: build (``hmdiff build-engine``) and run.

Engines are specific to a GPU model and a TensorRT version, so each is named by what it was
built from and for::

    <graph>_<first 12 hex of the ONNX sha256>_<gpu>-sm<compute capability>_trt<version>_<precision>.engine

with a JSON sidecar recording the same. :func:`find_engine` returns the engine that matches
the ONNX file, this GPU and this TensorRT; an engine built for anything else is reported
(and rebuilt when asked), never silently used. A timing cache (``timing.cache``) beside the
engines makes rebuilds fast.

Profiles follow the export's two dynamic axes (:data:`~hmdiff_ros.runtime.export.PEOPLE` and
:data:`~hmdiff_ros.runtime.export.ROWS`, read from each ONNX input's ``dim_param``):
``people`` 1 .. ``max_people`` (optimum 1), ``rows`` 1 .. ``max_batch`` (people x hypotheses,
optimum ``hypotheses``); TensorRT takes inputs whose axes share a name for one size, so each
name gets one range (:func:`profile_shapes`). Engines run on CUDA torch tensors (no pycuda
needed when torch has CUDA). The loaded model's ``max_batch`` is the engines' largest rows
and ``max_people`` their largest people; more is refused with the engine's profile range.

This path is written against the TensorRT 10 API and has not run: TensorRT cannot be
installed where the package is built and tested. Tests run its logic against a stand-in
``tensorrt`` module that keeps TensorRT's rules on named axes and whose engines run their ONNX
graph with ONNX Runtime on the CPU, reading and writing the memory bound to them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from hmdiff_ros import defaults
from hmdiff_ros.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from hmdiff_ros.runtime.export import PEOPLE, ROWS
from hmdiff_ros.runtime.graph import GraphModel
from hmdiff_ros.runtime.manifest import check_export, damaged_files, file_sha256, read_manifest

log = logging.getLogger(__name__)
GRAPHS = ("encoder", "denoiser")


def gpu_tag(name: str) -> str:
    """A file-name-safe GPU name: ``NVIDIA GeForce RTX 4090`` -> ``nvidia-geforce-rtx-4090``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def this_gpu() -> str:
    """This GPU's name and compute capability, e.g. ``NVIDIA H100 80GB HBM3 sm90``: engines are
    cached by both (one name may come in several capabilities, e.g. Orin modules)."""
    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} sm{major}{minor}"


def engine_name(graph: str, onnx_sha256: str, gpu: str, trt_version: str, precision: str) -> str:
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    return f"{graph}_{onnx_sha256[:12]}_{gpu_tag(gpu)}_trt{trt_version}_{precision}.engine"


def find_engine(folder: Path, graph: str, onnx_sha256: str, gpu: str, trt_version: str, precision: str):
    """``(path or None, [engines of this graph built from or for something else])``."""
    folder = Path(folder)
    want = folder / engine_name(graph, onnx_sha256, gpu, trt_version, precision)
    others = sorted(p.name for p in folder.glob(f"{graph}_*.engine") if p.name != want.name)
    return (want if want.is_file() else None), others


def _trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ImportError(
            "TensorRT is not installed (pip install 'hmdiff_ros[tensorrt]' on a machine with a GPU)"
        ) from exc
    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA GPU and a CUDA build of PyTorch; none is available here")
    return trt


def input_axes(onnx_path: "str | Path") -> Dict[str, str]:
    """``{input name: name of its first axis}`` of an ONNX file's graph inputs (its
    ``dim_param``; the size as text where the axis is fixed)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {w.name for w in graph.initializer}
    axes = {}
    for value in graph.input:
        if value.name not in weights:
            dim = value.type.tensor_type.shape.dim[0]
            axes[value.name] = dim.dim_param or str(dim.dim_value)
    return axes


def profile_shapes(
    axes: Dict[str, str],
    shapes: Dict[str, Tuple[int, ...]],
    max_people: int = 16,
    hypotheses: int = defaults.HYPOTHESES,
    max_batch: int | None = None,
) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]:
    """``{input: (min, opt, max) shape}`` of one optimisation profile: the first axis by its
    name (``axes``, :func:`input_axes`), ``people`` 1 / 1 / ``max_people``, ``rows`` 1 /
    ``hypotheses`` / ``max_batch`` (default ``max_people`` x ``hypotheses``); the other axes
    as in ``shapes`` (the network's, first axis dynamic). Inputs that share an axis name get
    the same range, as TensorRT requires; an axis of another name is refused."""
    if max_people < 1 or hypotheses < 1:
        raise ValueError(f"max_people and hypotheses must be >= 1, got {max_people} and {hypotheses}")
    max_rows = max_people * hypotheses if max_batch is None else max_batch
    if max_rows < hypotheses:
        raise ValueError(f"max_batch ({max_rows}) must be at least the hypotheses ({hypotheses})")
    ranges = {PEOPLE: (1, 1, max_people), ROWS: (1, hypotheses, max_rows)}
    out = {}
    for name, axis in axes.items():
        if axis not in ranges:
            raise ValueError(
                f"input '{name}' has a first axis named {axis!r}; the export names them {PEOPLE!r} or {ROWS!r} "
                "(an export older than format 3: run 'hmdiff export --force')"
            )
        rest = tuple(shapes[name])[1:]
        out[name] = tuple((n, *rest) for n in ranges[axis])
    return out


def build_engine(
    onnx_path: "str | Path",
    out: "str | Path",
    fp16: bool = True,
    max_people: int = 16,
    hypotheses: int = defaults.HYPOTHESES,
    max_batch: int | None = None,
    workspace_gb: float = 1.0,
) -> Path:
    """Build a serialized engine from ``onnx_path`` into ``out`` (profile:
    :func:`profile_shapes`); returns its path."""
    trt = _trt()
    onnx_path, out = Path(onnx_path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse '{onnx_path}': {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    precision = "fp16" if fp16 and builder.platform_has_fast_fp16 else "fp32"
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    cache_file = out / "timing.cache"
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = profile_shapes(
        input_axes(onnx_path), {t.name: tuple(t.shape) for t in inputs}, max_people, hypotheses, max_batch
    )
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from '{onnx_path}'")
    cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    sha = file_sha256(onnx_path)
    gpu = this_gpu()
    path = out / engine_name(onnx_path.stem, sha, gpu, trt.__version__, precision)
    path.write_bytes(bytes(serialized))
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "onnx": onnx_path.name,
                "onnx_sha256": sha,
                "gpu": gpu,
                "tensorrt": trt.__version__,
                "precision": precision,
                "profile": {name: [list(s) for s in ranges] for name, ranges in shapes.items()},
            },
            indent=1,
        )
        + "\n"
    )
    log.info("built %s", path)
    return path


def build_engines(
    folder: "str | Path" = defaults.ENGINES,
    fp16: bool = True,
    max_people: int = 16,
    hypotheses: int = defaults.HYPOTHESES,
    max_batch: int | None = None,
) -> List[Path]:
    """Engines for the encoder and the denoiser of the export in ``folder``."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, why in damaged_files(folder, manifest).items():
        if name in {f"{g}.onnx" for g in GRAPHS}:
            raise (FileNotFoundError if why == "missing" else ValueError)(
                f"ONNX file '{folder / name}' is {why}; run 'hmdiff export --out {folder} --force'"
            )
    return [build_engine(folder / f"{g}.onnx", folder, fp16, max_people, hypotheses, max_batch) for g in GRAPHS]


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64}


class TensorRTModule(nn.Module):
    """A deserialized engine as a module over CUDA torch tensors (inputs in engine order).
    ``axes``: each input's first-axis name (:func:`input_axes` of the ONNX file it was built
    from), for :attr:`max_people` and :attr:`max_batch`; without it every input counts as rows.
    ``device``: where the engine reads its inputs and writes its outputs (the GPU; the CPU in
    tests, against a stand-in ``tensorrt`` whose engines run there)."""

    def __init__(self, path: "str | Path", axes: Dict[str, str] | None = None, device: str = "cuda") -> None:
        super().__init__()
        trt = _trt()
        self.path, self.axes, self.device = Path(path), dict(axes or {}), torch.device(device)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"'{self.path}' is not a TensorRT engine for this GPU and TensorRT version")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def _dtype(self, name: str) -> torch.dtype:
        return _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]

    def profile(self, name: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """The smallest and largest shape of input ``name``: optimisation profile 0 where the
        engine has dynamic axes (-1), else its fixed shape."""
        shape = tuple(self.engine.get_tensor_shape(name))
        if all(d >= 0 for d in shape):
            return shape, shape
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)  # (min, opt, max)
        return tuple(low), tuple(high)

    def _largest(self, axis: str) -> int | None:
        sizes = [self.profile(n)[1][0] for n in self.inputs if self.axes.get(n, ROWS) == axis]
        return min(sizes) if sizes else None

    @property
    def max_batch(self) -> int | None:
        """The largest rows (people x hypotheses) every per-row input takes (None: no such input)."""
        return self._largest(ROWS)

    @property
    def max_people(self) -> int | None:
        """The largest people every per-person input takes (None: no such input)."""
        return self._largest(PEOPLE)

    def _bind_input(self, name: str, t: torch.Tensor) -> None:
        shape = tuple(t.shape)
        if not self.context.set_input_shape(name, shape):
            low, high = self.profile(name)
            raise ValueError(
                f"TensorRT engine '{self.path}': input '{name}' of shape {shape} is outside the engine's "
                f"profile {low} .. {high} (rebuild with 'hmdiff build-engine --max-people N --max-batch M' "
                "for more; M = people x hypotheses)"
            )
        self.context.set_tensor_address(name, t.data_ptr())

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        keep = []
        for name, t in zip(self.inputs, tensors, strict=True):
            t = t.to(device=self.device, dtype=self._dtype(name)).contiguous()
            keep.append(t)
            self._bind_input(name, t)
        outs = []
        for name in self.outputs:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name), device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of '{self.path}' failed")
        stream.synchronize()
        return outs[0].float()


def engines_for(folder: Path, build: bool = True, fp16: bool = True) -> Dict[str, Path]:
    """The matching engine of each graph, built when missing (``build``) or refused."""
    trt = _trt()
    gpu, out = this_gpu(), {}
    precisions: Tuple[str, ...] = ("fp16", "fp32") if fp16 else ("fp32",)
    for g in GRAPHS:
        sha = file_sha256(folder / f"{g}.onnx")
        found, others = None, []
        for precision in precisions:
            found, others = find_engine(folder, g, sha, gpu, trt.__version__, precision)
            if found:
                break
        if found is None:
            why = f"no {g} engine for ONNX {sha[:12]}, GPU '{gpu}', TensorRT {trt.__version__} in '{folder}'"
            if others:
                why += f" (found engines built from or for something else: {', '.join(others)})"
            if not build:
                raise FileNotFoundError(why + "; run 'hmdiff build-engine'")
            log.warning("%s: building it now", why)
            found = build_engine(folder / f"{g}.onnx", folder, fp16=fp16)
        out[g] = found
    return out


def load_tensorrt(
    checkpoint: "str | Path | None" = None,
    engines: "str | Path" = defaults.ENGINES,
    build: bool = True,
    device: str = "cuda",
) -> "CudaGraphModel":
    """The HMDiff interface on TensorRT engines (encoder, denoiser); the DDIM loop and fast
    DAT run in torch on the GPU. ``device``: where the model and the engines' tensors go (the
    CPU in tests, with a stand-in ``tensorrt``)."""
    _trt()  # TensorRT and a GPU first: where they are missing, that is the reason, not the export
    folder = Path(engines)
    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    check_export(folder, ckpt)
    paths = engines_for(folder, build=build)
    model, _ = load_checkpoint(ckpt)
    model = model.to(device)
    model.encoder = TensorRTModule(paths["encoder"], input_axes(folder / "encoder.onnx"), device)
    model.denoiser = TensorRTModule(paths["denoiser"], input_axes(folder / "denoiser.onnx"), device)
    people = [n for n in (model.encoder.max_people, model.denoiser.max_people) if n is not None]
    return CudaGraphModel(
        model, max_batch=model.denoiser.max_batch, device=device, max_people=min(people) if people else None
    )


class CudaGraphModel(GraphModel):
    """The HMDiff interface around a model whose graphs run on ``device`` (the TensorRT
    engines on CUDA): inputs move there, the torch DDIM loop and DAT run there, outputs come
    back to the CPU (:class:`~hmdiff_ros.runtime.graph.GraphModel`, with no one-call samplers).
    ``max_batch``: the largest B*M the engines take, ``max_people`` the largest B (``None``: any)."""

    def __init__(
        self,
        model,
        max_batch: int | None = None,
        device: "str | torch.device" = "cuda",
        max_people: int | None = None,
    ) -> None:
        super().__init__(model, "tensorrt", device=device)
        self.max_batch, self.max_people = max_batch, max_people

    def check_batch(self, people: int, hypotheses: int) -> None:
        if self.max_people is not None and people > self.max_people:
            raise ValueError(
                f"{people} people exceed the largest the TensorRT engines take ({self.max_people}); "
                f"rebuild with 'hmdiff build-engine --max-people {people}'"
            )
        batch = people * hypotheses
        if self.max_batch is not None and batch > self.max_batch:
            raise ValueError(
                f"{people} people x {hypotheses} hypotheses = {batch} exceeds the largest batch of "
                f"the TensorRT engines ({self.max_batch}); ask for fewer, or rebuild with "
                f"'hmdiff build-engine --max-batch {batch}'"
            )
