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

from hmdiff_ros import defaults
from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.model.dat import DAT, DATConfig
from hmdiff_ros.model.denoiser import Denoiser, DenoiserConfig
from hmdiff_ros.model.encoder import EncoderConfig, ImageEncoder, PriorTokens, heatmap_keypoints
from hmdiff_ros.model.scheduler import DDIMScheduler, SchedulerConfig


@dataclass(frozen=True)
class HMDiffConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    data_scale: float = 0.5  # metres per normalised unit: bodies span about +-2 units
    topology: str = "anny"  # the topology asset the points follow
    prior_tokens: bool = False  # the denoiser also reads U and its visibilities, as one token per prior joint
    prior_keypoints: bool = False  # the prior tokens also read each keypoint's 2D, off its heatmap (needs prior_tokens)
    prior_residual: bool = False  # x̂_0 = the denoiser's output + a linear read of U (PriorBase): a correction to U

    def __post_init__(self) -> None:
        if self.prior_keypoints and not self.prior_tokens:
            raise ValueError("prior_keypoints needs prior_tokens: the keypoints are read into the prior tokens")
        if self.prior_residual and (not self.prior_tokens or self.scheduler.prediction_type != "sample"):
            raise ValueError("prior_residual needs prior_tokens and prediction_type 'sample' (it adds to x̂_0)")
        if self.prior_keypoints and self.encoder.kind != "proxy":
            raise ValueError("prior_keypoints needs the proxy encoder: the keypoints are read off its heatmaps")

    @classmethod
    def from_dict(cls, d: Dict) -> "HMDiffConfig":
        return cls(
            encoder=EncoderConfig(**d["encoder"]),
            denoiser=DenoiserConfig(**d["denoiser"]),
            scheduler=SchedulerConfig(**d["scheduler"]),
            data_scale=d["data_scale"],
            topology=d["topology"],
            prior_tokens=bool(d.get("prior_tokens", False)),  # checkpoints before it had none
            prior_keypoints=bool(d.get("prior_keypoints", False)),
            prior_residual=bool(d.get("prior_residual", False)),
        )

    def to_dict(self) -> Dict:
        return asdict(self)


@dataclass
class SampleOutput:
    points: torch.Tensor  # (B, P, 3) metres, root-relative, camera-aligned: mean over hypotheses
    joint_std: torch.Tensor  # (B, J) metres: spread of each joint over the hypotheses
    hypotheses: torch.Tensor  # (B, M, P, 3) metres
    gaps: torch.Tensor  # (S, B*M) DAT gap D_k at each step (metres², NaN when DAT is off)

    @classmethod
    def from_rows(cls, rows: torch.Tensor, people: int, num_coarse: int, gaps: torch.Tensor) -> "SampleOutput":
        """The output of a sampler: ``rows`` ``(B*M, P, 3)`` final points in metres, each
        person's M hypotheses next to each other (coarse vertices, then joints); ``gaps`` ``(S, B*M)``."""
        hyp = rows.reshape(people, -1, *rows.shape[1:])  # (B, M, P, 3)
        joints = hyp[:, :, num_coarse:]  # (B, M, J, 3)
        if hyp.shape[1] > 1:
            joint_std = joints.std(1, unbiased=False).norm(dim=-1)  # (B, J)
        else:
            joint_std = torch.zeros(people, joints.shape[2], dtype=rows.dtype, device=rows.device)
        return cls(points=hyp.mean(1), joint_std=joint_std, hypotheses=hyp, gaps=gaps)

    def cpu(self) -> "SampleOutput":
        """Every tensor as float32 on the CPU."""
        return SampleOutput(*(t.float().cpu() for t in (self.points, self.joint_std, self.hypotheses, self.gaps)))


def rows(t: torch.Tensor, m: int) -> torch.Tensor:
    """``t`` ``(B, ...)`` with each row repeated ``m`` times, the copies next to each other
    ``(B*M, ...)`` (as ``repeat_interleave``, written with ``expand`` so that an ONNX export
    traces ``m`` from a tensor's size instead of fixing it)."""
    return t.unsqueeze(1).expand(t.shape[0], m, *t.shape[1:]).reshape(-1, *t.shape[1:])


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


