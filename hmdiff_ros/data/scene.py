"""Robot and desk cameras, and where a person stands in front of them.

World frame for placement: metres, y up, the ground at y = 0. A camera sits at a height of
``height_m``, looks roughly at the person (yaw/pitch offsets spread people over the whole
image, truncation included) and is rolled slightly. Everything is returned in the camera
optical frame (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

# (name, horizontal FOV degrees, width, height): colour streams of common robot/desk cameras.
CAMERA_PRESETS: Tuple[Tuple[str, float, int, int], ...] = (
    ("webcam_720p", 70.0, 1280, 720),
    ("webcam_vga", 60.0, 640, 480),
    ("realsense_d435", 69.0, 1280, 720),
    ("realsense_d455", 90.0, 1280, 800),
    ("zed2", 110.0, 1280, 720),
    ("oakd", 81.0, 1280, 800),
)


@dataclass(frozen=True)
class SceneConfig:
    height_m: Tuple[float, float] = (0.3, 2.0)  # camera height above the ground
    distance_m: Tuple[float, float] = (0.8, 10.0)  # horizontal camera-person distance (log-uniform)
    pitch_jitter_deg: float = 8.0  # std of the tilt around "looking at the person"
    roll_deg: float = 3.0  # std of the camera roll
    offset_fraction: float = 0.9  # person centre spread over this fraction of the half-FOV
    focal_jitter: float = 0.05  # relative std of the focal length around the preset's
    occluder_prob: float = 0.3  # chance of an occluder in front of the person

    def __post_init__(self) -> None:
        lo, hi = self.height_m
        if not 0.0 < lo <= hi <= 5.0:
            raise ValueError(f"height_m must satisfy 0 < min <= max <= 5, got {self.height_m}")
        lo, hi = self.distance_m
        if not 0.3 <= lo <= hi <= 50.0:
            raise ValueError(f"distance_m must satisfy 0.3 <= min <= max <= 50, got {self.distance_m}")
        if not 0.0 <= self.offset_fraction <= 1.5:
            raise ValueError(f"offset_fraction must be in [0, 1.5], got {self.offset_fraction}")
        if not 0.0 <= self.occluder_prob <= 1.0:
            raise ValueError(f"occluder_prob must be in [0, 1], got {self.occluder_prob}")
        if min(self.pitch_jitter_deg, self.roll_deg, self.focal_jitter) < 0:
            raise ValueError("pitch_jitter_deg, roll_deg and focal_jitter must be >= 0")


def _look_rotation(forward: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` world-from-camera rotations: columns x (right), y (down), z (forward)."""
    up = np.array([0.0, 1.0, 0.0])
    z = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    x = np.cross(z, up)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    x, y = c * x + s * y, -s * x + c * y
    return np.stack([x, y, z], axis=-1)


def sample_scenes(rng: np.random.Generator, vertices_world: np.ndarray, cfg: SceneConfig) -> Dict[str, np.ndarray]:
    """Cameras for ``N`` people given as canonical-frame meshes ``(N, V, 3)`` (already rotated
    by their global orientation). Each body is put on the ground at a random distance.

    Returns ``K`` (N, 3, 3), ``image_size`` (N, 2) as (width, height), ``R`` (N, 3, 3) and ``t``
    (N, 3) with ``x_cam = R @ x_world_body + t`` for the body's canonical coordinates, and
    ``preset`` (N,) indices into ``CAMERA_PRESETS``.
    """
    n = len(vertices_world)
    preset = rng.integers(len(CAMERA_PRESETS), size=n)
    hfov = np.deg2rad(np.array([CAMERA_PRESETS[i][1] for i in preset]))
    size = np.array([CAMERA_PRESETS[i][2:] for i in preset], dtype=np.float64)  # (N, 2) width, height
    focal = 0.5 * size[:, 0] / np.tan(hfov / 2) * (1 + cfg.focal_jitter * rng.standard_normal(n))
    vfov = 2 * np.arctan(0.5 * size[:, 1] / focal)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, :2, 2] = (size - 1) / 2 + 0.01 * size * rng.standard_normal((n, 2))
    K[:, 2, 2] = 1.0

    # Stand the body on the ground, centred over the origin.
    lo, hi = vertices_world.min(1), vertices_world.max(1)  # (N, 3)
    body_shift = np.stack([-(lo[:, 0] + hi[:, 0]) / 2, -lo[:, 1], -(lo[:, 2] + hi[:, 2]) / 2], axis=1)
    mid_height = (hi[:, 1] - lo[:, 1]) / 2
    distance = np.exp(rng.uniform(*np.log(cfg.distance_m), size=n))
    cam_height = rng.uniform(*cfg.height_m, size=n)
    # Direction from the camera to the person's middle, then offsets so people land anywhere in view.
    to_person = np.stack([np.zeros(n), mid_height - cam_height, distance], axis=1)
    yaw = rng.uniform(-1, 1, size=n) * cfg.offset_fraction * hfov / 2
    pitch = rng.uniform(-1, 1, size=n) * cfg.offset_fraction * vfov / 2 * 0.7
    pitch += np.deg2rad(cfg.pitch_jitter_deg) * rng.standard_normal(n)
    base = np.arctan2(to_person[:, 1], to_person[:, 2])  # elevation of the person's middle
    elev = base + pitch
    forward = np.stack([np.sin(yaw) * np.cos(elev), np.sin(elev), np.cos(yaw) * np.cos(elev)], axis=1)
    R_wc = _look_rotation(forward, np.deg2rad(cfg.roll_deg) * rng.standard_normal(n))
    cam_pos = np.stack([np.zeros(n), cam_height, np.zeros(n)], axis=1)
    body_pos = np.stack([np.zeros(n), np.zeros(n), distance], axis=1) + body_shift
    R = R_wc.transpose(0, 2, 1)  # camera-from-world
    t = np.einsum("nij,nj->ni", R, body_pos - cam_pos)
    return {"K": K, "image_size": size, "R": R, "t": t, "preset": preset}


def sample_occluders(rng: np.random.Generator, boxes: np.ndarray, cfg: SceneConfig) -> np.ndarray:
    """Axis-aligned occluders ``(N, 4)`` = (u0, v0, u1, v1) in image pixels, NaN where none.

    Two kinds: a rectangle over part of the person, or a band from some height down to the
    image bottom (a desk or a table in front of the legs). ``boxes``: (N, 4) person boxes
    (u0, v0, u1, v1) from the ground-truth projection.
    """
    n = len(boxes)
    out = np.full((n, 4), np.nan)
    has = rng.random(n) < cfg.occluder_prob
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    band = rng.random(n) < 0.3
    ow, oh = rng.uniform(0.2, 0.6, n) * w, rng.uniform(0.15, 0.5, n) * h
    u0 = boxes[:, 0] + rng.uniform(-0.2, 1.0, n) * w - ow / 2
    v0 = boxes[:, 1] + rng.uniform(0.0, 1.0, n) * h - oh / 2
    rect = np.stack([u0, v0, u0 + ow, v0 + oh], axis=1)
    top = boxes[:, 1] + rng.uniform(0.45, 0.85, n) * h
    bands = np.stack([np.full(n, -1e5), top, np.full(n, 1e5), np.full(n, 1e5)], axis=1)
    out[has] = np.where(band[:, None], bands, rect)[has]
    return out
