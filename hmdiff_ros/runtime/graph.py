"""The HMDiff sampling interface over exported graphs: what the ONNX Runtime and the TensorRT
backends share (:mod:`hmdiff_ros.runtime.backends`, :mod:`hmdiff_ros.runtime.tensorrt_backend`).

A :class:`GraphModel` holds an :class:`~hmdiff_ros.model.hmdiff.HMDiff` whose ``encoder`` and
``denoiser`` were replaced by graph modules (ONNX Runtime sessions, TensorRT engines) and
offers :meth:`HMDiff.sample`'s signature on it:

- the inputs are checked as the torch model checks them (:meth:`HMDiff.check_inputs`);
- the starting noise ``(B*M, P, 3)`` is drawn on the CPU from ``generator`` exactly as the
  torch model draws it, so one seed gives the same noise, and the same result up to
  precision, on every backend;
- a frame is one call of an unrolled sampler graph where one was exported for the asked
  steps and DAT settings (and ``eta == 0``); otherwise the torch DDIM loop with DAT runs over
  the graphs on ``device``;
- the result comes back as float32 CPU tensors, assembled as the torch model assembles it
  (:meth:`SampleOutput.from_rows`).

``dat`` mode ``full`` needs autograd through the denoiser and is refused.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch

from hmdiff_ros import defaults
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.hmdiff import SampleOutput

Sampler = Callable[..., torch.Tensor]  # proxy, noise (B*M rows), prior_xyz, prior_vis (B) -> points (B*M, P, 3) metres


class GraphModel:
    """The HMDiff interface over exported graphs.

    ``model``: the HMDiff whose ``encoder``/``denoiser`` are graph modules; ``backend``: the
    name reported as ``backend``; ``samplers``: ``(steps, dat mode)`` -> a one-call sampler;
    ``exported_dat``: dat mode -> the other DAT settings the samplers of that mode were
    exported with; ``device``: where the graphs take their inputs (``cpu``, or ``cuda``).
    ``max_batch``: the largest people x hypotheses batch in one call, ``max_people`` the
    largest people (``None``: any).
    """

    max_batch: int | None = None
    max_people: int | None = None
    autograd = False  # whether the model's own DDIM loop can differentiate through the denoiser (full DAT)

    def __init__(
        self,
        model,
        backend: str,
        samplers: Dict[Tuple[int, str], Sampler] | None = None,
        exported_dat: Dict[str, Dict] | None = None,
        device: "str | torch.device" = "cpu",
    ) -> None:
        self.model, self.backend = model, backend
        self.samplers = dict(samplers or {})
        self.exported_dat = dict(exported_dat or {})
        self.device = torch.device(device)
        self.fallback_reasons: List[str] = []

    def __getattr__(self, item: str):  # cfg, num_coarse, num_points, scheduler, encoder, denoiser ...
        if item == "model":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(item)
        return getattr(self.model, item)

    def eval(self) -> "GraphModel":
        return self

    def check_batch(self, people: int, hypotheses: int) -> None:
        """A ``ValueError`` when ``people`` x ``hypotheses`` is more than the graphs take in one
        call; graphs with a dynamic batch take any."""

    def sampler(self, steps: int, dat: DATConfig, eta: float) -> Sampler | None:
        """The one-call sampler exported for ``steps`` and ``dat`` (all of its settings), or None."""
        sampler = self.samplers.get((steps, dat.mode))
        same_dat = {k: v for k, v in vars(dat).items() if k != "mode"} == self.exported_dat.get(dat.mode)
        return sampler if eta == 0 and same_dat else None

    def sample(
        self,
        proxy: torch.Tensor,
        prior_xyz: torch.Tensor | None = None,
        prior_vis: torch.Tensor | None = None,
        steps: int = defaults.STEPS,
        dat: DATConfig = DATConfig(),
        hypotheses: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> SampleOutput:
        """:meth:`HMDiff.sample` on the graphs. With ``eta > 0`` on a device other than the
        CPU, the per-step noise is drawn there from a generator seeded from ``generator``:
        deterministic per seed, but not the CPU backends' numbers."""
        if dat.mode == "full" and not self.autograd:
            raise ValueError(f"dat mode 'full' needs PyTorch autograd; the {self.backend} backend runs 'fast' or 'off'")
        self.model.check_inputs(proxy, prior_xyz, prior_vis, dat, hypotheses, noise)
        people, rows = proxy.shape[0], proxy.shape[0] * hypotheses
        self.check_batch(people, hypotheses)
        if noise is None:
            noise = torch.randn((rows, self.num_points, 3), generator=generator)  # (B*M, P, 3), as on the CPU
        sampler = self.sampler(steps, dat, eta)
        if sampler is not None:
            if prior_xyz is None:  # dat "off": the graph still takes a prior
                prior_xyz, prior_vis = torch.zeros(people, 24, 3), torch.zeros(people, 24)
            points = sampler(proxy.float(), noise.float(), prior_xyz.float(), prior_vis.float())  # (B*M, P, 3) metres
            gaps = torch.full((steps, rows), float("nan"))
            return SampleOutput.from_rows(points.float().cpu(), people, self.num_coarse, gaps)
        if self.device.type != "cpu" and eta > 0 and generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            generator = torch.Generator(device=self.device).manual_seed(seed)
        proxy, prior_xyz, prior_vis, noise = (
            x.to(self.device) if x is not None else None for x in (proxy, prior_xyz, prior_vis, noise)
        )
        out = self.model.sample(proxy, prior_xyz, prior_vis, steps, dat, hypotheses, eta, generator, noise)
        return out.cpu()
