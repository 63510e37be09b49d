"""Image encoders φ_I: a crop-aligned input -> a set of feature tokens f_I ``(B, N, D)``.

- ``proxy`` (default): a small CNN over the 26-channel proxy (keypoint heatmaps,
  silhouette, valid region; :mod:`hmdiff_ros.observation`), the same on synthetic and real
  images;
- ``rgb``: a CNN over the RGB crop, for users who train on real images.

Both end in an 8x8 grid of tokens with a learned position embedding.

:class:`PriorTokens` (with ``HMDiffConfig.prior_tokens``) adds one token per prior joint,
read from U and its visibility, so that the denoiser can keep what the prior gets right and
correct what it gets wrong; the denoiser's cross-attention reads the image tokens and these
together. With ``HMDiffConfig.prior_keypoints`` each token also reads its keypoint's position
in the crop, read off the keypoint's heatmap in the proxy (:func:`heatmap_keypoints`): the CNN
sees the heatmaps on an 8x8 grid of tokens, which loses the sub-pixel 2D a lifter reads
directly, and with both U and the 2D in one token the model can see where U disagrees with
the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hmdiff_ros.observation import NUM_PROXY_CHANNELS, ProxyConfig

ENCODERS = ("proxy", "rgb")


@dataclass(frozen=True)
class EncoderConfig:
    kind: str = "proxy"  # "proxy" or "rgb"
    width: int = 128  # token width D (= the denoiser's width)
    base_channels: int = 32  # channels after the first convolution
    input_size: int = 64  # crop side in pixels; 64 -> 8x8 tokens (three stride-2 stages)

    def __post_init__(self) -> None:
        if self.kind not in ENCODERS:
            raise ValueError(f"encoder kind must be one of {ENCODERS}, got {self.kind!r}")
        if self.input_size % 8 or self.input_size < 32:
            raise ValueError(f"input_size must be a multiple of 8 and >= 32, got {self.input_size}")

    @property
    def in_channels(self) -> int:
        return NUM_PROXY_CHANNELS if self.kind == "proxy" else 3

    @property
    def num_tokens(self) -> int:
        return (self.input_size // 8) ** 2


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class ImageEncoder(nn.Module):
    """``(B, C_in, S, S)`` -> tokens ``(B, (S/8)^2, D)``."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.base_channels
        self.stages = nn.Sequential(
            _block(cfg.in_channels, c, 2),  # S/2
            _block(c, 2 * c, 2),  # S/4
            _block(2 * c, 4 * c, 2),  # S/8
        )
        self.proj = nn.Linear(4 * c, cfg.width)
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.width))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feat = self.stages(image)  # (B, 4c, S/8, S/8)
        tokens = feat.flatten(2).transpose(1, 2)  # (B, N, 4c)
        return self.proj(tokens) + self.pos  # (B, N, D)


def heatmap_keypoints(heatmaps: torch.Tensor) -> torch.Tensor:
    """Keypoint positions ``(B, Q, 2)`` from the proxy's keypoint heatmaps ``(B, Q, S, S)``:
    each heatmap's centre of mass, in crop pixels divided by S, minus 0.5 (the crop's centre at
    the origin, as the lifter reads them); zero where a heatmap is empty (the keypoint is off).
    A Gaussian inside the crop gives its centre to float precision; one cut by the crop's edge
    is pulled inwards, the same in training and at run time."""
    s = heatmaps.shape[-1]
    grid = torch.arange(s, dtype=heatmaps.dtype, device=heatmaps.device)
    mass = heatmaps.sum((-2, -1))  # (B, Q)
    u = (heatmaps.sum(-2) * grid).sum(-1)  # (B, Q) columns
    v = (heatmaps.sum(-1) * grid).sum(-1)  # rows
    on = mass > 1e-3  # a heatmap inside the crop holds ~2 pi sigma^2 (14 at sigma 1.5)
    uv = torch.stack([u, v], dim=-1) / mass.clamp_min(1e-3)[..., None] / s - 0.5
    return torch.where(on[..., None], uv, torch.zeros_like(uv))


class PriorTokens(nn.Module):
    """U ``(B, Q, 3)`` metres (root-relative) and its visibilities ``(B, Q)`` -> one token per
    prior joint ``(B, Q, D)``. A joint is off (its coordinates read as zero) where its
    visibility is below ``min_visibility`` or U is not finite, as the proxy drops its heatmap;
    each token reads (U / ``data_scale``, visibility, on), with ``keypoints`` also the joint's
    2D position in the crop (:func:`heatmap_keypoints`), through a small MLP, plus a learned
    embedding of its joint."""

    def __init__(
        self,
        width: int,
        num_joints: int,
        data_scale: float,
        min_visibility: float = ProxyConfig.min_visibility,
        keypoints: bool = False,
    ) -> None:
        super().__init__()
        self.data_scale, self.min_visibility, self.keypoints = data_scale, min_visibility, keypoints
        self.proj = nn.Sequential(nn.Linear(7 if keypoints else 5, width), nn.SiLU(), nn.Linear(width, width))
        self.joint_embed = nn.Parameter(torch.zeros(1, num_joints, width))
        nn.init.normal_(self.joint_embed, std=0.02)

    def forward(self, prior_xyz: torch.Tensor, prior_vis: torch.Tensor, uv: torch.Tensor | None = None) -> torch.Tensor:
        """``uv`` ``(B, Q, 2)``: :func:`heatmap_keypoints` (needed with ``keypoints``)."""
        vis = torch.nan_to_num(prior_vis, nan=0.0).clamp(0, 1)
        on = (vis >= self.min_visibility) & torch.isfinite(prior_xyz).all(-1)  # (B, Q)
        xyz = torch.where(on[..., None], torch.nan_to_num(prior_xyz) / self.data_scale, torch.zeros_like(prior_xyz))
        parts = [xyz, vis[..., None], on[..., None].to(xyz.dtype)]  # (B, Q, 5)
        if self.keypoints:
            if uv is None:
                raise ValueError("these prior tokens read the keypoints: pass uv (B, Q, 2)")
            parts.append(uv.to(xyz))  # (B, Q, 7)
        return self.proj(torch.cat(parts, dim=-1)) + self.joint_embed
