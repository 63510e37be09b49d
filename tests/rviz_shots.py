"""Reading RViz 2 screenshots (tests/test_rviz2.py): the 3D render panel found by its background
colour, RViz's Orbit view as a pinhole camera so that published 3D points can be projected into
the picture, masks of what changed between two screenshots, and a screenshot of an X display.
No ROS here: the projection follows rviz_default_plugins' OrbitViewController (camera at
``focal + distance * (cos yaw cos pitch, sin yaw cos pitch, sin pitch)`` looking at the focal
point, the fixed frame's +Z kept up) and OGRE's default vertical field of view (45 degrees)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

OGRE_FOVY = np.pi / 4  # Ogre::Camera's default; rviz_common does not change it


@dataclass(frozen=True)
class OrbitView:
    focal: np.ndarray  # (3,) in the fixed frame
    distance: float
    pitch: float
    yaw: float

    @classmethod
    def from_config(cls, path: Path) -> "OrbitView":
        """The ``Views: Current`` of an RViz 2 config (an Orbit view)."""
        cur = yaml.safe_load(Path(path).read_text())["Visualization Manager"]["Views"]["Current"]
        if not str(cur["Class"]).endswith("/Orbit"):
            raise ValueError(f"{path}: the current view is {cur['Class']}, expected an Orbit view")
        fp = cur["Focal Point"]
        return cls(
            np.array([fp["X"], fp["Y"], fp["Z"]], float), float(cur["Distance"]), float(cur["Pitch"]), float(cur["Yaw"])
        )

    def camera(self) -> tuple:
        """``(position, right, up, forward)`` of RViz's camera in the fixed frame."""
        cy, sy, cp, sp = np.cos(self.yaw), np.sin(self.yaw), np.cos(self.pitch), np.sin(self.pitch)
        pos = self.focal + self.distance * np.array([cy * cp, sy * cp, sp])
        fwd = (self.focal - pos) / np.linalg.norm(self.focal - pos)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        return pos, right, up, fwd

    def project(self, points: np.ndarray, panel: tuple) -> np.ndarray:
        """Pixels ``(N, 2)`` (x right, y down, in the screenshot) of fixed-frame ``points`` in the
        render panel ``(x0, y0, width, height)``."""
        pos, right, up, fwd = self.camera()
        d = np.asarray(points, float).reshape(-1, 3) - pos
        x0, y0, w, h = panel
        ty = np.tan(OGRE_FOVY / 2)
        tx = ty * w / h
        depth = d @ fwd
        u = (d @ right) / depth / tx
        v = (d @ up) / depth / ty
        return np.stack([x0 + (u + 1) * w / 2, y0 + (1 - v) * h / 2], axis=1)


def render_panel(shot: np.ndarray, bg_rgb: tuple) -> tuple:
    """``(x0, y0, width, height)`` of the render panel: the rows and columns that are mostly the
    background colour (the grid's lines and what is drawn cross it, the docks do not)."""
    bg = np.all(shot == np.array(bg_rgb, np.uint8), axis=2)
    cols = np.flatnonzero(bg.mean(axis=0) > 0.3)
    rows = np.flatnonzero(bg.mean(axis=1) > 0.3)
    if len(cols) < 100 or len(rows) < 100:
        raise AssertionError(f"no render panel of background {bg_rgb} in the screenshot")
    x0, x1 = cols.min(), cols.max()
    sub = bg[:, x0 : x1 + 1]
    rows = np.flatnonzero(sub.mean(axis=1) > 0.3)
    y0, y1 = rows.min(), rows.max()
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


def changed(a: np.ndarray, b: np.ndarray, threshold: int = 40) -> np.ndarray:
    """Pixels whose colour differs by more than ``threshold`` in some channel."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > threshold


def box_of(pixels: np.ndarray, pad: float, lo_extra: float = 0.0) -> tuple:
    """``(x0, y0, x1, y1)`` around ``pixels`` (N, 2), grown by ``pad`` times its size on every
    side and by ``lo_extra`` times its height more at the top."""
    (x0, y0), (x1, y1) = pixels.min(axis=0), pixels.max(axis=0)
    w, h = x1 - x0, y1 - y0
    return x0 - pad * w, y0 - (pad + lo_extra) * h, x1 + pad * w, y1 + pad * h


def clip(box: tuple, panel: tuple) -> tuple:
    """``box`` ``(x0, y0, x1, y1)`` cut to the render ``panel`` ``(x0, y0, width, height)``."""
    px, py, w, h = panel
    return max(box[0], px), max(box[1], py), min(box[2], px + w - 1), min(box[3], py + h - 1)


def inside(mask: np.ndarray, box: tuple) -> float:
    """Share of the ``True`` pixels of ``mask`` that lie inside ``box``."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0
    x0, y0, x1, y1 = box
    return float(np.mean((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)))


def screenshot(display: str) -> np.ndarray:
    """The whole X ``display`` as RGB ``(H, W, 3)`` (xwd, converted to PNG by ImageMagick)."""
    xwd = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, check=True, timeout=30)
    png = subprocess.run(["convert", "xwd:-", "png:-"], input=xwd.stdout, capture_output=True, check=True, timeout=30)
    bgr = cv2.imdecode(np.frombuffer(png.stdout, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