class PriorBase(nn.Module):
    """The points U alone implies, ``(B, P, 3)`` normalised: a learned mean plus a learned linear
    map of U's joints (``mean + W U``, each coordinate alike; joints that are off read as zero,
    as in :class:`~hmdiff_ros.model.encoder.PriorTokens`). With ``HMDiffConfig.prior_residual``
    the denoiser predicts x̂_0 minus this: a correction to what the prior says, which is zero
    work where the prior is right (a lifter reads U the same way). Both start at zero, so a
    checkpoint without it fine-tunes into one with it from its own outputs."""

    def __init__(self, num_points: int, num_joints: int, data_scale: float, min_visibility: float = 0.5) -> None:
        super().__init__()
        self.data_scale, self.min_visibility = data_scale, min_visibility
        self.mean = nn.Parameter(torch.zeros(num_points, 3))
        self.weight = nn.Parameter(torch.zeros(num_points, num_joints))

    def forward(self, prior_xyz: torch.Tensor, prior_vis: torch.Tensor) -> torch.Tensor:
        vis = torch.nan_to_num(prior_vis, nan=0.0)
        on = (vis >= self.min_visibility) & torch.isfinite(prior_xyz).all(-1)  # (B, Q)
        xyz = torch.where(on[..., None], torch.nan_to_num(prior_xyz) / self.data_scale, torch.zeros_like(prior_xyz))
        return self.mean + torch.matmul(self.weight, xyz)  # (B, P, 3)


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
        self.prior_encoder = (
            PriorTokens(cfg.encoder.width, len(PRIOR_JOINT_INDICES), cfg.data_scale, keypoints=cfg.prior_keypoints)
            if cfg.prior_tokens
            else None
        )
        self.denoiser = Denoiser(cfg.denoiser, torch.as_tensor(np.concatenate([groups, joint_groups])))
        self.prior_base = (
            PriorBase(self.num_coarse + self.num_joints, len(PRIOR_JOINT_INDICES), cfg.data_scale)
            if cfg.prior_residual
            else None
        )
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

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, image_tokens: torch.Tensor, base: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The network's output on normalised points (training calls this): the denoiser on
        ``image_tokens`` (:meth:`encode`'s) plus ``base`` (:meth:`prior_offset`'s, with
        ``cfg.prior_residual``)."""
        out = self.denoiser(sample, timestep, image_tokens)
        return out if base is None else out + base

    def prior_offset(self, prior_xyz: torch.Tensor | None, prior_vis: torch.Tensor | None) -> torch.Tensor | None:
        """What x̂_0 adds to the denoiser's output ``(B, P, 3)`` normalised (:class:`PriorBase`),
        or None without ``cfg.prior_residual``."""
        if self.prior_base is None:
            return None
        return self.prior_base(prior_xyz, prior_vis)

    def encode(
        self, proxy: torch.Tensor, prior_xyz: torch.Tensor | None = None, prior_vis: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the denoiser's cross-attention reads ``(B, N, D)``: the image tokens f_I, then,
        with ``cfg.prior_tokens``, one token per prior joint (U ``(B, 24, 3)`` metres and its
        visibilities ``(B, 24)``, both needed then; with ``cfg.prior_keypoints`` they also read
        the keypoints' 2D off the proxy's heatmaps)."""
        tokens = self.encoder(proxy)
        if self.prior_encoder is None:
            return tokens
        if prior_xyz is None or prior_vis is None:
            raise ValueError("this model reads the prior: pass prior_xyz (B, 24, 3) and prior_vis (B, 24)")
        uv = heatmap_keypoints(proxy[:, : len(PRIOR_JOINT_INDICES)]) if self.cfg.prior_keypoints else None
        return torch.cat([tokens, self.prior_encoder(prior_xyz.to(tokens), prior_vis.to(tokens), uv)], dim=1)

    def check_inputs(
        self,
        proxy: torch.Tensor,
        prior_xyz: torch.Tensor | None,
        prior_vis: torch.Tensor | None,
        dat: DATConfig,
        hypotheses: int,
        noise: torch.Tensor | None,
    ) -> None:
        """The checks of :meth:`sample`'s inputs (every backend's ``sample`` runs them): a
        ``ValueError`` naming what is wrong."""
        channels = self.cfg.encoder.in_channels
        if proxy.dim() != 4 or proxy.shape[1] != channels:
            raise ValueError(f"proxy must have shape (B, {channels}, S, S), got {tuple(proxy.shape)}")
        # on the CPU through numpy: a PyTorch reduction this size wakes PyTorch's thread pool, whose
        # spinning threads then slow an ONNX Runtime call that follows (2.5 ms of 14.5 measured)
        finite = (
            np.isfinite(proxy.detach().numpy()).all() if proxy.device.type == "cpu" else torch.isfinite(proxy).all()
        )
        if not finite:
            raise ValueError("proxy contains NaN or Inf values")
        if hypotheses < 1:
            raise ValueError(f"hypotheses must be >= 1, got {hypotheses}")
        if dat.mode != "off" and (prior_xyz is None or prior_vis is None):
            raise ValueError("DAT needs the prior: pass prior_xyz (B, 24, 3) and prior_vis (B, 24), or dat mode 'off'")
        if self.cfg.prior_tokens and (prior_xyz is None or prior_vis is None):
            raise ValueError("this model reads the prior: pass prior_xyz (B, 24, 3) and prior_vis (B, 24)")
        shape = (proxy.shape[0] * hypotheses, self.num_points, 3)
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(
                f"noise must have shape {shape} (inputs x hypotheses, points, 3), got {tuple(noise.shape)}"
            )

    @torch.no_grad()
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
        check: bool = True,
    ) -> SampleOutput:
        """Recover root-relative points for a batch of encoder inputs ``(B, C, S, S)``.

        ``prior_xyz`` ``(B, 24, 3)`` metres and ``prior_vis`` ``(B, 24)``: U for DAT (needed
        unless ``dat.mode == "off"``). ``hypotheses`` M: samples per input, averaged.
        ``noise`` ``(B*M, P, 3)``: the starting noise h_K (drawn from ``generator`` if None).
        ``check=False`` skips :meth:`check_inputs` (a caller that checked them already, e.g. before
        a CUDA graph capture, where reading a GPU value back is not allowed).
        """
        if check:
            self.check_inputs(proxy, prior_xyz, prior_vis, dat, hypotheses, noise)
        b, m = proxy.shape[0], hypotheses
        tokens = self.encode(proxy, prior_xyz, prior_vis)  # (B, N, D) f_I (+ U): read once for the M samples
        base = self.prior_offset(prior_xyz, prior_vis)  # (B, P, 3) or None: x̂_0 is a correction to it
        base = None if base is None else rows(base.to(tokens), m)
        if noise is None:
            noise = torch.randn(
                (b * m, self.num_points, 3), generator=generator, dtype=tokens.dtype, device=tokens.device
            )
        x = noise.to(tokens)  # (B*M, P, 3) h_K
        aligner = None if dat.mode == "off" else DAT(dat, self.dat_map, self.cfg.data_scale)
        if aligner is not None:
            prior = rows(prior_xyz.to(tokens), m)  # (B*M, 24, 3) U, metres
            weights = aligner.weights(rows(prior_vis.to(tokens), m))  # (B*M, 24)
        self.scheduler.set_timesteps(steps)
        gaps = []
        for i, t in enumerate(self.scheduler.timesteps.tolist()):
            # 1. predict (x̂_0, ε̂); full DAT differentiates through this call
            track = aligner is not None and aligner.differentiates(i, steps)
            with torch.enable_grad() if track else contextlib.nullcontext():
                h = x.detach().requires_grad_(track)  # (B*M, P, 3) h_k
                timestep = torch.full((b * m,), t, dtype=torch.long, device=x.device)
                # t as an int: the scheduler's coefficients are Python floats, no table crosses to the device
                x0, eps = self.scheduler.to_x0_eps(self(h, timestep, tokens, base), t, h)
            # 2. DAT edits (x̂_0, ε̂) towards the prior
            if aligner is None:
                gaps.append(torch.full((b * m,), float("nan"), device=x.device))
            else:
                out = aligner.guide(self.scheduler, i, t, h, x0, eps, prior, weights, gaps[0] if gaps else None)
                x0, eps = out.pred_original_sample, out.pred_epsilon
                gaps.append(out.gap)
            # 3. h_k -> h_{k-1}
            x = self.scheduler.step(x0, eps, t, x, eta=eta, generator=generator).prev_sample
        return SampleOutput.from_rows(x * self.cfg.data_scale, b, self.num_coarse, torch.stack(gaps))


ROOT = JOINT_INDEX["pelvis"]
