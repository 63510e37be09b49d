"""Frames as the pipeline takes them: RGB uint8 ``(H, W, 3)`` arrays, and the one error for
images that cannot be used (numpy and OpenCV only).

Every way in ends here: image files (:func:`hmdiff_ros.pipeline.io.read_image`), video
frames and ROS image messages (:func:`hmdiff_ros.ros.bridge.image_to_rgb`) are converted by
:func:`to_rgb8`, and the pipeline and the pose prior check what they are given with
:func:`check_image`. A failure is an :class:`ImageError` whose message names the image and
what is wrong.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_SIDE = 10000  # pixels; larger images are refused rather than exhausting memory
MIN_SIDE = 8  # pixels; the pose prior finds nobody in less


class ImageError(ValueError):
    """An image that cannot be decoded or used; the message names it and says why."""


def to_rgb8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Any decoded image, OpenCV's channel order (gray ``(H, W)`` or ``(H, W, 1)``, BGR,
    BGRA; uint8, uint16 scaled by 1/257, float in [0, 1]) -> RGB uint8 ``(H, W, 3)``,
    C-contiguous. ``name`` starts every error message."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageError(f"{name}: not a readable image")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: expected 1, 3 or 4 channels, got shape {image.shape}")
    if max(image.shape[:2]) > MAX_SIDE:
        raise ImageError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels is larger than {MAX_SIDE} on a side")
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}")
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[image.shape[2]]
    return np.ascontiguousarray(cv2.cvtColor(image, code))


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` itself if it is an RGB uint8 ``(H, W, 3)`` array of :data:`MIN_SIDE` to
    :data:`MAX_SIDE` pixels a side, else an :class:`ImageError` saying what was given. The
    pipeline and the pose prior check their ``image`` argument with it before they allocate
    anything (a 20000x20000 frame would take gigabytes on its way through)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}".strip()
        raise ImageError(f"{name} must be an RGB uint8 array of shape (H, W, 3), got {desc}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ImageError(
            f"{name} is too small ({image.shape[1]}x{image.shape[0]} pixels; need at least {MIN_SIDE}x{MIN_SIDE})"
        )
    if max(image.shape[:2]) > MAX_SIDE:
        raise ImageError(
            f"{name} is too large ({image.shape[1]}x{image.shape[0]} pixels; at most {MAX_SIDE} on a side)"
        )
    return image
