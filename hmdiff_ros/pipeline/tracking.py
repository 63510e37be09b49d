"""Track ids and temporal smoothing for video: IoU + Hungarian assignment, One-Euro filters.

:class:`Tracker` takes each frame's :class:`~hmdiff_ros.pipeline.pipeline.PersonResult` list
and its time stamp, gives every person a ``track_id`` that persists across frames, and (when
enabled) smooths each track with One-Euro filters (Casiez et al., CHI 2012): the camera-frame
translation, and the root-relative joints and mesh vertices, so that the mesh and the joints
stay consistent. A track not matched for ``max_age`` frames is dropped; a person who comes back
gets a new id and fresh filters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from hmdiff_ros.camera import project


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``(N, 4)`` and ``(M, 4)`` (u0, v0, u1, v1) -> ``(N, M)``."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def linear_sum_assignment(cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a rectangular ``(N, M)`` cost matrix (Hungarian method,
    O(n²m)); returns ``(rows, cols)`` like :func:`scipy.optimize.linear_sum_assignment`."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or not np.isfinite(cost).all():
        raise ValueError(f"cost must be a finite 2-D matrix, got shape {cost.shape}")
    transposed = cost.shape[0] > cost.shape[1]
    c = cost.T if transposed else cost
    n, m = c.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=np.int64)  # match[j]: row (1-based) assigned to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            cur = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.nonzero(match[1:])[0]
    rows = match[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


@dataclass(frozen=True)
class OneEuroConfig:
    min_cutoff: float = 1.0  # Hz: smoothing at rest (lower: smoother, more lag)
    beta: float = 0.5  # speed coefficient (higher: less lag in fast motion)
    d_cutoff: float = 1.0  # Hz: cutoff of the speed estimate

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(f"One-Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got {self}")


class OneEuroFilter:
    """Element-wise One-Euro filter over arrays of a fixed shape."""

    def __init__(self, cfg: OneEuroConfig = OneEuroConfig()) -> None:
        self.cfg = cfg
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.x.shape != x.shape or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t  # first sample, or time went back: reset
            return x.copy()
        dt = t - self.t
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(self.cfg.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.cfg.min_cutoff + self.cfg.beta * np.abs(self.dx)
        self.x = self.x + self._alpha(cutoff, dt) * (x - self.x)
        self.t = t
        return self.x.copy()


@dataclass(frozen=True)
class TrackerConfig:
    min_iou: float = 0.2  # a detection joins a track only above this box IoU ...
    max_shift: float = 0.5  # ... and with its box centre within this fraction of the box side
    max_age: int = 15  # frames a track survives unmatched
    smooth: bool = True  # One-Euro smoothing of tracked people
    translation: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(min_cutoff=0.5, beta=0.3))
    pose: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(min_cutoff=1.5, beta=2.0))

    def __post_init__(self) -> None:
        if not 0 <= self.min_iou < 1 or self.max_age < 0:
            raise ValueError(f"min_iou must be in [0, 1) and max_age >= 0, got {self.min_iou} and {self.max_age}")


@dataclass
class _Track:
    id: int
    box: np.ndarray
    age: int = 0  # frames since last matched
    filters: Dict[str, OneEuroFilter] = field(default_factory=dict)


class Tracker:
    """``tracker(people, stamp, K) -> people`` with ``track_id`` set and, if enabled, smoothed
    (``K``, the frame's intrinsics, re-projects the smoothed joints into ``joints_uv``)."""

    def __init__(self, cfg: TrackerConfig = TrackerConfig()) -> None:
        self.cfg = cfg
        self.tracks: List[_Track] = []
        self._next_id = 0

    def reset(self) -> None:
        self.tracks, self._next_id = [], 0

    def __call__(self, people: Sequence, stamp: float, K: np.ndarray | None = None) -> List:
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be a finite time in seconds, got {stamp}")
        people = list(people)
        matched: Dict[int, _Track] = {}
        if self.tracks and people:
            iou = box_iou(np.stack([p.box for p in people]), np.stack([t.box for t in self.tracks]))
            for r, c in zip(*linear_sum_assignment(1.0 - iou), strict=True):
                if iou[r, c] > self.cfg.min_iou and self._close(people[r].box, self.tracks[c].box):
                    matched[int(r)] = self.tracks[int(c)]
        for t in self.tracks:
            t.age += 1
        for i, p in enumerate(people):
            track = matched.get(i)
            if track is None:
                track = _Track(id=self._next_id, box=np.asarray(p.box, dtype=np.float64))
                self._next_id += 1
                self.tracks.append(track)
            track.age, track.box = 0, np.asarray(p.box, dtype=np.float64)
            p.track_id = track.id
            if self.cfg.smooth:
                self._smooth(p, track, stamp)
                if K is not None:
                    p.joints_uv = project(p.joints, K)
        self.tracks = [t for t in self.tracks if t.age <= self.cfg.max_age]
        return people

    def _close(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Box centres within ``max_shift`` x the larger side: a single-person prior that jumps
        to another person nearby must not continue (and smooth into) the first one's track."""
        side = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1])
        shift = np.linalg.norm((a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2)
        return bool(shift <= self.cfg.max_shift * side)

    def _smooth(self, p, track: _Track, stamp: float) -> None:
        f = track.filters
        if not f:
            f["t"] = OneEuroFilter(self.cfg.translation)
            f["joints"], f["coarse"] = OneEuroFilter(self.cfg.pose), OneEuroFilter(self.cfg.pose)
            f["vertices"] = OneEuroFilter(self.cfg.pose)
        t_raw = p.translation
        t = f["t"](t_raw, stamp)
        p.joints = f["joints"](p.joints - t_raw, stamp) + t
        p.coarse_vertices = f["coarse"](p.coarse_vertices - t_raw, stamp) + t
        if p.vertices is not None:
            p.vertices = f["vertices"](p.vertices - t_raw, stamp) + t
        p.translation = t
