"""Small CPU mesh renderer (z-buffer, flat Lambert shading) with numpy and OpenCV.

Enough for overlays, contact sheets and debug images at a few hundred to a few thousand
triangles; not a rasteriser for training data. Cameras are pinhole, points in the camera
optical frame (x right, y down, z forward, metres).
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from hmdiff_ros.camera import project

RASTER_CHUNK = 1 << 22  # candidate pixels tested at once by :func:`rasterize`
LIGHT_DIR = np.array([0.3, -0.5, -1.0]) / np.linalg.norm([0.3, -0.5, -1.0])  # towards the camera, from above


RENDER_MAX_SIDE = 480  # pixels: the longest side at which render_mesh rasterises a mesh's box


def render_mesh(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    color: Tuple[int, int, int] = (90, 160, 230),
    alpha: float = 1.0,
    mask: np.ndarray | None = None,
    max_side: int = RENDER_MAX_SIDE,
) -> np.ndarray:
    """Draw a mesh ``vertices (V, 3)`` (camera frame) over a BGR ``image`` (copied).

    Z-buffered (:func:`rasterize`, back faces culled, faces behind the camera dropped) and
    flat-shaded, within the mesh's box in the image; a box longer than ``max_side`` pixels is
    rasterised at that size and scaled up smoothly (shading and coverage), so the cost does
    not grow with the image. ``mask``, if given (H, W uint8),
    receives the mesh silhouette (255).
    """
    out = image.copy()
    h, w = out.shape[:2]
    vertices = np.asarray(vertices, dtype=np.float64)
    front = vertices[vertices[:, 2] > 0.05]
    if not len(front):
        return out
    uv = project(front, K)
    u0, v0 = np.maximum(np.floor(uv.min(0)).astype(int) - 1, 0)
    u1, v1 = np.minimum(np.ceil(uv.max(0)).astype(int) + 2, [w, h])
    if u1 <= u0 or v1 <= v0:
        return out
    bw, bh = u1 - u0, v1 - v0
    scale = min(1.0, max_side / max(bw, bh))
    sw, sh = max(1, int(round(bw * scale))), max(1, int(round(bh * scale)))
    k = np.array(K, dtype=np.float64)
    k[0, :] *= sw / bw
    k[1, :] *= sh / bh
    k[0, 2] -= u0 * sw / bw
    k[1, 2] -= v0 * sh / bh
    # pixel centres: the box's pixel i covers [u0 + i, u0 + i + 1) in the image; keep centres aligned
    k[0, 2] += 0.5 * (sw / bw) - 0.5
    k[1, 2] += 0.5 * (sh / bh) - 0.5
    face, _ = rasterize(vertices, faces, k, (sw, sh))
    hit = face >= 0
    seen, at = np.unique(face[hit], return_inverse=True)  # shade only the faces that show
    tri = vertices[faces[seen]]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    cover = hit.astype(np.float32)  # (sh, sw)
    paint = np.zeros((sh, sw), np.float32)  # shade x coverage
    paint[hit] = np.clip(normal @ LIGHT_DIR, 0.0, 1.0)[at] * 0.7 + 0.3
    if (sw, sh) != (bw, bh):
        cover = cv2.resize(cover, (bw, bh), interpolation=cv2.INTER_LINEAR)
        paint = cv2.resize(paint, (bw, bh), interpolation=cv2.INTER_LINEAR)
    shade = paint / np.maximum(cover, 1e-6)  # the coverage taken out again: edges blend, not darken
    layer = cv2.merge([np.clip(shade * c, 0, 255).astype(np.uint8) for c in color])
    weight = alpha * cover
    roi = out[v0:v1, u0:u1]
    out[v0:v1, u0:u1] = cv2.blendLinear(roi, layer, 1.0 - weight, weight)
    if mask is not None:
        mask[v0:v1, u0:u1][cover >= 0.5] = 255
    return out


def rasterize(
    vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, image_size, near: float = 0.05, cull: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Z-buffered face index and depth images of a mesh ``vertices (V, 3)`` (camera frame,
    metres) seen through ``K`` in an image of ``image_size`` (width, height).

    Returns ``face (H, W)`` int32, the index into ``faces`` of the nearest face at each pixel
    centre (-1: none), and ``depth (H, W)`` float32 metres (inf: none). Faces with a vertex
    nearer than ``near`` are dropped, and back faces too when ``cull`` (for closed meshes).

    Vectorised with numpy, no Python loop over faces: faces are grouped by the size of their
    pixel bounding box (powers of two per side), every pixel centre of a group's boxes is
    tested at once by broadcasting, and the nearest face per pixel is kept with one
    ``np.minimum.at`` over (depth, face) codes. About 10-30 ms for a 27k-face body.
    """
    width, height = int(image_size[0]), int(image_size[1])
    tri = np.asarray(vertices, dtype=np.float64)[faces]  # (F, 3, 3)
    index = np.flatnonzero(np.minimum(np.minimum(tri[:, 0, 2], tri[:, 1, 2]), tri[:, 2, 2]) > near)
    tri = tri[index]
    if cull:
        a, b = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        normal = np.stack(
            [
                a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
                a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0],
            ],
            1,
        )
        centre = tri[:, 0] + tri[:, 1] + tri[:, 2]
        front = normal[:, 0] * centre[:, 0] + normal[:, 1] * centre[:, 1] + normal[:, 2] * centre[:, 2] < 0  # facing us
        tri, index = tri[front], index[front]
    uv = project(tri, K)  # (F, 3, 2)
    lo = np.maximum(np.ceil(np.minimum(np.minimum(uv[:, 0], uv[:, 1]), uv[:, 2])), 0)  # (F, 2) the box's first pixel
    hi = np.minimum(np.floor(np.maximum(np.maximum(uv[:, 0], uv[:, 1]), uv[:, 2])), [width - 1, height - 1])
    box = (hi - lo + 1).astype(np.int64)  # (F, 2) pixels per side
    # barycentrics of pixel p: p - a = l1 e1 + l2 e2, so l1 = (p - a) x e2 / area, l2 = e1 x (p - a) / area;
    # p lies in the face when l1, l2 >= 0 and l1 + l2 <= 1; 1/z is linear in the image
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep = (box[:, 0] > 0) & (box[:, 1] > 0) & (np.abs(area) > 1e-9)
    uv, tri, index, lo, box, e1, e2, area = (x[keep] for x in (uv, tri, index, lo, box, e1, e2, area))
    p = lo - uv[:, 0]  # (F, 2) the box's first pixel relative to vertex a
    du = np.stack([e2[:, 1], -e1[:, 1]], 1) / area[:, None]  # (F, 2) d(l1, l2)/du
    dv = np.stack([-e2[:, 0], e1[:, 0]], 1) / area[:, None]
    at_lo = du * p[:, :1] + dv * p[:, 1:]  # (F, 2) (l1, l2) at the box's first pixel
    inv_z = 1.0 / tri[..., 2]  # (F, 3)
    dz = np.stack([inv_z[:, 1] - inv_z[:, 0], inv_z[:, 2] - inv_z[:, 0]], 1)  # (F, 2)
    planes = np.stack(  # (F, 3, 3): rows l1, l2, 1/z; columns value at lo, d/du, d/dv
        [
            np.stack([at_lo[:, 0], du[:, 0], dv[:, 0]], 1),
            np.stack([at_lo[:, 1], du[:, 1], dv[:, 1]], 1),
            np.stack(
                [inv_z[:, 0] + (dz * at_lo).sum(1), (dz * du).sum(1), (dz * dv).sum(1)],
                1,
            ),
        ],
        1,
    ).astype(np.float32)
    # size class per face: the smallest powers of two covering its box
    side = np.ceil(np.log2(box)).astype(np.int64)  # (F, 2)
    pixels, codes = [], []
    for cls in np.unique(side[:, 0] * 64 + side[:, 1]):
        sw, sh = 1 << int(cls // 64), 1 << int(cls % 64)
        rows = np.flatnonzero(side[:, 0] * 64 + side[:, 1] == cls)
        per = max(1, RASTER_CHUNK // (sw * sh))  # faces per pass (bounds the memory of a close-up)
        gy, gx = np.divmod(np.arange(sw * sh, dtype=np.int64), sw)
        fx, fy = gx.astype(np.float32), gy.astype(np.float32)
        for s in range(0, len(rows), per):
            r = rows[s : s + per]
            c = planes[r]  # (n, 3, 3)
            l1 = c[:, 0, :1] + c[:, 0, 1:2] * fx + c[:, 0, 2:] * fy  # (n, sw * sh)
            l2 = c[:, 1, :1] + c[:, 1, 1:2] * fx + c[:, 1, 2:] * fy
            inside = (l1 >= -1e-6) & (l2 >= -1e-6) & (l1 + l2 <= 1 + 1e-6)
            inside &= (gx < box[r, :1]) & (gy < box[r, 1:])
            f, k = np.nonzero(inside)
            z = 1.0 / (c[f, 2, 0] + c[f, 2, 1] * fx[k] + c[f, 2, 2] * fy[k])
            u, v = lo[r[f], 0].astype(np.int64) + gx[k], lo[r[f], 1].astype(np.int64) + gy[k]
            pixels.append(v * width + u)
            codes.append((np.round(z * 1e5).astype(np.int64) << 32) | index[r[f]])  # 10 um depth steps, then the face
    zbuf = np.full(width * height, np.iinfo(np.int64).max, np.int64)
    if pixels:
        np.minimum.at(zbuf, np.concatenate(pixels), np.concatenate(codes))
    hit = zbuf < np.iinfo(np.int64).max
    face = np.where(hit, zbuf & 0xFFFFFFFF, -1).astype(np.int32).reshape(height, width)
    depth = np.where(hit, (zbuf >> 32) * 1e-5, np.inf).astype(np.float32).reshape(height, width)
    return face, depth
