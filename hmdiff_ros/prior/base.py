"""The pose prior φ_P behind a detector-agnostic interface, and the observation it gives HMDiff.

A prior reports, for one person, landmarks in image pixels with visibilities, root-relative
metric 3D joints in camera-aligned axes (x right, y down, z forward) and optionally a person
mask over the image. :func:`observe` turns that into exactly what the synthetic engine gives
the model (:mod:`hmdiff_ros.data.observe`): keypoints of ``PRIOR_JOINT_NAMES`` in the crop,
the crop box, the mask and valid region in the crop, and U for DAT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from hmdiff_ros.body.joints import PRIOR_JOINT_NAMES
from hmdiff_ros.camera import crop_affine, square_box
from hmdiff_ros.model.proxy import ProxyConfig


@dataclass
class PriorPerson:
    """One person as the prior sees them, in the prior joint set (``PRIOR_JOINT_NAMES``)."""

    uv: np.ndarray  # (24, 2) image pixels
    visibility: np.ndarray  # (24,) in [0, 1]
    xyz: np.ndarray  # (24, 3) metres, root-relative (pelvis), camera-aligned
    mask: np.ndarray | None = None  # (H, W) float32 in [0, 1] over the whole image
    score: float = 1.0


class PosePrior(Protocol):
    """A pose estimator: ``detect`` returns the person in an RGB uint8 image (optionally
    inside a box ``(u0, v0, u1, v1)``), or ``None`` when it sees nobody."""

    def detect(self, image: np.ndarray, box: np.ndarray | None = None) -> PriorPerson | None: ...

    def close(self) -> None: ...


@dataclass
class Observation:
    """What HMDiff reads for one person (see :mod:`hmdiff_ros.model.proxy`)."""

    box: np.ndarray  # (3,) crop (cx, cy, size), image pixels
    uv: np.ndarray  # (24, 2) crop pixels
    visibility: np.ndarray  # (24,)
    mask: np.ndarray  # (S, S) float32
    valid: np.ndarray  # (S, S) float32
    prior_xyz: np.ndarray  # (24, 3) U for DAT
    prior_uv: np.ndarray  # (24, 2) image pixels


def observe(person: PriorPerson, image_size, cfg: ProxyConfig = ProxyConfig()) -> Observation | None:
    """Crop and resample the prior's output like the synthetic engine does; ``None`` when
    fewer than two keypoints are visible inside the image (no usable crop)."""
    width, height = int(image_size[0]), int(image_size[1])
    inside = (person.uv >= 0).all(1) & (person.uv[:, 0] <= width - 1) & (person.uv[:, 1] <= height - 1)
    ok = (person.visibility >= cfg.min_visibility) & inside
    if ok.sum() < 2:
        return None
    box = square_box(person.uv, ok)
    affine = crop_affine(box, cfg.crop_size)  # (2, 3) image -> crop
    s = cfg.crop_size
    uv_crop = person.uv @ affine[:, :2].T + affine[:, 2]
    warp = lambda img: cv2.warpAffine(img, affine, (s, s), flags=cv2.INTER_LINEAR, borderValue=0.0)  # noqa: E731
    valid = warp(np.ones((height, width), np.float32))
    mask = warp(person.mask.astype(np.float32)) if person.mask is not None else np.zeros((s, s), np.float32)
    return Observation(
        box=box,
        uv=uv_crop.astype(np.float32),
        visibility=person.visibility.astype(np.float32),
        mask=mask,
        valid=(valid > 0.5).astype(np.float32),
        prior_xyz=person.xyz.astype(np.float32),
        prior_uv=person.uv.astype(np.float32),
    )


NUM_PRIOR_JOINTS = len(PRIOR_JOINT_NAMES)
