"""``hmdiff data pose-coverage``: which synthetic pose family each real person's pose resembles.

A check of the pose families (:mod:`hmdiff_ros.data.poses`) against real frames with ground
truth (the evaluation folder of ``hmdiff eval-real``). It reads them and reports; nothing is
fitted to them.

Descriptors compare limb directions only, so that body size, distance and (in 3D) the body's
global orientation do not count:

- **3D** (Human3.6M, MPI-INF-3DHP): the 8 limbs (upper arms, forearms, thighs, shins) as unit
  vectors in the body frame: x from the right hip to the left hip, y the trunk (mid-hip to
  mid-shoulder) made orthogonal to x, z = x cross y (forward).
- **2D** (COCO, MPII, OCHuman, PoseTrack18 keypoints): the 8 limbs, the trunk and the shoulder
  line as unit vectors in the image (v down); synthetic poses are seen orthographically from
  ``VIEWS_2D`` random yaws each (lying ones under their tilt). Limbs a person has no keypoints for
  are left out of its distances.

The distance of two poses is the mean angle between their limbs (degrees). A real pose's
distance to a family is the distance to that family's nearest reference sample (``per_family``
of them). To judge it, the same is measured for other samples of each family ("own"
distances); a real pose is **covered** when its nearest family is within that family's 95th
percentile of own distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from hmdiff_ros.body.base import axis_angle_to_matrix
from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.data.engine import SyntheticEngine
from hmdiff_ros.data.poses import FAMILY_NAMES, family_weights
from hmdiff_ros.study.real_data import LIMBS, frames_3d, people_2d

# Limbs as (from, to) indices into LIMBS (shoulders, elbows, wrists, hips, knees, ankles).
SEGMENTS: Tuple[Tuple[int, int], ...] = ((0, 2), (2, 4), (1, 3), (3, 5), (6, 8), (8, 10), (7, 9), (9, 11))
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 0, 1, 6, 7
VIEWS_2D = 8  # yaws per synthetic pose in the 2D reference
MIN_LIMBS_2D = 6  # 2D people with fewer annotated limbs (of 10) are left out
COVERED_PERCENTILE = 95.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def descriptor_3d(limbs: np.ndarray) -> np.ndarray:
    """``(..., 12, 3)`` joints in ``LIMBS`` order, any frame -> ``(..., 8, 3)`` unit limb
    directions in the body frame (see the module docstring)."""
    limbs = np.asarray(limbs, dtype=np.float64)
    mid_hip = (limbs[..., L_HIP, :] + limbs[..., R_HIP, :]) / 2
    mid_shoulder = (limbs[..., L_SHOULDER, :] + limbs[..., R_SHOULDER, :]) / 2
    x = _unit(limbs[..., L_HIP, :] - limbs[..., R_HIP, :])
    trunk = mid_shoulder - mid_hip
    y = _unit(trunk - (trunk * x).sum(-1, keepdims=True) * x)
    z = np.cross(x, y)
    frame = np.stack([x, y, z], axis=-2)  # (..., 3, 3) rows: body axes
    a, b = zip(*SEGMENTS, strict=True)
    dirs = _unit(limbs[..., list(b), :] - limbs[..., list(a), :])  # (..., 8, 3)
    return np.einsum("...ij,...lj->...li", frame, dirs)


def descriptor_2d(uv: np.ndarray) -> np.ndarray:
    """``(..., 12, 2)`` image points in ``LIMBS`` order (v down; NaN where not annotated) ->
    ``(..., 10, 2)`` unit directions of the 8 limbs, the trunk and the shoulder line (NaN
    where an end is missing)."""
    uv = np.asarray(uv, dtype=np.float64)
    a, b = zip(*SEGMENTS, strict=True)
    dirs = [uv[..., list(b), :] - uv[..., list(a), :]]
    mid_hip = (uv[..., L_HIP, :] + uv[..., R_HIP, :]) / 2
    mid_shoulder = (uv[..., L_SHOULDER, :] + uv[..., R_SHOULDER, :]) / 2
    dirs.append((mid_shoulder - mid_hip)[..., None, :])
    dirs.append((uv[..., R_SHOULDER, :] - uv[..., L_SHOULDER, :])[..., None, :])
    return _unit(np.concatenate(dirs, axis=-2))


def pose_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean angle (degrees) between the limbs of descriptors ``a`` ``(M, L, d)`` and ``b``
    ``(N, L, d)``, over the limbs both have (NaN limbs are left out) -> ``(M, N)``."""
    cos = np.einsum("mld,nld->mnl", np.nan_to_num(a), np.nan_to_num(b))
    both = np.isfinite(a[:, None, :, 0]) & np.isfinite(b[None, :, :, 0])  # (M, N, L)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return (angle * both).sum(-1) / np.maximum(both.sum(-1), 1)


