"""The body-model interface: parameters -> vertices (metres), joints, faces.

Every body model returns meshes in one *canonical body frame* so that the rest of the
system never cares which model made them: metres, right-handed, **y up, the body facing
+z, x towards the subject's left** (the SMPL convention). Joints are always our joint set
(``joints.JOINT_NAMES``), computed as ``joint_regressor @ vertices`` so that they are linear
in the mesh, which the coarse topology and DAT rely on.

Parameters (batched torch tensors, B samples):

- ``shape``: model-specific shape coefficients, ``(B, S)`` (Anny: 6 phenotypes in [0, 1];
  SMPL: betas);
- ``pose``: local joint rotations as axis-angle vectors (radians), ``(B, P, 3)``;
- ``global_orient``: axis-angle ``(B, 3)``, a rotation about the model origin (the pelvis
  region) in the canonical frame;
- ``transl``: ``(B, 3)`` metres, added last.

Missing parameters take the model's neutral value; any given one is checked for shape and
finiteness, and a bad one raises a ``ValueError`` that names it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import numpy as np
import torch

from hmdiff_ros.body.joints import JOINT_NAMES

PARAM_NAMES = ("shape", "pose", "global_orient", "transl")


@dataclass(frozen=True)
class BodyOutput:
    """A batch of posed bodies in the canonical body frame (metres)."""

    vertices: torch.Tensor  # (B, V, 3)
    joints: torch.Tensor  # (B, J, 3), ordered as joint_names


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle ``(..., 3)`` (radians) -> rotation matrices ``(..., 3, 3)``."""
    angle = torch.linalg.norm(rotvec, dim=-1, keepdim=True)  # (..., 1)
    # Series expansions keep the gradient finite at zero rotation.
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    sin_over = torch.where(small, 1 - angle**2 / 6, torch.sin(safe) / safe)  # sin(a)/a
    cos_term = torch.where(small, 0.5 - angle**2 / 24, (1 - torch.cos(safe)) / safe**2)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(
        rotvec.shape[:-1] + (3, 3)
    )  # (..., 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(skew)
    return eye + sin_over[..., None] * skew + cos_term[..., None] * (skew @ skew)


def check_param(model: str, name: str, value, shape: Tuple[int | None, ...]) -> torch.Tensor:
    """Validate one parameter: a tensor (or array) of ``shape`` (``None`` = any size), finite."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{model}: parameter '{name}' must be a numeric array, got {type(value).__name__}"
            ) from exc
    want = "(" + ", ".join("B" if s is None else str(s) for s in shape) + ")"
    if value.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, value.shape, strict=True)):
        raise ValueError(f"{model}: parameter '{name}' must have shape {want}, got {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        value = value.double()
    if not torch.isfinite(value).all():
        raise ValueError(f"{model}: parameter '{name}' contains NaN or Inf values")
    return value


class BodyModel(torch.nn.Module, abc.ABC):
    """A parametric body model returning meshes and our joints in the canonical body frame.

    Subclasses implement :meth:`param_shapes` and :meth:`_posed_vertices` and set ``faces``
    and ``joint_regressor`` (``(J, V)``, rows summing to one).
    """

    name: str = "body"
    faces: np.ndarray  # (F, 3) int64 triangles
    joint_names: Tuple[str, ...] = JOINT_NAMES

    @abc.abstractmethod
    def param_shapes(self) -> Dict[str, Tuple[int | None, ...]]:
        """Expected shape of each parameter, ``None`` for the batch dimension."""

    @abc.abstractmethod
    def _posed_vertices(self, shape: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Vertices ``(B, V, 3)`` in the canonical frame for validated shape and pose, before
        the global rotation and translation."""

    @property
    def num_vertices(self) -> int:
        return int(self.joint_regressor.shape[1])

    def neutral_params(self, batch_size: int = 1) -> Dict[str, torch.Tensor]:
        """Neutral parameters (zeros; subclasses override the shape's neutral value)."""
        return {
            k: torch.zeros((batch_size,) + tuple(s for s in shp[1:]), dtype=self.dtype)
            for k, shp in self.param_shapes().items()
        }

    @property
    def dtype(self) -> torch.dtype:
        return self.joint_regressor.dtype

    def validate(self, params: Mapping[str, object]) -> Dict[str, torch.Tensor]:
        """Check names, shapes, batch sizes and finiteness; fill missing parameters."""
        shapes = self.param_shapes()
        unknown = sorted(set(params) - set(shapes))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameters {unknown}; expected some of {sorted(shapes)}")
        checked = {k: check_param(self.name, k, v, shapes[k]) for k, v in params.items()}
        batch = {k: v.shape[0] for k, v in checked.items()}
        if len(set(batch.values())) > 1:
            raise ValueError(f"{self.name}: parameters disagree on the batch size: {batch}")
        size = next(iter(batch.values()), 1)
        if size == 0:
            raise ValueError(f"{self.name}: empty batch (batch size 0)")
        full = self.neutral_params(size)
        full.update({k: v.to(self.dtype) for k, v in checked.items()})
        return full

    def forward(self, **params) -> BodyOutput:
        """Pose a batch of bodies. See the module docstring for the parameters."""
        p = self.validate(params)
        vertices = self._posed_vertices(p["shape"], p["pose"])  # (B, V, 3)
        rot = axis_angle_to_matrix(p["global_orient"])  # (B, 3, 3)
        vertices = vertices @ rot.transpose(1, 2) + p["transl"][:, None, :]
        joints = torch.einsum("jv,bvd->bjd", self.joint_regressor, vertices)  # (B, J, 3)
        return BodyOutput(vertices=vertices, joints=joints)
