"""The ``proxy`` encoder's input: keypoint heatmaps + silhouette + valid region, in the crop.

Both the synthetic engine and the real-image pipeline produce the same *observation* of a
person (2D keypoints of ``PRIOR_JOINT_NAMES`` in crop pixels with visibilities, a soft
silhouette mask and the part of the crop that lies inside the image) and turn it into the
encoder input with :func:`make_proxy`, so training and inference see identical tensors.

Channels (``C = 24 + 2``): one Gaussian heatmap per prior joint (zero when its visibility is
below ``min_visibility``), the silhouette, the valid-image region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmdiff_ros.body.joints import PRIOR_JOINT_NAMES

NUM_PROXY_CHANNELS = len(PRIOR_JOINT_NAMES) + 2


@dataclass(frozen=True)
class ProxyConfig:
    crop_size: int = 64  # the encoder's input resolution (pixels)
    heatmap_sigma: float = 1.5  # Gaussian std of a keypoint heatmap, crop pixels
    min_visibility: float = 0.5  # keypoints below are treated as missing (MediaPipe's usual cut)

    def __post_init__(self) -> None:
        if not 16 <= self.crop_size <= 512:
            raise ValueError(f"crop_size must be in [16, 512], got {self.crop_size}")
        if not 0.3 <= self.heatmap_sigma <= 16:
            raise ValueError(f"heatmap_sigma must be in [0.3, 16] pixels, got {self.heatmap_sigma}")
        if not 0.0 <= self.min_visibility <= 1.0:
            raise ValueError(f"min_visibility must be in [0, 1], got {self.min_visibility}")


def make_proxy(uv, visibility, mask, valid, cfg: ProxyConfig):
    """Encoder input ``(B, C, S, S)`` float32 from keypoints ``uv`` ``(B, J, 2)`` (crop pixels),
    ``visibility`` ``(B, J)`` in [0, 1], ``mask`` and ``valid`` ``(B, S, S)`` in [0, 1] (or
    uint8 0..255 / bool). Works on numpy arrays and on torch tensors (same device out)."""
    s = cfg.crop_size
    b, j = visibility.shape
    if tuple(uv.shape) != (b, j, 2) or j != len(PRIOR_JOINT_NAMES):
        raise ValueError(
            f"uv must have shape (B, {len(PRIOR_JOINT_NAMES)}, 2) matching visibility {tuple(visibility.shape)}, got {tuple(uv.shape)}"
        )
    if tuple(mask.shape) != (b, s, s) or tuple(valid.shape) != (b, s, s):
        raise ValueError(
            f"mask and valid must have shape (B, {s}, {s}), got {tuple(mask.shape)} and {tuple(valid.shape)}"
        )
    if isinstance(uv, np.ndarray):
        xp = np
        grid = np.arange(s, dtype=np.float32)
        cast = lambda a: np.asarray(a).astype(np.float32)  # noqa: E731
        empty = lambda shape: np.empty(shape, np.float32)  # noqa: E731
    else:
        import torch

        xp, f32 = torch, torch.float32
        grid = torch.arange(s, dtype=f32, device=uv.device)
        cast = lambda a: a.to(f32)  # noqa: E731
        empty = lambda shape: torch.empty(shape, dtype=f32, device=uv.device)  # noqa: E731
    uv, visibility = cast(uv), cast(visibility)
    inv = -0.5 / cfg.heatmap_sigma**2
    on = (visibility >= cfg.min_visibility) & xp.isfinite(uv).all(-1)  # (B, J)
    u = xp.where(on[..., None], xp.nan_to_num(uv), -1e4)  # off joints: far outside, heatmap 0
    gx = xp.exp(inv * (grid - u[..., 0:1]) ** 2)  # (B, J, S) separable Gaussian
    gy = xp.exp(inv * (grid - u[..., 1:2]) ** 2)
    out = empty((b, j + 2, s, s))
    out[:, :j] = gy[..., :, None] * gx[..., None, :]  # (B, J, S, S), rows are v
    out[:, j] = _unit(mask, cast)
    out[:, j + 1] = _unit(valid, cast)
    return out


def _unit(image, cast):
    """Masks as float in [0, 1]: uint8 images are 0..255, bool and float pass through."""
    return cast(image) / 255.0 if str(image.dtype).endswith("uint8") else cast(image)
