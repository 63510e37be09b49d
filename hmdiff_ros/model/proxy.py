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


def make_proxy(
    uv: np.ndarray, visibility: np.ndarray, mask: np.ndarray, valid: np.ndarray, cfg: ProxyConfig
) -> np.ndarray:
    """Encoder input ``(B, C, S, S)`` float32 from keypoints ``uv`` ``(B, J, 2)`` (crop pixels),
    ``visibility`` ``(B, J)`` in [0, 1], ``mask`` and ``valid`` ``(B, S, S)`` in [0, 1]."""
    s = cfg.crop_size
    b, j = visibility.shape
    if uv.shape != (b, j, 2) or j != len(PRIOR_JOINT_NAMES):
        raise ValueError(
            f"uv must have shape (B, {len(PRIOR_JOINT_NAMES)}, 2) matching visibility {visibility.shape}, got {uv.shape}"
        )
    if mask.shape != (b, s, s) or valid.shape != (b, s, s):
        raise ValueError(f"mask and valid must have shape (B, {s}, {s}), got {mask.shape} and {valid.shape}")
    grid = np.arange(s, dtype=np.float32)
    inv = -0.5 / cfg.heatmap_sigma**2
    gx = np.exp(inv * (grid - uv[..., 0:1].astype(np.float32)) ** 2)  # (B, J, S) separable Gaussian
    gy = np.exp(inv * (grid - uv[..., 1:2].astype(np.float32)) ** 2)
    on = (visibility >= cfg.min_visibility) & np.isfinite(uv).all(-1)
    gx = np.where(on[..., None], np.nan_to_num(gx), 0.0).astype(np.float32)
    out = np.empty((b, j + 2, s, s), np.float32)
    out[:, :j] = gy[..., :, None] * gx[..., None, :]  # (B, J, S, S), rows are v
    out[:, j] = mask
    out[:, j + 1] = valid
    return out