@dataclass(frozen=True)
class FamilyReference:
    """Synthetic samples per family: ``joints[f]`` ``(n, 12, 3)`` in ``LIMBS`` order (canonical
    frame, before the global orientation), ``tilt[f]`` ``(n, 3)`` (lying), for each of ``names``."""

    names: Tuple[str, ...]
    joints: Tuple[np.ndarray, ...]
    tilt: Tuple[np.ndarray, ...]


def family_samples(
    engine: SyntheticEngine, per_family: int, seed: int, names: Sequence[str] = FAMILY_NAMES
) -> FamilyReference:
    """``per_family`` posed samples of each family in ``names`` (random bodies of the engine's
    bank), from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    index = [JOINT_INDEX[n] for n in LIMBS]
    joints, tilts = [], []
    for name in names:
        pose, _, tilt = engine.pose_sampler.sample(rng, per_family, family_weights([name]))
        ids = rng.integers(engine.bank.size, size=per_family)
        with torch.no_grad():
            _, j = engine.poser(torch.as_tensor(ids), torch.as_tensor(pose), count=0)
        joints.append(j.numpy().astype(np.float64)[:, index])
        tilts.append(tilt.astype(np.float64))
    return FamilyReference(tuple(names), tuple(joints), tuple(tilts))


def _views_2d(ref: FamilyReference, f: int, views: int, rng: np.random.Generator) -> np.ndarray:
    """Orthographic image points ``(n * views, 12, 2)`` (v down) of family ``f`` at random yaws."""
    joints, tilt = ref.joints[f], ref.tilt[f]
    n = len(joints)
    yaw = np.zeros((n * views, 3))
    yaw[:, 1] = rng.uniform(-np.pi, np.pi, n * views)
    with torch.no_grad():
        rot = (
            axis_angle_to_matrix(torch.as_tensor(yaw))
            @ axis_angle_to_matrix(torch.as_tensor(np.repeat(tilt, views, axis=0)))
        ).numpy()
    world = np.einsum("nij,nkj->nki", rot, np.repeat(joints, views, axis=0))
    return world[..., :2] * np.array([1.0, -1.0])


@dataclass(frozen=True)
class Coverage:
    """Nearest family per probe pose: ``family`` (names), ``distance`` (degrees), ``to_family``
    ``(M, F)`` distances to every family, ``own_p50``/``own_p95`` (F,) the median and 95th
    percentile of the families' distances to their own samples, ``covered`` (M,) bool."""

    names: Tuple[str, ...]
    family: List[str]
    distance: np.ndarray
    to_family: np.ndarray
    own_p50: np.ndarray
    own_p95: np.ndarray
    covered: np.ndarray


def nearest_families(reference: List[np.ndarray], own: List[np.ndarray], probes: np.ndarray, names) -> Coverage:
    """``reference[f]``/``own[f]``: descriptors of family ``f`` (the reference set; other
    samples of it); ``probes`` ``(M, L, d)`` -> :class:`Coverage`."""
    to_family = np.stack([pose_distance(probes, r).min(1) for r in reference], axis=1)  # (M, F)
    own_d = [pose_distance(o, r).min(1) for o, r in zip(own, reference, strict=True)]
    p50 = np.array([np.percentile(d, 50) for d in own_d])
    p95 = np.array([np.percentile(d, COVERED_PERCENTILE) for d in own_d])
    best = to_family.argmin(1)
    distance = to_family[np.arange(len(probes)), best]
    return Coverage(tuple(names), [names[b] for b in best], distance, to_family, p50, p95, distance <= p95[best])


