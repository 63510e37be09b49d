"""SMPL / SMPL-X adapter through ``smplx``, for users who hold the licensed model files.

The files cannot be shipped or downloaded by this package: register at
https://smpl.is.tue.mpg.de (SMPL) or https://smpl-x.is.tue.mpg.de (SMPL-X), accept the
licence, download the models and point ``model_path`` at the file (``SMPL_NEUTRAL.pkl``,
``SMPLX_NEUTRAL.npz``, ...) or at the folder holding them (``smpl/`` / ``smplx/``
sub-folders, as ``smplx.create`` expects, or the files directly).

SMPL already uses the canonical frame (y up, facing +z), so no rotation is applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Literal, Tuple

import numpy as np
import torch

from hmdiff_ros.body.base import BodyModel
from hmdiff_ros.body.joints import JOINT_NAMES

SmplType = Literal["smpl", "smplx"]
SMPL_TYPES: Tuple[str, ...] = ("smpl", "smplx")
GENDERS: Tuple[str, ...] = ("neutral", "male", "female")
WHERE_TO_GET = {
    "smpl": "https://smpl.is.tue.mpg.de (files SMPL_NEUTRAL/MALE/FEMALE.pkl)",
    "smplx": "https://smpl-x.is.tue.mpg.de (files SMPLX_NEUTRAL/MALE/FEMALE.npz or .pkl)",
}
# Skeleton joints shared by SMPL and SMPL-X (indices into the model's J_regressor rows).
_SKELETON = {
    "left_hip": 1,
    "right_hip": 2,
    "left_knee": 4,
    "right_knee": 5,
    "left_ankle": 7,
    "right_ankle": 8,
    "left_shoulder": 16,
    "right_shoulder": 17,
    "left_elbow": 18,
    "right_elbow": 19,
    "left_wrist": 20,
    "right_wrist": 21,
}
# Surface points (vertex ids from smplx.vertex_ids; head top: a crown vertex).
_VERTEX_KEYS = {
    "nose": "nose",
    "left_eye": "leye",
    "right_eye": "reye",
    "left_ear": "lear",
    "right_ear": "rear",
    "left_heel": "LHeel",
    "right_heel": "RHeel",
    "left_big_toe": "LBigToe",
    "right_big_toe": "RBigToe",
}
_HEAD_TOP_VERTEX = {"smpl": 411, "smplx": 8976}
_BODY_POSE_JOINTS = {"smpl": 23, "smplx": 21}


def resolve_model_file(model_path: "str | Path", model_type: str, gender: str) -> Path:
    """Find the model file; a missing or wrong path raises ``FileNotFoundError`` that says
    where the files come from."""
    if model_type not in SMPL_TYPES:
        raise ValueError(f"model_type must be one of {SMPL_TYPES}, got {model_type!r}")
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    path = Path(model_path).expanduser()
    stem = f"{model_type.upper()}_{gender.upper()}"
    candidates = (
        [path]
        if path.is_file()
        else [path / sub / f"{stem}.{ext}" for sub in ("", model_type) for ext in ("npz", "pkl")]
    )
    for cand in candidates:
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"{model_type.upper()} model file not found at '{path}' (looked for {stem}.npz/.pkl "
        f"there and in '{model_type}/'). The files are licensed and not shipped: download them "
        f"from {WHERE_TO_GET[model_type]} and pass their path."
    )


class SMPLBody(BodyModel):
    """SMPL or SMPL-X via ``smplx``: ``shape`` = betas ``(B, num_betas)``, ``pose`` = body
    joint rotations ``(B, 23, 3)`` (SMPL) or ``(B, 21, 3)`` (SMPL-X, hands and face neutral)."""

    def __init__(
        self,
        model_path: "str | Path",
        model_type: SmplType = "smpl",
        gender: str = "neutral",
        num_betas: int = 10,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        try:
            import smplx
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("SMPL support needs smplx: pip install 'hmdiff_ros[smpl]'") from exc
        model_file = resolve_model_file(model_path, model_type, gender)
        self.name = model_type
        self.model_type = model_type
        self.num_betas = num_betas
        try:
            self.smpl = smplx.create(
                str(model_file),
                model_type=model_type,
                gender=gender,
                num_betas=num_betas,
                use_pca=False,
                flat_hand_mean=True,
                dtype=dtype,
            )
        except Exception as exc:
            raise ValueError(
                f"could not load {model_type.upper()} model '{model_file}': {exc}. "
                f"Expected the official file from {WHERE_TO_GET[model_type]}."
            ) from exc
        self.faces = np.asarray(self.smpl.faces, dtype=np.int64)
        self.register_buffer("joint_regressor", self._build_joint_regressor().to(dtype))

    def _build_joint_regressor(self) -> torch.Tensor:
        import smplx.vertex_ids

        j_reg = torch.as_tensor(np.asarray(self.smpl.J_regressor), dtype=torch.float64)  # (24|55, V)
        num_vertices = j_reg.shape[1]
        ids = smplx.vertex_ids.vertex_ids["smplh" if self.model_type == "smpl" else "smplx"]

        def vertex(index: int) -> torch.Tensor:
            row = torch.zeros(num_vertices, dtype=torch.float64)
            row[index] = 1.0
            return row

        rows: Dict[str, torch.Tensor] = {name: j_reg[i] for name, i in _SKELETON.items()}
        rows.update({name: vertex(ids[key]) for name, key in _VERTEX_KEYS.items()})
        rows["head_top"] = vertex(_HEAD_TOP_VERTEX[self.model_type])
        rows["pelvis"] = 0.5 * (rows["left_hip"] + rows["right_hip"])
        rows["neck"] = 0.5 * (rows["left_shoulder"] + rows["right_shoulder"])
        rows["spine"] = 0.5 * (rows["pelvis"] + rows["neck"])
        return torch.stack([rows[name] for name in JOINT_NAMES])

    def param_shapes(self) -> Dict[str, Tuple[int | None, ...]]:
        return {
            "shape": (None, self.num_betas),
            "pose": (None, _BODY_POSE_JOINTS[self.model_type], 3),
            "global_orient": (None, 3),
            "transl": (None, 3),
        }

    def _posed_vertices(self, shape: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        batch = shape.shape[0]
        zeros = torch.zeros(batch, 3, dtype=shape.dtype, device=shape.device)
        out = self.smpl(
            betas=shape,
            body_pose=pose.reshape(batch, -1),
            global_orient=zeros,
            transl=zeros,
            return_verts=True,
        )
        return out.vertices  # (B, V, 3)
