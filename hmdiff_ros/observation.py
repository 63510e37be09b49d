"""What the model sees of one person: the same in training and at run time.

A pose prior reports a :class:`PriorPerson`: MediaPipe does on real images
(:mod:`hmdiff_ros.prior`), and its simulation does on synthetic ones
(:mod:`hmdiff_ros.data.observe`). Both sides turn that report into the model's input with the
functions of this module, so the encoder and DAT get the same tensors from either source:

1. **The keypoints the crop rests on** (:func:`crop_keypoints`). These are the prior's
   keypoints that are seen (visibility at least ``ProxyConfig.min_visibility``) and lie
   inside the image (:func:`in_image`: pixel centres ``0 <= u <= W - 1``, ``0 <= v <= H - 1``).
2. **The crop** (:func:`square_box`). It is a square box ``(cx, cy, size)`` centred on
   those keypoints' extent, with a side ``BOX_EXPAND`` times that extent. It is resampled to
   ``crop_size`` pixels by :func:`hmdiff_ros.camera.crop_affine`. At run time :func:`observe`
   builds it. In training :func:`crop_boxes` builds the same box, then jitters it.
3. **The encoder input** (:func:`make_proxy`). It has ``C = 24 + 2`` channels at
   ``crop_size`` pixels: one Gaussian heatmap per prior joint (zero below the visibility cut),
   the person's silhouette, and the part of the crop that lies inside the image.

Pixels are ``(u, v)``: u to the right, v down, pixel centres at integer coordinates (OpenCV's
convention; see :mod:`hmdiff_ros.camera`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hmdiff_ros.body.joints import PRIOR_JOINT_NAMES
from hmdiff_ros.camera import apply_affine, crop_affine

BOX_EXPAND = 1.25  # crop side / extent of the keypoints it rests on
MIN_BOX_PX = 16.0  # smallest crop side, image pixels
NUM_PROXY_CHANNELS = len(PRIOR_JOINT_NAMES) + 2  # heatmaps, silhouette, valid region


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


@dataclass
class PriorPerson:
    """One person as the prior sees them, in the prior joint set (``PRIOR_JOINT_NAMES``)."""

    uv: np.ndarray  # (24, 2) image pixels
    visibility: np.ndarray  # (24,) in [0, 1]
    xyz: np.ndarray  # (24, 3) metres, root-relative (pelvis), camera-aligned (x right, y down, z forward)
    mask: np.ndarray | None = None  # (H, W) float32 in [0, 1] over the whole image
    score: float = 1.0


@dataclass
class Observation:
    """What HMDiff reads for one person: the encoder input's parts (see :func:`make_proxy`)
    and, for DAT and the camera-frame placement, the prior's own output."""

    box: np.ndarray  # (3,) crop (cx, cy, size), image pixels
    uv: np.ndarray  # (24, 2) crop pixels
    visibility: np.ndarray  # (24,)
    mask: np.ndarray  # (S, S) float32
    valid: np.ndarray  # (S, S) float32
    prior_xyz: np.ndarray  # (24, 3) U for DAT
    prior_uv: np.ndarray  # (24, 2) image pixels


def in_image(uv: np.ndarray, image_size) -> np.ndarray:
    """``(..., J)`` bool: whether keypoints ``uv`` ``(..., J, 2)`` lie inside images of
    ``image_size`` ``(..., 2)`` (width, height), i.e. ``0 <= u <= W - 1`` and
    ``0 <= v <= H - 1``, the span of the pixel centres. NaN keypoints are outside."""
    size = np.asarray(image_size)[..., None, :]  # (..., 1, 2)
    return ((uv >= 0) & (uv <= size - 1)).all(-1)