def coverage_3d(
    engine: SyntheticEngine,
    limbs: np.ndarray,
    per_family: int = 512,
    seed: int = 0,
    names: Sequence[str] = FAMILY_NAMES,
) -> Coverage:
    """The nearest of the families ``names`` for each ``(12, 3)`` pose of ``limbs`` ``(M, 12, 3)``
    (``LIMBS`` order)."""
    ref = family_samples(engine, per_family, seed, names)
    own = family_samples(engine, max(per_family // 4, 16), seed + 1, names)
    return nearest_families(
        [descriptor_3d(j) for j in ref.joints], [descriptor_3d(j) for j in own.joints], descriptor_3d(limbs), ref.names
    )


def coverage_2d(
    engine: SyntheticEngine,
    uv: np.ndarray,
    per_family: int = 512,
    seed: int = 0,
    names: Sequence[str] = FAMILY_NAMES,
) -> Coverage:
    """The nearest of the families ``names`` for each 2D person ``uv`` ``(M, 12, 2)`` (``LIMBS``
    order, NaN where not annotated), against synthetic poses seen from ``VIEWS_2D`` yaws each."""
    ref = family_samples(engine, per_family, seed, names)
    own = family_samples(engine, max(per_family // 4, 16), seed + 1, names)
    names = ref.names
    # one generator per family and set: a family's views do not depend on the other families asked for
    reference = [
        descriptor_2d(_views_2d(ref, f, VIEWS_2D, np.random.default_rng([seed, 2, f]))) for f in range(len(names))
    ]
    others = [descriptor_2d(_views_2d(own, f, 1, np.random.default_rng([seed, 3, f]))) for f in range(len(names))]
    return nearest_families(reference, others, descriptor_2d(uv), names)


def _rows(cov: Coverage, items: List[Tuple[str, str]]) -> List[Dict]:
    rows = []
    for i, (dataset, image) in enumerate(items):
        order = np.argsort(cov.to_family[i])
        rows.append(
            {
                "dataset": dataset,
                "image": image,
                "family": cov.family[i],
                "distance_deg": round(float(cov.distance[i]), 1),
                "family_p95_deg": round(float(cov.own_p95[order[0]]), 1),
                "covered": bool(cov.covered[i]),
                "next": [[cov.names[k], round(float(cov.to_family[i, k]), 1)] for k in order[1:3]],
            }
        )
    return rows


def _summary(cov: Coverage) -> Dict:
    return {
        "num": len(cov.family),
        "covered": int(cov.covered.sum()),
        "nearest": {n: cov.family.count(n) for n in cov.names if n in cov.family},
        "own_deg": {
            n: [round(float(a), 1), round(float(b), 1)]
            for n, a, b in zip(cov.names, cov.own_p50, cov.own_p95, strict=True)
        },
    }


def pose_coverage(
    root: "str | Path",
    engine: SyntheticEngine,
    per_family: int = 512,
    seed: int = 0,
    names: Sequence[str] = FAMILY_NAMES,
) -> Dict:
    """The coverage report (JSON-ready) of the real frames under ``root`` against the families
    ``names`` (default: all): ``3d`` and ``2d``, each
    with ``num``, ``covered``, ``nearest`` (how many poses each family is nearest to),
    ``own_deg`` (per family: median and 95th percentile of its own samples' distances) and
    ``poses`` (per pose: dataset, image, nearest family, distance, covered, the next two)."""
    root = Path(root)
    family_weights(names)  # a ValueError naming the families
    out: Dict = {"data": str(root), "per_family": per_family, "seed": seed, "families": list(names)}
    frames = list(frames_3d(root))
    if frames:
        limbs = np.stack([f[4] for f in frames])
        cov = coverage_3d(engine, limbs, per_family, seed, names)
        items = [(f[0], str(Path(f[1]).relative_to(root))) for f in frames]
        out["3d"] = {**_summary(cov), "poses": _rows(cov, items)}
    people = []
    for dataset, image, _, joints in people_2d(root):
        uv = np.array([joints.get(n, (np.nan, np.nan)) for n in LIMBS], dtype=np.float64)
        if np.isfinite(descriptor_2d(uv)[:, 0]).sum() >= MIN_LIMBS_2D:
            people.append((dataset, str(Path(image).relative_to(root)), uv))
    if people:
        cov = coverage_2d(engine, np.stack([p[2] for p in people]), per_family, seed, names)
        out["2d"] = {**_summary(cov), "poses": _rows(cov, [(p[0], p[1]) for p in people])}
    return out
