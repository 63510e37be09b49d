"""The coarse mesh topology asset: what inference needs of the body model, in numpy only.

The diffusion model works on a few hundred *coarse* vertices plus joints (METRO /
FastMETRO style). The asset holds, for one body model (default: Anny):

- ``full_faces`` ``(F, 3)`` and ``full_rest`` ``(V, 3)``: the full mesh and its neutral rest
  shape (canonical body frame, metres);
- ``coarse_faces`` ``(Fc, 3)`` and ``coarse_rest`` ``(C, 3)``: the decimated, watertight mesh;
- the down-sampling matrix **D** (full -> coarse): a vertex selection, ``down_index`` ``(C,)``;
- the up-sampling matrix **U** (coarse -> full): ``k`` weights per full vertex,
  ``up_index`` / ``up_weight`` ``(V, k)``, each row summing to one, fitted on posed bodies;
- ``joint_regressor`` ``(J, C)``: our joints from coarse vertices;
- ``meta``: provenance and the measured round-trip error.

Loading needs only numpy; every ``apply`` method takes numpy arrays or torch tensors with
any leading batch dimensions. The asset is built by ``hmdiff assets build``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

ASSET_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_ASSET = ASSET_DIR / "anny_topology.npz"
_ARRAYS = (
    "full_faces",
    "full_rest",
    "coarse_faces",
    "coarse_rest",
    "down_index",
    "up_index",
    "up_weight",
    "joint_regressor",
)


def _gather(x, index: np.ndarray):
    """``x[..., index, :]`` for numpy or torch, with ``index`` of any shape."""
    if isinstance(x, np.ndarray):
        return x[..., index, :]
    import torch

    idx = torch.as_tensor(index, device=x.device, dtype=torch.long)
    return x[..., idx, :]


def _as(x, array: np.ndarray):
    """``array`` in the array library, dtype and device of ``x``."""
    if isinstance(x, np.ndarray):
        return array.astype(x.dtype, copy=False)
    import torch

    return torch.as_tensor(array, dtype=x.dtype, device=x.device)


@dataclass(frozen=True)
class Topology:
    """Coarse/full mesh topology with sampling matrices; see the module docstring."""

    full_faces: np.ndarray
    full_rest: np.ndarray
    coarse_faces: np.ndarray
    coarse_rest: np.ndarray
    down_index: np.ndarray
    up_index: np.ndarray
    up_weight: np.ndarray
    joint_regressor: np.ndarray
    joint_names: Tuple[str, ...]
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v, c, j = len(self.full_rest), len(self.coarse_rest), len(self.joint_names)
        checks = {
            "full_faces": (self.full_faces.ndim == 2 and self.full_faces.shape[1] == 3 and self.full_faces.max() < v),
            "coarse_faces": (
                self.coarse_faces.ndim == 2 and self.coarse_faces.shape[1] == 3 and self.coarse_faces.max() < c
            ),
            "down_index": self.down_index.shape == (c,) and self.down_index.max() < v,
            "up_index": self.up_index.shape == self.up_weight.shape
            and self.up_index.shape[0] == v
            and self.up_index.max() < c,
            "up_weight": bool(np.allclose(self.up_weight.sum(1), 1.0, atol=1e-4)),
            "joint_regressor": self.joint_regressor.shape == (j, c),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"inconsistent topology asset: bad {bad} (V={v}, C={c}, J={j})")

    @property
    def num_full(self) -> int:
        return len(self.full_rest)

    @property
    def num_coarse(self) -> int:
        return len(self.coarse_rest)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def downsample(self, full):
        """Full vertices ``(..., V, 3)`` -> coarse vertices ``(..., C, 3)`` (D)."""
        self._check(full, self.num_full, "full vertices")
        return _gather(full, self.down_index)

    def upsample(self, coarse):
        """Coarse vertices ``(..., C, 3)`` -> full vertices ``(..., V, 3)`` (U)."""
        self._check(coarse, self.num_coarse, "coarse vertices")
        weight = _as(coarse, self.up_weight)  # (V, k)
        # one neighbour at a time: (..., V, 3) arrays instead of a (..., V, k, 3) gather (5x faster)
        out = _gather(coarse, self.up_index[:, 0]) * weight[:, :1]
        for k in range(1, self.up_index.shape[1]):
            out = out + _gather(coarse, self.up_index[:, k]) * weight[:, k : k + 1]
        return out

    def regress_joints(self, coarse):
        """Coarse vertices ``(..., C, 3)`` -> joints ``(..., J, 3)``."""
        self._check(coarse, self.num_coarse, "coarse vertices")
        return _as(coarse, self.joint_regressor) @ coarse

    @staticmethod
    def _check(x, count: int, what: str) -> None:
        if x.ndim < 2 or x.shape[-2] != count or x.shape[-1] != 3:
            raise ValueError(f"{what} must have shape (..., {count}, 3), got {tuple(x.shape)}")

    def save(self, path: "str | Path") -> None:
        """Write the arrays (compressed ``.npz``) and a JSON sidecar with ``meta``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, joint_names=np.array(self.joint_names), **{k: getattr(self, k) for k in _ARRAYS})
        path.with_suffix(".json").write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: "str | Path | None" = None) -> "Topology":
        """Load an asset (default: the shipped Anny topology); errors name the file."""
        path = Path(path) if path is not None else DEFAULT_ASSET
        if not path.is_file():
            raise FileNotFoundError(
                f"topology asset '{path}' not found; build one with 'hmdiff assets build --out {path}'"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in _ARRAYS}
                names = tuple(str(n) for n in data["joint_names"])
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"'{path}' is not a topology asset ({exc})") from exc
        sidecar = path.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        return cls(joint_names=names, meta=meta, **arrays)


def is_watertight(faces: np.ndarray) -> bool:
    """True when every edge of the triangle mesh is shared by exactly two triangles."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, counts = np.unique(np.sort(edges, axis=1), axis=0, return_counts=True)
    return bool((counts == 2).all())


def roundtrip_error_mm(topology: Topology, full: np.ndarray) -> Dict[str, float]:
    """Per-vertex error of full -> coarse -> full on ``(N, V, 3)`` metre meshes, in mm."""
    err = np.linalg.norm(topology.upsample(topology.downsample(full)) - full, axis=-1) * 1000.0
    return {"mean_mm": float(err.mean()), "p99_mm": float(np.percentile(err, 99)), "max_mm": float(err.max())}
