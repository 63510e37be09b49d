"""HMDiff: the image encoder, the point denoiser, the scheduler and DAT, put together.

Points: the coarse mesh vertices then our joints, root-relative (pelvis at the origin),
camera-aligned (x right, y down, z forward), metres; the network sees them divided by
``data_scale``. :meth:`HMDiff.sample` writes the DDIM loop out: network -> (x̂_0, ε̂) ->
DAT -> ``scheduler.step``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Dict

import numpy as np
import torch
from torch import nn

from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.model.dat import DAT, DATConfig
from hmdiff_ros.model.denoiser import Denoiser, DenoiserConfig
from hmdiff_ros.model.encoder import EncoderConfig, ImageEncoder
from hmdiff_ros.model.scheduler import DDIMScheduler, SchedulerConfig


@dataclass(frozen=True)
class HMDiffConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    data_scale: float = 0.5  # metres per normalised unit: bodies span about +-2 units
    topology: str = "anny"  # the topology asset the points follow

    @classmethod
    def from_dict(cls, d: Dict) -> "HMDiffConfig":
        return cls(
            encoder=EncoderConfig(**d["encoder"]),
            denoiser=DenoiserConfig(**d["denoiser"]),
            scheduler=SchedulerConfig(**d["scheduler"]),
            data_scale=d["data_scale"],
            topology=d["topology"],
        )

    def to_dict(self) -> Dict:
        return asdict(self)


@dataclass
class SampleOutput:
    points: torch.Tensor  # (B, P, 3) metres, root-relative, camera-aligned: mean over hypotheses
    joint_std: torch.Tensor  # (B, J) metres: spread of each joint over the hypotheses
    hypotheses: torch.Tensor  # (B, M, P, 3) metres
    gaps: torch.Tensor  # (S, B*M) DAT gap D_k at each step (metres², NaN when DAT is off)


def vertex_groups(coarse_rest: np.ndarray, num_groups: int, iters: int = 20) -> np.ndarray:
    """Deterministic k-means (farthest-point init) of the coarse rest vertices into regions."""
    pts = np.asarray(coarse_rest, dtype=np.float64)
    centres = [pts[np.argmax(pts[:, 1])]]  # start at the top of the head
    dist = np.linalg.norm(pts - centres[0], axis=1)
    for _ in range(1, num_groups):
        centres.append(pts[np.argmax(dist)])
        dist = np.minimum(dist, np.linalg.norm(pts - centres[-1], axis=1))
    c = np.stack(centres)
    for _ in range(iters):
        label = np.argmin(((pts[:, None] - c[None]) ** 2).sum(-1), axis=1)
        c = np.stack([pts[label == k].mean(0) if (label == k).any() else c[k] for k in range(num_groups)])
    return np.argmin(((pts[:, None] - c[None]) ** 2).sum(-1), axis=1)


class HMDiff(nn.Module):
    def __init__(self, cfg: HMDiffConfig = HMDiffConfig(), topology: Topology | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        topology = topology or Topology.load()
        self.num_coarse = topology.num_coarse
        self.num_joints = topology.num_joints
        groups = vertex_groups(topology.coarse_rest, cfg.denoiser.vertex_groups)
        joint_groups = cfg.denoiser.vertex_groups + np.arange(topology.num_joints)  # one token per joint
        self.encoder = ImageEncoder(cfg.encoder)
        self.denoiser = Denoiser(cfg.denoiser, torch.as_tensor(np.concatenate([groups, joint_groups])))
        self.scheduler = DDIMScheduler(cfg.scheduler)
        # f for DAT: prior joints from the points, half from the coarse regressor, half the joint points.
        q = list(PRIOR_JOINT_INDICES)
        f = np.zeros((len(q), self.num_points), np.float32)
        f[:, : self.num_coarse] = 0.5 * topology.joint_regressor[q]
        f[np.arange(len(q)), self.num_coarse + np.array(q)] = 0.5
        self.register_buffer("dat_map", torch.as_tensor(f))
        self.register_buffer("joint_regressor", torch.as_tensor(topology.joint_regressor))

    @property
    def num_points(self) -> int:
        return self.num_coarse + self.num_joints

    def split(self, points: torch.Tensor):
        """(coarse vertices, joints) from points ``(..., P, 3)``."""
        return points[..., : self.num_coarse, :], points[..., self.num_coarse :, :]

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """The denoiser on normalised points (training calls this)."""
        return self.denoiser(sample, timestep, image_tokens)

    @torch.no_grad()
    def sample(
        self,
        proxy: torch.Tensor,
        prior_xyz: torch.Tensor | None = None,
        prior_vis: torch.Tensor | None = None,
        steps: int = 4,
        dat: DATConfig = DATConfig(),
        hypotheses: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> SampleOutput:
        """Recover root-relative points for a batch of encoder inputs ``(B, C, S, S)``.

        ``prior_xyz`` ``(B, 24, 3)`` metres and ``prior_vis`` ``(B, 24)``: U for DAT (needed
        unless ``dat.mode == "off"``). ``hypotheses`` M: samples per input, averaged.
        ``noise`` ``(B*M, P, 3)``: the starting noise h_K (drawn from ``generator`` if None).
        """
        if proxy.dim() != 4 or proxy.shape[1] != self.cfg.encoder.in_channels:
            raise ValueError(
                f"proxy must have shape (B, {self.cfg.encoder.in_channels}, S, S), got {tuple(proxy.shape)}"
            )
        if not torch.isfinite(proxy).all():
            raise ValueError("proxy contains NaN or Inf values")
        if hypotheses < 1:
            raise ValueError(f"hypotheses must be >= 1, got {hypotheses}")
        use_dat = dat.mode != "off"
        if use_dat and (prior_xyz is None or prior_vis is None):
            raise ValueError("DAT needs the prior: pass prior_xyz (B, 24, 3) and prior_vis (B, 24), or dat mode 'off'")
        b, m = proxy.shape[0], hypotheses
        tokens = self.encoder(proxy).repeat_interleave(m, dim=0)  # (B*M, N, D)
        sched = self.scheduler
        sched.set_timesteps(steps)
        shape = (b * m, self.num_points, 3)
        if noise is None:
            x = torch.randn(shape, generator=generator, dtype=tokens.dtype, device=tokens.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(
                f"noise must have shape {shape} (inputs x hypotheses, points, 3), got {tuple(noise.shape)}"
            )
        else:
            x = noise.to(tokens)
        aligner = DAT(dat, self.dat_map, self.cfg.data_scale)
        if use_dat:
            prior = prior_xyz.to(tokens).repeat_interleave(m, dim=0)
            weights = aligner.weights(prior_vis.to(tokens).repeat_interleave(m, dim=0))
        gaps, first_gap = [], None
        for i, t in enumerate(sched.timesteps.tolist()):
            tt = torch.full((b * m,), t, dtype=torch.long, device=x.device)
            # full needs a later step to absorb its network-Jacobian direction: at 1 step it is fast
            full_step = dat.mode == "full" and steps > 1 and i < aligner.active_steps(steps)
            with torch.enable_grad() if full_step else contextlib.nullcontext():
                xg = x.detach().requires_grad_(full_step)
                x0, eps = sched.to_x0_eps(self.denoiser(xg, tt, tokens), tt, xg)
            if not use_dat:
                gaps.append(torch.full((b * m,), float("nan")))
                x = sched.step(x0, eps, t, x, eta=eta, generator=generator).prev_sample
                continue
            gap, _ = aligner.gap_and_grad(x0.detach(), prior, weights)
            first_gap = gap if first_gap is None else first_gap
            active = (gap / first_gap.clamp(min=1e-12) > dat.tau) & torch.tensor(i < aligner.active_steps(steps))
            rot = aligner.rotation(x0.detach(), prior, weights, active) if dat.rigid else None
            grad_h = None
            if full_step:  # ∇_{h_k} D(R x̂_0(h_k)) through the network, R held fixed
                with torch.enable_grad():
                    turned = x0 if rot is None else x0 @ rot.transpose(-1, -2)
                    grad_h = torch.autograd.grad(aligner.gap_and_grad(turned, prior, weights)[0].sum(), xg)[0]
            x0, eps = x0.detach(), eps.detach()
            if rot is not None:
                turned = x0 @ rot.transpose(-1, -2)
                a = sched.alphas_cumprod[t].to(x)
                eps = eps - (a.sqrt() / (1 - a).sqrt()) * (turned - x0)
                x0 = turned
            gap_now, grad_x0 = aligner.gap_and_grad(x0, prior, weights)
            x0, eps = aligner.align(x0, eps, x, sched.alphas_cumprod[t], gap_now, grad_x0, active, grad_h)
            gaps.append(gap)
            x = sched.step(x0, eps, t, x, eta=eta, generator=generator).prev_sample
        hyp = (x * self.cfg.data_scale).reshape(b, m, self.num_points, 3)
        joints = hyp[:, :, self.num_coarse :]
        return SampleOutput(
            points=hyp.mean(1),
            joint_std=joints.std(1, unbiased=False).norm(dim=-1) if m > 1 else torch.zeros(b, self.num_joints),
            hypotheses=hyp,
            gaps=torch.stack(gaps),
        )


ROOT = JOINT_INDEX["pelvis"]
