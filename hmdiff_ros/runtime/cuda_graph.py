"""PyTorch on CUDA without launch overhead: the whole K-step sampler as one CUDA graph replay.

Eager PyTorch launches a few hundred small kernels per frame (the encoder, K denoiser calls,
DAT's closed form, the DDIM steps); on a GPU each launch costs more than its work, so a frame
is bound by the launches, not by the GPU. :class:`GraphedSampler` captures
:meth:`~hmdiff_ros.model.hmdiff.HMDiff.sample` (eta 0, DAT ``off`` or ``fast``) into a
``torch.cuda.CUDAGraph`` once per batch bucket and replays it: inputs are copied into the
graph's static buffers (the batch padded up to the bucket with copies of its first row, which
are sampled and dropped), the replay runs every kernel, the output is copied out. Nothing in
the sampler waits for the host: the scheduler's and DAT's coefficients are Python floats
(:meth:`~hmdiff_ros.model.scheduler.DDIMScheduler.step`), the noise is an input.

:func:`load_torch_cuda` gives the HMDiff interface on it (``backend`` ``"torch"``, the model on
the GPU; :class:`~hmdiff_ros.runtime.graph.GraphModel` moves the inputs and draws the noise on
the CPU as every backend does, so one seed gives the same result everywhere).

Capture is made safe by construction and checked without a GPU: the sampler holds no host
read and no host-to-device copy (tests/test_cuda_graph.py runs the captured work on PyTorch's
``meta`` device under a dispatch mode that fails on either, for every bucket and DAT mode
captured). :func:`load_torch_cuda` captures the one-person graph while loading, so a GPU where
capture fails makes ``auto`` fall back with the reason; a later bucket whose capture fails
runs eagerly, said once in the log.

This path has not run on a GPU yet (none was available where it was written).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from hmdiff_ros import defaults
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.runtime.export import UnrolledSampler
from hmdiff_ros.runtime.graph import GraphModel

log = logging.getLogger(__name__)
BUCKETS = (1, 2, 4, 8, 16)  # people per graph: a batch runs in the smallest bucket that holds it
EAGER = "eager"  # GraphedSampler.graphs' entry for a bucket whose capture failed


class GraphedSampler:
    """``(proxy, noise, prior_xyz, prior_vis) -> points (B*M, P, 3)``, the interface of an
    exported one-call sampler (:mod:`hmdiff_ros.runtime.graph`), on ``model`` (on ``device``)
    for ``steps`` and ``dat``; one captured graph per (people bucket, hypotheses)."""

    def __init__(
        self,
        model,
        steps: int,
        dat: DATConfig,
        device: "str | torch.device" = "cuda",
        buckets: Sequence[int] = BUCKETS,
        capture: bool = True,
    ) -> None:
        self.run = UnrolledSampler(model, steps, dat)  # the captured work, as the ONNX export holds it
        self.device, self.buckets, self.capture = torch.device(device), tuple(sorted(buckets)), capture
        self.graphs: Dict[Tuple[int, int], tuple] = {}  # (bucket, M) -> (graph, static inputs, static output)

    def bucket(self, people: int) -> int:
        """The smallest bucket that holds ``people`` (a ``ValueError`` beyond the largest: such
        a batch runs eagerly, see :meth:`__call__`)."""
        for size in self.buckets:
            if people <= size:
                return size
        raise ValueError(f"{people} people exceed the largest CUDA graph bucket ({self.buckets[-1]})")

    def _make(self, bucket: int, m: int, like: Sequence[torch.Tensor]):
        """Static inputs of the bucket's shapes, and their graph and output (None, None without
        capture). A capture that fails raises a ``RuntimeError`` naming the bucket."""
        shapes = [(bucket, *like[0].shape[1:]), (bucket * m, *like[1].shape[1:])]
        shapes += [(bucket, *t.shape[1:]) for t in like[2:]]
        static = [torch.zeros(s, dtype=torch.float32, device=self.device) for s in shapes]
        static[3].fill_(1.0)  # visible joints: a warm-up on zeros must not divide by zero weights
        if not self.capture:
            return None, static, None
        try:
            graph, output = self._capture(static)
        except Exception as exc:  # CUDA's errors are RuntimeErrors; anything else is as fatal to the graph
            raise RuntimeError(
                f"CUDA graph capture of the {self.run.steps}-step sampler for {bucket} people x {m} hypotheses "
                f"failed: {one_line(exc)}"
            ) from None
        log.info(
            "captured the %d-step sampler in a CUDA graph for %d people x %d hypotheses", self.run.steps, bucket, m
        )
        return graph, static, output

    def _capture(self, static: Sequence[torch.Tensor]):
        """``(graph, output)``: the sampler on ``static`` captured (after a warm-up on a side
        stream, as ``torch.cuda.graphs`` asks); ``graph.replay()`` refills ``output``."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):
                self.run(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            output = self.run(*static)
        return graph, output

    def prepare(self, people: int, hypotheses: int, like: Sequence[torch.Tensor]) -> None:
        """Capture the graph of ``people``'s bucket for ``hypotheses`` now (``like``: inputs of
        the sampler's shapes, any batch); a ``RuntimeError`` when it fails."""
        key = (self.bucket(people), hypotheses)
        if key not in self.graphs:
            self.graphs[key] = self._make(*key, like)

    @torch.no_grad()
    def __call__(self, proxy, noise, prior_xyz, prior_vis) -> torch.Tensor:
        people, rows = proxy.shape[0], noise.shape[0]
        m = rows // people
        inputs = (proxy, noise, prior_xyz, prior_vis)
        bucket = self.bucket(people) if people <= self.buckets[-1] else None
        if bucket is not None and (bucket, m) not in self.graphs:
            try:
                self.graphs[(bucket, m)] = self._make(bucket, m, inputs)
            except RuntimeError as exc:  # said once: the bucket runs eagerly from now on
                log.warning("%s; %d people x %d hypotheses run eagerly", one_line(exc), bucket, m)
                self.graphs[(bucket, m)] = EAGER
        if bucket is None or self.graphs[(bucket, m)] is EAGER:  # a crowd beyond the largest graph, or no graph
            return self.run(*(t.to(device=self.device, dtype=torch.float32) for t in inputs))
        graph, static, output = self.graphs[(bucket, m)]
        for buf, value in zip(static, inputs, strict=True):
            value = value.to(device=self.device, dtype=torch.float32, non_blocking=True)
            n = value.shape[0]
            buf[:n].copy_(value)
            if n < buf.shape[0]:  # padding: copies of the first row (a valid input), dropped after
                buf[n:].copy_(value[:1].expand(buf.shape[0] - n, *value.shape[1:]))
        if graph is None:
            output = self.run(*static)
        else:
            graph.replay()
        return output[:rows].clone()


class HostTraffic(TorchDispatchMode):
    """Records, while active, the ops that a CUDA graph capture does not allow with the model on
    ``device``: a value of a tensor there read back to the host (``.item()``, ``float()``,
    ``nonzero``, a branch on a tensor) and a CPU tensor copied there ("operation not permitted
    when stream is capturing"). Run the work on the ``meta`` device to check it without a GPU."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}
    COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}

    def __init__(self, device: str = "meta") -> None:
        super().__init__()
        self.device, self.found = device, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        where = {t.device.type for t in tensors}
        if func in self.READS and self.device in where:
            self.found.append(f"host read {func}")
        if func in self.COPIES:
            target = kwargs.get("device")
            to_device = (target is not None and torch.device(target).type == self.device) or self.device in where
            if to_device and "cpu" in where:
                shapes = [tuple(t.shape) for t in tensors if t.device.type == "cpu"]
                self.found.append(f"host copy {func} of {shapes}")
        return func(*args, **kwargs)


def capture_safety(
    model,
    steps: Sequence[int] = (1, defaults.STEPS, 4),
    modes: Sequence[str] = defaults.EXPORT_DAT_MODES,
    buckets: Sequence[int] = BUCKETS,
    hypotheses: Sequence[int] = (1, defaults.HYPOTHESES),
) -> Dict[Tuple[str, int, int, int], List[str]]:
    """What the captured work of each (DAT mode, steps, bucket, hypotheses) does that a capture
    does not allow (:class:`HostTraffic`), run on the ``meta`` device: no GPU, no data, only
    the ops. ``model``: an HMDiff (moved to ``meta`` here, on a copy's parameters)."""
    import copy

    meta = copy.deepcopy(model).to("meta").eval() if next(model.parameters()).device.type != "meta" else model
    enc = meta.cfg.encoder
    like = (
        torch.zeros(1, enc.in_channels, enc.input_size, enc.input_size),
        torch.zeros(1, meta.num_points, 3),
        torch.zeros(1, 24, 3),
        torch.ones(1, 24),
    )
    found = {}
    for mode in modes:
        for k in steps:
            sampler = GraphedSampler(meta, k, DATConfig(mode=mode), device="meta", capture=False)
            for bucket in buckets:
                for m in sorted(set(hypotheses)):
                    _, static, _ = sampler._make(bucket, m, like)  # the buffers a capture reads
                    with torch.no_grad(), HostTraffic("meta") as traffic:
                        try:
                            out = sampler.run(*static)  # exactly what _capture records
                        except RuntimeError as exc:  # a host read of a meta tensor raises after it is recorded
                            traffic.found.append(f"raised {one_line(exc)}")
                            out = None
                    if out is not None and tuple(out.shape) != (bucket * m, meta.num_points, 3):
                        traffic.found.append(f"output shape {tuple(out.shape)}")
                    found[(mode, k, bucket, m)] = traffic.found
    return found


class TorchCudaModel(GraphModel):
    """The HMDiff interface on the PyTorch model on a CUDA device: with ``cuda_graphs``, eta 0
    and DAT ``off`` or ``fast`` (the defaults), a frame is one :class:`GraphedSampler` replay;
    otherwise the eager sampler runs there (``full`` DAT too: this is PyTorch)."""

    autograd = True  # the model itself runs the loop that the graphs do not hold: full DAT works

    def __init__(
        self,
        model,
        device: "str | torch.device" = "cuda",
        cuda_graphs: bool = True,
        capture: "bool | None" = None,
    ) -> None:
        super().__init__(model, "torch", device=device)
        self.cuda_graphs = cuda_graphs
        # captured on CUDA; elsewhere (tests on the CPU) the same buffers run eagerly
        self.capture = self.device.type == "cuda" if capture is None else capture

    def sampler(self, steps: int, dat: DATConfig, eta: float):
        if not self.cuda_graphs or eta != 0 or dat.mode == "full":
            return None
        key = (steps, dat)
        if key not in self.samplers:
            self.samplers[key] = GraphedSampler(self.model, steps, dat, self.device, capture=self.capture)
        return self.samplers[key]

    def capture_default(
        self, steps: int = defaults.STEPS, dat: DATConfig = DATConfig(), hypotheses: int = defaults.HYPOTHESES
    ) -> None:
        """Capture the one-person graph of the default settings now: a ``RuntimeError`` when it
        fails, so that loading fails and ``auto`` falls back with the reason."""
        enc, n = self.model.cfg.encoder, self.model.num_points
        like = (
            torch.zeros(1, enc.in_channels, enc.input_size, enc.input_size),
            torch.zeros(hypotheses, n, 3),
            torch.zeros(1, 24, 3),
            torch.ones(1, 24),
        )
        self.sampler(steps, dat, 0.0).prepare(1, hypotheses, like)


def load_torch_cuda(checkpoint=None, cuda_graphs: bool = True, device: str = "cuda") -> TorchCudaModel:
    """The shipped (or ``checkpoint``'s) model on the GPU, its default graph captured
    (:meth:`TorchCudaModel.capture_default`); a ``RuntimeError`` without CUDA or when the capture
    fails. ``device``: where the model goes (the CPU in tests, with a capture stood in)."""
    from hmdiff_ros.model.checkpoint import load_checkpoint

    if not torch.cuda.is_available():
        why = "built without CUDA" if torch.version.cuda is None else "no GPU found"
        raise RuntimeError(f"CUDA is not available (torch {torch.__version__}, {why})")
    model, _ = load_checkpoint(checkpoint)
    on_device = TorchCudaModel(model.to(device).eval(), device, cuda_graphs, capture=cuda_graphs)
    if cuda_graphs:
        on_device.capture_default()
    return on_device
