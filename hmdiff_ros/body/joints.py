"""The joint set every part of hmdiff_ros speaks, and its mappings to other skeletons.

``JOINT_NAMES`` (25 joints) starts with COCO-17 in COCO order, so ``joints[..., :17, :]``
is a COCO skeleton, then adds the joints robots and evaluation need: pelvis (the root),
spine, neck, head top, and heels and big toes (where the body meets the floor).

Definitions (all joints are linear in the mesh vertices, see ``BodyModel.joint_regressor``):

- COCO-17, heels and big toes: the body model's own keypoint regressors (Anny ships them).
- ``pelvis`` = mean of the two hips; ``neck`` = mean of the two shoulders (the "thorax" of
  Human3.6M); ``spine`` = mean of pelvis and neck; ``head_top`` = the crown of the head.

Mappings are matrices ``M`` of shape ``(ours, theirs)`` or ``(theirs, ours)`` whose rows
average the joints they combine, with a validity mask for joints that have no meaningful
counterpart. Apply them with :func:`map_joints`.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

COCO17_NAMES: Tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

JOINT_NAMES: Tuple[str, ...] = COCO17_NAMES + (
    "pelvis",
    "spine",
    "neck",
    "head_top",
    "left_heel",
    "right_heel",
    "left_big_toe",
    "right_big_toe",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX: Dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}
ROOT_JOINT = "pelvis"

# Bones for drawing skeletons (RViz LINE_LIST, overlays): pairs of joint names.
SKELETON_EDGES: Tuple[Tuple[str, str], ...] = (
    ("pelvis", "spine"),
    ("spine", "neck"),
    ("neck", "nose"),
    ("nose", "head_top"),
    ("nose", "left_eye"),
    ("nose", "right_eye"),
    ("left_eye", "left_ear"),
    ("right_eye", "right_ear"),
    ("neck", "left_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("neck", "right_shoulder"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("pelvis", "left_hip"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("left_ankle", "left_heel"),
    ("left_ankle", "left_big_toe"),
    ("pelvis", "right_hip"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
    ("right_ankle", "right_heel"),
    ("right_ankle", "right_big_toe"),
)

# Left/right pairs, for flip augmentation and left-right swap simulation.
FLIP_PERMUTATION: Tuple[int, ...] = tuple(
    JOINT_INDEX[n.replace("left_", "\0").replace("right_", "left_").replace("\0", "right_")] for n in JOINT_NAMES
)

MEDIAPIPE33_NAMES: Tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)

# Human3.6M-17 in the order of VideoPose3D / mmpose (index 1 is the subject's RIGHT hip).
H36M17_NAMES: Tuple[str, ...] = (
    "pelvis",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "spine",
    "thorax",
    "neck_nose",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
)

SMPL24_NAMES: Tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)

# Each of our joints as the mean of MediaPipe landmarks (None: MediaPipe has no such point).
_FROM_MEDIAPIPE: Dict[str, Sequence[str] | None] = {
    **{n: (n,) for n in COCO17_NAMES},
    "pelvis": ("left_hip", "right_hip"),
    "spine": ("left_hip", "right_hip", "left_shoulder", "right_shoulder"),
    "neck": ("left_shoulder", "right_shoulder"),
    "head_top": None,
    "left_heel": ("left_heel",),
    "right_heel": ("right_heel",),
    "left_big_toe": ("left_foot_index",),
    "right_big_toe": ("right_foot_index",),
}

# Each Human3.6M joint as one of ours. The hips, knees, ankles, shoulders, elbows and wrists
# are the same anatomical points; pelvis/spine/thorax/nose/head are close, not identical
# (see H36M17_EXACT for evaluating on the shared joints only).
_H36M_FROM_OURS: Dict[str, str] = {
    "pelvis": "pelvis",
    "right_hip": "right_hip",
    "right_knee": "right_knee",
    "right_ankle": "right_ankle",
    "left_hip": "left_hip",
    "left_knee": "left_knee",
    "left_ankle": "left_ankle",
    "spine": "spine",
    "thorax": "neck",
    "neck_nose": "nose",
    "head": "head_top",
    "left_shoulder": "left_shoulder",
    "left_elbow": "left_elbow",
    "left_wrist": "left_wrist",
    "right_shoulder": "right_shoulder",
    "right_elbow": "right_elbow",
    "right_wrist": "right_wrist",
}
H36M17_EXACT: Tuple[str, ...] = tuple(
    n for n in H36M17_NAMES if n not in ("pelvis", "spine", "thorax", "neck_nose", "head")
)

# Each SMPL joint as one of ours, where the two denote the same point.
_SMPL_FROM_OURS: Dict[str, str] = {
    "pelvis": "pelvis",
    "left_hip": "left_hip",
    "right_hip": "right_hip",
    "left_knee": "left_knee",
    "right_knee": "right_knee",
    "spine2": "spine",
    "left_ankle": "left_ankle",
    "right_ankle": "right_ankle",
    "neck": "neck",
    "left_shoulder": "left_shoulder",
    "right_shoulder": "right_shoulder",
    "left_elbow": "left_elbow",
    "right_elbow": "right_elbow",
    "left_wrist": "left_wrist",
    "right_wrist": "right_wrist",
}


def _averaging_matrix(
    rows: Sequence[str], cols: Sequence[str], sources: Dict[str, Sequence[str] | None]
) -> Tuple[np.ndarray, np.ndarray]:
    col_index = {name: j for j, name in enumerate(cols)}
    matrix = np.zeros((len(rows), len(cols)), dtype=np.float32)
    valid = np.zeros(len(rows), dtype=bool)
    for i, name in enumerate(rows):
        src = sources.get(name)
        if not src:
            continue
        for s in src:
            matrix[i, col_index[s]] = 1.0 / len(src)
        valid[i] = True
    return matrix, valid


def mediapipe_to_joints_matrix() -> Tuple[np.ndarray, np.ndarray]:
    """``(25, 33)`` matrix taking MediaPipe landmarks to our joints, and a ``(25,)`` validity
    mask (``head_top`` has no MediaPipe counterpart)."""
    return _averaging_matrix(JOINT_NAMES, MEDIAPIPE33_NAMES, _FROM_MEDIAPIPE)


def joints_to_h36m_matrix() -> Tuple[np.ndarray, np.ndarray]:
    """``(17, 25)`` matrix taking our joints to Human3.6M-17, and its validity mask."""
    return _averaging_matrix(H36M17_NAMES, JOINT_NAMES, {k: (v,) for k, v in _H36M_FROM_OURS.items()})


def joints_to_smpl_matrix() -> Tuple[np.ndarray, np.ndarray]:
    """``(24, 25)`` matrix taking our joints to SMPL-24 where both denote the same point;
    rows of SMPL joints without a counterpart (spine1/3, feet, collars, head, hands) are
    zero and masked invalid."""
    return _averaging_matrix(SMPL24_NAMES, JOINT_NAMES, {k: (v,) for k, v in _SMPL_FROM_OURS.items()})


def map_joints(points, matrix: np.ndarray):
    """Apply a mapping matrix ``(J_out, J_in)`` to points ``(..., J_in, D)`` (numpy or torch)."""
    if points.shape[-2] != matrix.shape[1]:
        raise ValueError(f"map_joints: points have {points.shape[-2]} joints, the mapping expects {matrix.shape[1]}")
    if isinstance(points, np.ndarray):
        return np.einsum("oj,...jd->...od", matrix.astype(points.dtype, copy=False), points)
    import torch

    m = torch.as_tensor(matrix, dtype=points.dtype, device=points.device)
    return torch.einsum("oj,...jd->...od", m, points)


def joint_indices(names: Sequence[str]) -> List[int]:
    """Indices of named joints in ``JOINT_NAMES``; unknown names raise a ``ValueError``."""
    unknown = [n for n in names if n not in JOINT_INDEX]
    if unknown:
        raise ValueError(f"unknown joint names {unknown}; known joints: {list(JOINT_NAMES)}")
    return [JOINT_INDEX[n] for n in names]


# The joints a pose prior (MediaPipe) observes: all of ours but head_top. Heatmap channels,
# U for DAT and the simulated prior use this order.
PRIOR_JOINT_NAMES: Tuple[str, ...] = tuple(
    n for n, ok in zip(JOINT_NAMES, mediapipe_to_joints_matrix()[1], strict=True) if ok
)
PRIOR_JOINT_INDICES: Tuple[int, ...] = tuple(JOINT_INDEX[n] for n in PRIOR_JOINT_NAMES)
PRIOR_FLIP_PERMUTATION: Tuple[int, ...] = tuple(
    PRIOR_JOINT_NAMES.index(JOINT_NAMES[FLIP_PERMUTATION[i]]) for i in PRIOR_JOINT_INDICES
)