def in_rect(uv: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """``(N, P)`` bool: whether points ``uv`` ``(N, P, 2)`` lie in rectangles ``rect``
    ``(N, 4)`` (u0, v0, u1, v1; a NaN rectangle holds nothing)."""
    with np.errstate(invalid="ignore"):
        return (
            (uv[..., 0] >= rect[:, None, 0])
            & (uv[..., 0] <= rect[:, None, 2])
            & (uv[..., 1] >= rect[:, None, 1])
            & (uv[..., 1] <= rect[:, None, 3])
        )


def crop_keypoints(uv: np.ndarray, visibility: np.ndarray, image_size, cfg: ProxyConfig) -> np.ndarray:
    """``(..., J)`` bool: the keypoints a crop rests on, those seen (``visibility`` at least
    ``cfg.min_visibility``) and inside the image (:func:`in_image`)."""
    return (np.asarray(visibility) >= cfg.min_visibility) & in_image(uv, image_size)


def square_box(
    uv: np.ndarray, valid: np.ndarray | None = None, expand: float = BOX_EXPAND, min_size: float = MIN_BOX_PX
) -> np.ndarray:
    """Square box ``(..., 3)`` = (cx, cy, size) around the valid keypoints ``(..., J, 2)``.

    The box is centred on the keypoints' extent and its side is ``expand`` times the larger
    extent (at least ``min_size``). Rows without any valid keypoint give NaN.
    """
    uv = np.asarray(uv, dtype=np.float64)
    valid = np.ones(uv.shape[:-1], bool) if valid is None else np.asarray(valid, bool)
    lo = np.where(valid[..., None], uv, np.inf).min(-2)
    hi = np.where(valid[..., None], uv, -np.inf).max(-2)
    with np.errstate(invalid="ignore"):
        centre = (lo + hi) / 2
        size = np.maximum((hi - lo).max(-1) * expand, min_size)
    box = np.concatenate([centre, size[..., None]], axis=-1)
    box[~valid.any(-1)] = np.nan
    return box


def observe(person: PriorPerson, image_size, cfg: ProxyConfig = ProxyConfig()) -> Observation | None:
    """The observation of a prior's person in an image of ``image_size`` (width, height), the
    run-time side of the contract. ``None`` when fewer than two keypoints are seen inside the
    image (no usable crop)."""
    width, height = int(image_size[0]), int(image_size[1])
    ok = crop_keypoints(person.uv, person.visibility, (width, height), cfg)
    if ok.sum() < 2:
        return None
    s = cfg.crop_size
    box = square_box(person.uv, ok)
    affine = crop_affine(box, s)  # (2, 3) image -> crop
    warp = lambda img: cv2.warpAffine(img, affine, (s, s), flags=cv2.INTER_LINEAR, borderValue=0.0)  # noqa: E731
    valid = warp(np.ones((height, width), np.float32))
    mask = warp(person.mask.astype(np.float32)) if person.mask is not None else np.zeros((s, s), np.float32)
    return Observation(
        box=box,
        uv=apply_affine(affine, person.uv).astype(np.float32),
        visibility=person.visibility.astype(np.float32),
        mask=mask,
        valid=(valid > 0.5).astype(np.float32),
        prior_xyz=person.xyz.astype(np.float32),
        prior_uv=person.uv.astype(np.float32),
    )


def crop_boxes(
    rng: np.random.Generator,
    prior_uv: np.ndarray,
    prior_vis: np.ndarray,
    image_size: np.ndarray,
    person_box: np.ndarray,
    jitter: float,
    cfg: ProxyConfig,
) -> np.ndarray:
    """Crops ``(N, 3)`` of ``N`` synthetic people, the training side of the contract: the box
    of :func:`observe` around the simulated prior's keypoints ``(N, 24, 2)`` (visibilities
    ``(N, 24)``) in images of ``image_size`` ``(N, 2)``, then jittered (centre by ``jitter``
    times the side, log-side by ``jitter``). Where the prior sees fewer than two keypoints
    inside the image, the box rests on the ground-truth ``person_box`` ``(N, 4)`` (u0, v0, u1, v1).
    """
    ok = crop_keypoints(prior_uv, prior_vis, image_size, cfg)
    box = square_box(prior_uv, ok)
    fallback = np.isnan(box[:, 0]) | (ok.sum(1) < 2)
    gt = np.concatenate(
        [
            (person_box[:, :2] + person_box[:, 2:]) / 2,
            (person_box[:, 2:] - person_box[:, :2]).max(1, keepdims=True) * BOX_EXPAND,
        ],
        1,
    )
    box[fallback] = gt[fallback]
    n = len(box)
    box[:, :2] += jitter * box[:, 2:] * rng.standard_normal((n, 2))
    box[:, 2] *= np.exp(jitter * rng.standard_normal(n))
    return box


SUBNORMAL = float(np.finfo(np.float32).tiny)  # float32 values below this are subnormal


def make_proxy(uv, visibility, mask, valid, cfg: ProxyConfig):
    """Encoder input ``(B, C, S, S)`` float32 from keypoints ``uv`` ``(B, J, 2)`` (crop pixels),
    ``visibility`` ``(B, J)`` in [0, 1], ``mask`` and ``valid`` ``(B, S, S)`` in [0, 1] (or
    uint8 0..255 / bool). Works on numpy arrays and on torch tensors (same device out).

    Channels: one Gaussian heatmap per prior joint (zero when its visibility is below
    ``cfg.min_visibility`` or it is not finite), the silhouette ``mask``, the ``valid`` region.
    """
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
    heat = gy[..., :, None] * gx[..., None, :]  # (B, J, S, S), rows are v
    # the Gaussians' far tails are subnormal floats, on which a CPU runs the encoder's
    # convolutions 4x slower (3.1 ms against 0.8 with ONNX Runtime): flushed to zero
    out[:, :j] = xp.where(heat < SUBNORMAL, 0.0, heat)
    out[:, j] = _unit(mask, cast)
    out[:, j + 1] = _unit(valid, cast)
    return out


def _unit(image, cast):
    """Masks as float in [0, 1]: uint8 images are 0..255, bool and float pass through."""
    return cast(image) / 255.0 if str(image.dtype).endswith("uint8") else cast(image)
