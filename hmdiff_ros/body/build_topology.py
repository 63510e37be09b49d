"""Build the coarse topology asset from a body model (``hmdiff assets build``).

Steps (METRO / CoMA style, with an up-sampling fitted on posed bodies):

1. decimate the neutral rest mesh (its largest connected component: the skin, not the eyes
   or mouth interior) with quadric edge collapse to ``coarse_vertices`` vertices, keeping it
   watertight;
2. **D**: snap every coarse vertex to a distinct nearest full vertex (a selection matrix), so
   coarse ground truth is exact for any pose and shape;
3. **U**: project every full vertex onto the coarse surface (barycentric weights of the
   nearest triangle), add the nearest vertices of that triangle's 1-ring up to ``neighbours``
   weights, then refit the weights by least squares over random posed bodies, constrained to
   sum to one (translation-equivariant) and ridge-pulled towards the barycentric weights;
4. the coarse joint regressor is the full one composed with U.

Needs the ``anny`` extra (Anny, trimesh, rtree, fast-simplification); the result needs numpy only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import numpy as np
import torch

from hmdiff_ros.body.anny_body import PHENOTYPES, AnnyBody
from hmdiff_ros.body.topology import Topology, is_watertight, roundtrip_error_mm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopologyBuildConfig:
    coarse_vertices: int = 600  # token budget of the denoiser (METRO uses 431 on SMPL)
    aggressiveness: Tuple[int, ...] = (4, 5, 6)  # fast-simplification 'agg' tried in turn; 7+ tears Anny apart
    neighbours: int = 8  # coarse vertices blended per full vertex in U (6: +25% error)
    fit_samples: int = 768  # random posed bodies to fit U on
    eval_samples: int = 128  # held-out posed bodies to report the round-trip error on
    ridge: float = 1e-3  # pull of the fitted U weights towards the barycentric ones
    seed: int = 0

    def __post_init__(self) -> None:
        if not 100 <= self.coarse_vertices <= 5000:
            raise ValueError(f"coarse_vertices must be in [100, 5000], got {self.coarse_vertices}")
        if not 3 <= self.neighbours <= 16:
            raise ValueError(f"neighbours must be in [3, 16], got {self.neighbours}")
        if self.fit_samples < 8 or self.eval_samples < 1:
            raise ValueError("fit_samples must be >= 8 and eval_samples >= 1")


# Largest random rotation (radians, uniform in a ball) per Anny bone-name prefix, for the
# posed bodies U is fitted and evaluated on. Wide on purpose: U must hold for any pose.
_MAX_ANGLE = {
    "spine": 0.3,
    "neck": 0.3,
    "head": 0.5,
    "clavicle": 0.25,
    "shoulder01": 0.3,
    "upperarm01": 1.3,
    "upperarm02": 0.4,
    "lowerarm01": 1.3,
    "lowerarm02": 0.4,
    "wrist": 0.7,
    "finger": 0.5,
    "metacarpal": 0.1,
    "pelvis": 0.15,
    "upperleg01": 1.0,
    "upperleg02": 0.3,
    "lowerleg01": 1.2,
    "lowerleg02": 0.2,
    "foot": 0.5,
    "toe": 0.3,
    "eye": 0.0,
}


def random_posed_bodies(body: AnnyBody, num: int, seed: int, batch: int = 64) -> np.ndarray:
    """``(num, V, 3)`` Anny meshes with uniform phenotypes and random rotations of every
    bone (see ``_MAX_ANGLE``), canonical frame, metres."""
    gen = torch.Generator().manual_seed(seed)
    limits = torch.tensor(
        [next(v for k, v in _MAX_ANGLE.items() if label.startswith(k)) for label in body.bone_labels[1:]],
        dtype=torch.float64,
    )  # (103,)
    out = []
    for start in range(0, num, batch):
        n = min(batch, num - start)
        direction = torch.nn.functional.normalize(
            torch.randn(n, len(limits), 3, generator=gen, dtype=torch.float64), dim=-1
        )
        radius = torch.rand(n, len(limits), 1, generator=gen, dtype=torch.float64) ** (1 / 3)
        pose = direction * radius * limits[:, None]  # (n, 103, 3) uniform in each ball
        shape = torch.rand(n, len(PHENOTYPES), generator=gen, dtype=torch.float64)
        with torch.no_grad():
            out.append(body(shape=shape, pose=pose).vertices.numpy())
    return np.concatenate(out)


def _largest_component_faces(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices,) * 2)
    _, labels = connected_components(graph, directed=False)
    main = np.bincount(labels[faces[:, 0]]).argmax()
    return faces[labels[faces[:, 0]] == main]


def _decimate(rest: np.ndarray, faces: np.ndarray, cfg: TopologyBuildConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to ``cfg.coarse_vertices``; the first aggressiveness that gives a
    closed surface of (about) that size wins."""
    import fast_simplification

    reduction = 1.0 - (2 * cfg.coarse_vertices - 4) / len(faces)  # closed surface: F = 2V - 4
    for agg in cfg.aggressiveness:
        points, tris = fast_simplification.simplify(
            rest.astype(np.float32), faces.astype(np.int32), target_reduction=reduction, agg=agg
        )
        if abs(len(points) - cfg.coarse_vertices) <= 0.02 * cfg.coarse_vertices and is_watertight(tris):
            return points.astype(np.float64), tris.astype(np.int64)
        log.info(
            "aggressiveness %d gave %d vertices, watertight=%s; trying the next", agg, len(points), is_watertight(tris)
        )
    raise RuntimeError(
        f"could not decimate to a watertight mesh of {cfg.coarse_vertices} vertices with "
        f"aggressiveness {cfg.aggressiveness}; try another --coarse-vertices"
    )


