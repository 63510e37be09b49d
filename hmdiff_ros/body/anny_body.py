"""Anny adapter (pip ``anny``; Apache-2.0 code, CC0 MakeHuman assets): the free default body.

Anny has 13,718 vertices, a 104-bone rig and six phenotype parameters (gender, age,
muscle, weight, height, proportions, each in [0, 1]) covering children to elders. Its own
frame is z-up with the body facing -y; this adapter rotates everything into the canonical
body frame of :mod:`hmdiff_ros.body.base` (y up, facing +z).

Only training-data generation and the topology builder need Anny (and warp). Inference
uses the shipped topology asset instead.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch

from hmdiff_ros.body.base import BodyModel, axis_angle_to_matrix
from hmdiff_ros.body.joints import JOINT_NAMES

PHENOTYPES: Tuple[str, ...] = ("gender", "age", "muscle", "weight", "height", "proportions")

# Anny frame (z up, facing -y) -> canonical frame (y up, facing +z): x' = x, y' = z, z' = -y.
ANNY_TO_CANONICAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# Crown of the head: rest-pose vertices within this distance of the highest point.
HEAD_TOP_BAND_M = 0.008
REGRESSOR_MIN_WEIGHT = 1e-4


def _import_anny():
    try:
        import contextlib
        import sys

        import warp

        if hasattr(warp, "LOG_WARNING"):  # no info lines on stdout (they would break JSON output)
            warp.config.log_level = warp.LOG_WARNING
        else:  # older warp
            warp.config.quiet = True
        with contextlib.redirect_stdout(sys.stderr):
            warp.init()
        import anny
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Anny body model is not installed: pip install 'hmdiff_ros[anny]' "
            "(or pip install anny==0.6.2). Inference does not need it; training-data "
            "generation and 'hmdiff assets build' do."
        ) from exc
    return anny


class AnnyBody(BodyModel):
    """Anny in the canonical frame, returning our 25 joints.

    Parameters: ``shape`` ``(B, 6)`` phenotypes in ``PHENOTYPES`` order (neutral 0.5);
    ``pose`` ``(B, 103, 3)`` axis-angle per bone (``bone_labels[1:]``), each a rotation about
    the canonical axes at the bone's head, relative to the rest pose (Anny's ``local-ref``
    parameterisation); ``global_orient`` and ``transl`` as in the base class. The first
    construction builds Anny's data (minutes) and caches it in ``~/.cache/anny``.
    """

    name = "anny"

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        anny = _import_anny()
        self.anny = anny.Anny().to(dtype=dtype)
        self.bone_labels: Tuple[str, ...] = tuple(self.anny.bone_labels)
        self.faces = self.anny.get_triangular_faces().cpu().numpy().astype(np.int64)
        self.register_buffer("to_canonical", torch.as_tensor(ANNY_TO_CANONICAL, dtype=dtype))
        self.register_buffer("joint_regressor", self._build_joint_regressor(anny).to(dtype))

    def _build_joint_regressor(self, anny) -> torch.Tensor:
        """(25, V): Anny's COCO-WholeBody regressors plus the derived joints."""
        keypoints = anny.KeypointsRegressor.coco(self.anny)
        rows: Dict[str, torch.Tensor] = {}
        for i, label in enumerate(keypoints.labels):
            # Anny's regressors spread tiny weights over thousands of vertices; dropping those
            # below REGRESSOR_MIN_WEIGHT (< 0.6% of a row's mass) leaves ~1,150 vertices to pose.
            row = keypoints.regression_weights[i].double()
            row = torch.where(row.abs() < REGRESSOR_MIN_WEIGHT, 0.0, row)
            rows[label] = row / row.sum()
        rows["pelvis"] = 0.5 * (rows["left_hip"] + rows["right_hip"])
        rows["neck"] = 0.5 * (rows["left_shoulder"] + rows["right_shoulder"])
        rows["spine"] = 0.5 * (rows["pelvis"] + rows["neck"])
        rest = self.anny.template_vertices.double()  # (V, 3), Anny frame: z is up
        crown = rest[:, 2] > rest[:, 2].max() - HEAD_TOP_BAND_M
        rows["head_top"] = crown.double() / crown.sum()
        return torch.stack([rows[name] for name in JOINT_NAMES])  # (25, V)

    def param_shapes(self) -> Dict[str, Tuple[int | None, ...]]:
        return {
            "shape": (None, len(PHENOTYPES)),
            "pose": (None, len(self.bone_labels) - 1, 3),
            "global_orient": (None, 3),
            "transl": (None, 3),
        }

    def neutral_params(self, batch_size: int = 1) -> Dict[str, torch.Tensor]:
        params = super().neutral_params(batch_size)
        params["shape"] = torch.full_like(params["shape"], 0.5)
        return params

    def anny_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """Axis-angle ``(B, 103, 3)`` in canonical axes -> Anny's ``(B, 104, 4, 4)`` deltas."""
        rot = axis_angle_to_matrix(pose)  # (B, 103, 3, 3), canonical axes
        c = self.to_canonical
        rot = c.T @ rot @ c  # the same rotations expressed in Anny's axes
        delta = torch.eye(4, dtype=pose.dtype, device=pose.device).repeat(pose.shape[0], pose.shape[1] + 1, 1, 1)
        delta[:, 1:, :3, :3] = rot
        return delta

    def _posed_vertices(self, shape: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        if ((shape < 0) | (shape > 1)).any():
            raise ValueError(f"anny: parameter 'shape' (phenotypes {PHENOTYPES}) must lie in [0, 1]")
        phenotypes = {label: shape[:, i] for i, label in enumerate(PHENOTYPES)}
        out = self.anny(self.anny_pose(pose), phenotypes)
        return out["vertices"] @ self.to_canonical.T  # (B, V, 3)
