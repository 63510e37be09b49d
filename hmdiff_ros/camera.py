"""Pinhole camera geometry, shared by data generation and inference.

Frames: the camera optical frame (REP-103/105): x right, y down, z forward, metres.
Pixel coordinates: (u, v), u to the right, v down, pixel centres at integer coordinates
(OpenCV's convention).

A crop is a square box ``(cx, cy, size)`` in pixels, resampled to ``crop_size`` pixels by the
affine map of :func:`crop_affine`. The box a person's crop gets is chosen in
:mod:`hmdiff_ros.observation`.
"""

from __future__ import annotations

import numpy as np

from hmdiff_ros import defaults


def intrinsics_from_fov(width: int, height: int, hfov_deg: float = defaults.HFOV_DEG) -> np.ndarray:
    """``(3, 3)`` K for an image of ``width`` x ``height`` with the given horizontal FOV."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not defaults.HFOV_RANGE[0] < hfov_deg < defaults.HFOV_RANGE[1]:
        raise ValueError(
            f"hfov_deg must be between {defaults.HFOV_RANGE[0]} and {defaults.HFOV_RANGE[1]} degrees, got {hfov_deg}"
        )
    f = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def check_intrinsics(K, width: int, height: int, name: str = "K") -> np.ndarray:
    """``K`` as a float64 ``(3, 3)`` pinhole matrix if it is plausible for a ``width`` x
    ``height`` image, else a ``ValueError`` naming ``name`` and what was expected.

    Plausible: finite, last row ``0 0 1``, positive focal lengths whose horizontal field of
    view lies within ``defaults.HFOV_RANGE`` (the vertical one below its top), pixels no more
    than 5:1 from square, no more skew than focal length, and the principal point inside the
    image (a quarter of its size of margin on each side). Intrinsics outside these bounds put
    people behind the camera or kilometres away.
    """
    try:
        K = np.array(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 3x3 matrix of numbers, got {type(K).__name__}") from None
    if K.size == 9:
        K = K.reshape(3, 3)
    if K.shape != (3, 3):
        raise ValueError(f"{name} must be a finite 3x3 intrinsics matrix, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError(f"{name} must be a finite 3x3 intrinsics matrix; it holds NaN or infinity")
    (fx, s, cx), (zero, fy, cy), last = K
    why = None
    if zero != 0 or not np.allclose(last, (0.0, 0.0, 1.0)):
        why = "its last two rows must be [0, fy, cy] and [0, 0, 1]"
    elif fx <= 0 or fy <= 0:
        why = "its focal lengths must be positive"
    elif not 0.2 <= fx / fy <= 5.0 or abs(s) > fx:
        why = "its pixels must be no more than 5:1 from square, with |skew| <= fx"
    else:
        lo, hi = np.deg2rad(defaults.HFOV_RANGE)
        fovs = 2 * np.arctan2([width / 2, height / 2], [fx, fy])
        if not lo < fovs[0] < hi or fovs[1] >= hi:
            why = (
                f"its fields of view ({np.rad2deg(fovs[0]):.2f} x {np.rad2deg(fovs[1]):.2f} degrees) must be "
                f"between {defaults.HFOV_RANGE[0]} and {defaults.HFOV_RANGE[1]} degrees across, under {defaults.HFOV_RANGE[1]} down"
            )
        elif not (-width / 4 <= cx <= width * 1.25 and -height / 4 <= cy <= height * 1.25):
            why = f"its principal point ({cx:.1f}, {cy:.1f}) must lie within the {width}x{height} image"
    if why:
        raise ValueError(
            f"{name} must be a finite 3x3 intrinsics matrix plausible for a {width}x{height} image: {why}; "
            f"got {np.round(K, 3).tolist()}"
        )
    return K


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection: camera-frame points ``(..., 3)`` -> pixels ``(..., 2)``.

    ``K`` is ``(3, 3)`` or batched ``(..., 3, 3)`` matching the points' leading dimensions
    (with one extra point axis). Points at or behind the camera are clamped to z = 1 mm.
    """
    K = np.asarray(K)
    z = np.clip(points[..., 2:3], 1e-3, None)
    if K.ndim == 2:
        f, c = K[[0, 1], [0, 1]], K[[0, 1], [2, 2]]
    else:
        f, c = K[..., None, [0, 1], [0, 1]], K[..., None, [0, 1], [2, 2]]
    return points[..., :2] / z * f + c


def unproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Inverse of :func:`project` for ``(..., 2)`` pixels at ``(...)`` depths (metres)."""
    f, c = K[[0, 1], [0, 1]], K[[0, 1], [2, 2]]
    xy = (uv - c) / f * depth[..., None]
    return np.concatenate([xy, depth[..., None]], axis=-1)


def crop_affine(box: np.ndarray, crop_size: int) -> np.ndarray:
    """``(..., 2, 3)`` affine maps from image pixels to crop pixels for boxes ``(..., 3)``."""
    box = np.asarray(box, dtype=np.float64)
    scale = crop_size / box[..., 2]
    out = np.zeros(box.shape[:-1] + (2, 3))
    out[..., 0, 0] = out[..., 1, 1] = scale
    out[..., :, 2] = (crop_size - 1) / 2 - scale[..., None] * box[..., :2]
    return out


def apply_affine(affine: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Apply ``(..., 2, 3)`` affine maps to points ``(..., J, 2)``."""
    return np.einsum("...ij,...kj->...ki", affine[..., :2], uv) + affine[..., None, :, 2]


def solve_translation(points: np.ndarray, uv: np.ndarray, weights: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame translation ``T`` (3,) that places root-relative ``points`` ``(J, 3)`` so
    that they project onto ``uv`` ``(J, 2)`` (full-perspective, as CLIFF argues over a
    crop-only weak perspective).

    For each point, ``u - c_x = f_x (X + x_i) / (Z + z_i)`` is linear in T:
    ``f_x X - (u_i - c_x) Z = (u_i - c_x) z_i - f_x x_i`` (and the same for v), solved by
    weighted least squares. Raises ``ValueError`` with fewer than two weighted points.
    """
    w = np.asarray(weights, dtype=np.float64)
    if (w > 0).sum() < 2:
        raise ValueError(f"solve_translation needs at least 2 points with weight > 0, got {(w > 0).sum()}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    du, dv = uv[:, 0] - cx, uv[:, 1] - cy
    zeros = np.zeros_like(du)
    a = np.concatenate(
        [np.stack([np.full_like(du, fx), zeros, -du], 1), np.stack([zeros, np.full_like(dv, fy), -dv], 1)]
    )
    b = np.concatenate([du * points[:, 2] - fx * points[:, 0], dv * points[:, 2] - fy * points[:, 1]])
    sw = np.sqrt(np.concatenate([w, w]))
    t, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
    return t