def _snap(points: np.ndarray, rest: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """A distinct nearest allowed full vertex for each decimated point (greedy by distance)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(rest[allowed])
    dist, idx = tree.query(points, k=16)
    taken: set = set()
    chosen = np.empty(len(points), dtype=np.int64)
    for i in np.argsort(dist[:, 0]):
        free = [j for j in idx[i] if j not in taken]
        if not free:
            raise RuntimeError("could not snap the decimated mesh to distinct vertices")
        taken.add(free[0])
        chosen[i] = allowed[free[0]]
    return chosen


def _barycentric_neighbours(
    rest: np.ndarray, coarse_rest: np.ndarray, coarse_faces: np.ndarray, k: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Initial U: nearest-triangle barycentric weights, padded with the closest vertices of
    the triangle's 1-ring (weight 0) up to ``k`` neighbours."""
    import trimesh

    mesh = trimesh.Trimesh(coarse_rest, coarse_faces, process=False)
    closest, _, tri = trimesh.proximity.closest_point(mesh, rest)
    corners = coarse_faces[tri]  # (V, 3)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], closest)  # (V, 3)
    ring = [set() for _ in range(len(coarse_rest))]
    for a, b in mesh.edges_unique:
        ring[a].add(b)
        ring[b].add(a)
    index = np.zeros((len(rest), k), dtype=np.int64)
    weight = np.zeros((len(rest), k))
    for v in range(len(rest)):
        near = set(corners[v])
        while len(near) < k:  # grow ring by ring until there are enough candidates
            near |= set().union(*(ring[c] for c in near))
        extra = sorted(near - set(corners[v]), key=lambda c: np.sum((coarse_rest[c] - rest[v]) ** 2))
        index[v] = list(corners[v]) + extra[: k - 3]
        weight[v, :3] = bary[v]
    return index, weight


def _fit_weights(
    index: np.ndarray, init: np.ndarray, full: np.ndarray, down_index: np.ndarray, ridge: float, chunk: int = 1024
) -> np.ndarray:
    """Least squares ``min_w |A w - b|^2 + mu |w - w0|^2`` s.t. ``sum(w) = 1`` per full vertex,
    over all samples; solved through the KKT system, in vertex chunks."""
    coarse = full[:, down_index]  # (N, C, 3)
    k = index.shape[1]
    out = np.empty_like(init)
    for s in range(0, len(index), chunk):
        idx = index[s : s + chunk]  # (n, k)
        b = full[:, s : s + chunk]  # (N, n, 3)
        a = coarse[:, idx] - b[:, :, None]  # (N, n, k, 3) offsets: the fit is translation-free
        ata = np.einsum("snkd,snld->nkl", a, a)  # (n, k, k)
        mu = ridge * np.trace(ata, axis1=1, axis2=2)[:, None, None] / k + 1e-12
        n = len(idx)
        kkt = np.zeros((n, k + 1, k + 1))
        kkt[:, :k, :k] = 2 * (ata + mu * np.eye(k))
        kkt[:, :k, k] = kkt[:, k, :k] = 1.0
        rhs = np.concatenate([2 * mu[:, :, 0] * init[s : s + chunk], np.ones((n, 1))], axis=1)
        out[s : s + chunk] = np.linalg.solve(kkt, rhs[..., None])[:, :k, 0]
    return out


def _joint_regressor(full_regressor: np.ndarray, index: np.ndarray, weight: np.ndarray, num_coarse: int) -> np.ndarray:
    """Coarse regressor ``J_full @ U`` as a dense ``(J, C)`` matrix."""
    out = np.zeros((len(full_regressor), num_coarse))
    for j, row in enumerate(full_regressor):
        np.add.at(out[j], index.ravel(), (row[:, None] * weight).ravel())
    return out


def build_topology(cfg: TopologyBuildConfig = TopologyBuildConfig()) -> Tuple[Topology, Dict]:
    """Build the Anny topology asset; returns it and a report of the measured errors."""
    import anny

    body = AnnyBody()
    with torch.no_grad():
        rest = body().vertices[0].numpy()  # (V, 3) neutral rest, canonical frame
    faces = body.faces
    skin_faces = _largest_component_faces(faces, len(rest))
    points, coarse_faces = _decimate(rest, skin_faces, cfg)
    down_index = _snap(points, rest, np.unique(skin_faces))
    coarse_rest = rest[down_index]
    log.info("decimated %d -> %d vertices, %d faces", len(rest), len(down_index), len(coarse_faces))

    index, bary = _barycentric_neighbours(rest, coarse_rest, coarse_faces, cfg.neighbours)
    log.info("posing %d + %d random bodies", cfg.fit_samples, cfg.eval_samples)
    fit = random_posed_bodies(body, cfg.fit_samples, seed=cfg.seed)
    held_out = random_posed_bodies(body, cfg.eval_samples, seed=cfg.seed + 1)
    weight = _fit_weights(index, bary, fit, down_index, cfg.ridge)
    full_regressor = body.joint_regressor.numpy()

    def make(w: np.ndarray, meta: Dict) -> Topology:
        return Topology(
            full_faces=faces.astype(np.int32),
            full_rest=rest.astype(np.float32),
            coarse_faces=coarse_faces.astype(np.int32),
            coarse_rest=coarse_rest.astype(np.float32),
            down_index=down_index.astype(np.int32),
            up_index=index.astype(np.int32),
            up_weight=w.astype(np.float32),
            joint_regressor=_joint_regressor(full_regressor, index, w, len(down_index)).astype(np.float32),
            joint_names=body.joint_names,
            meta=meta,
        )

    barycentric = roundtrip_error_mm(make(bary, {}), held_out)
    topology = make(weight, {})
    report = {
        "roundtrip_mm": roundtrip_error_mm(topology, held_out),
        "roundtrip_barycentric_mm": barycentric,
        "joints_mm": joint_error_mm(topology, held_out, full_regressor),
    }
    meta = {
        "body_model": "anny",
        "anny_version": anny.__version__,
        "num_full": len(rest),
        "num_coarse": len(down_index),
        "num_coarse_faces": len(coarse_faces),
        "config": asdict(cfg),
        "heldout_error": report,
        "command": "hmdiff assets build",
    }
    return Topology(**{**topology.__dict__, "meta": meta}), report


def joint_error_mm(topology: Topology, full: np.ndarray, full_regressor: np.ndarray) -> Dict[str, float]:
    """Error of joints regressed from the coarse mesh vs. from the full mesh, in mm."""
    ref = np.einsum("jv,nvd->njd", full_regressor, full)
    err = np.linalg.norm(topology.regress_joints(topology.downsample(full)) - ref, axis=-1) * 1000.0
    return {"mean_mm": float(err.mean()), "max_mm": float(err.max())}
