"""Small CPU mesh renderer (painter's algorithm, flat Lambert shading) with OpenCV.

Enough for overlays, contact sheets and debug images at a few hundred to a few thousand
triangles; not a rasteriser for training data. Cameras are pinhole, points in the camera
optical frame (x right, y down, z forward, metres).
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from hmdiff_ros.camera import project

LIGHT_DIR = np.array([0.3, -0.5, -1.0]) / np.linalg.norm([0.3, -0.5, -1.0])  # towards the camera, from above


def render_mesh(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    color: Tuple[int, int, int] = (90, 160, 230),
    alpha: float = 1.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Draw a mesh ``vertices (V, 3)`` (camera frame) over a BGR ``image`` (copied).

    Faces behind the camera and back faces (outward normals pointing away from the camera)
    are skipped. ``mask``, if given (H, W uint8), receives the mesh silhouette.
    """
    out = image.copy()
    layer = out.copy()
    tri = vertices[faces]  # (F, 3, 3)
    keep = (tri[..., 2] > 0.05).all(1)
    tri = tri[keep]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    front = np.einsum("fd,fd->f", normal, tri.mean(1)) < 0  # facing the camera at the origin
    tri, normal = tri[front], normal[front]
    shade = np.clip(normal @ LIGHT_DIR, 0.0, 1.0) * 0.7 + 0.3  # (F,)
    order = np.argsort(-tri[..., 2].mean(1))  # far to near
    pix = np.round(project(tri, K) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    base = np.array(color, dtype=float)
    for f in order:
        c = tuple(int(v) for v in base * shade[f])
        cv2.fillConvexPoly(layer, pix[f], c, shift=4)
        cv2.polylines(layer, [pix[f]], True, c, 1, shift=4)  # closes the seams between triangles
        if mask is not None:
            cv2.fillConvexPoly(mask, pix[f], 255, shift=4)
    drawn = np.zeros(out.shape[:2], np.uint8)
    if len(pix):
        cv2.fillPoly(drawn, list(pix), 1, shift=4)
    sel = drawn.astype(bool)
    out[sel] = (alpha * layer[sel] + (1 - alpha) * out[sel]).astype(out.dtype)
    return out
