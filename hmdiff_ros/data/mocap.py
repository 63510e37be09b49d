"""Real motion-capture poses for Anny: BVH frames retargeted by matching bone directions.

Each frame's joints (:mod:`hmdiff_ros.data.bvh`) are put in the body's own frame (x from
the right hip to the left, y the world's up made orthogonal to it, z = x × y forward, origin
at the mid-hip), then an Anny pose is fitted by gradient descent so that the directions of
its limb, trunk and head segments (our joints from :class:`~hmdiff_ros.data.posing.FastPoser`)
match the capture's: directions, not positions, so that the pose carries over to bodies of
any size and proportions and the two skeletons' joint definitions matter less. Only the bones
that move those segments are fitted (:data:`FIT_BONES`); twist bones, fingers and toes stay
at rest. A frame whose fit leaves a segment more than ``max_angle_deg`` off is dropped.

Sources and licences: ``docs/data.md`` ("Motion capture").
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.data.bvh import BVH, CC_BASE_JOINTS
from hmdiff_ros.files import made_folder, write_npz

# Anny bones whose rotations the fit sets (all others stay at rest)
FIT_BONES: Tuple[str, ...] = (
    "upperleg01.L",
    "lowerleg01.L",
    "foot.L",
    "upperleg01.R",
    "lowerleg01.R",
    "foot.R",
    "spine05",
    "spine04",
    "spine03",
    "spine02",
    "spine01",
    "clavicle.L",
    "upperarm01.L",
    "lowerarm01.L",
    "clavicle.R",
    "upperarm01.R",
    "lowerarm01.R",
    "neck01",
    "neck02",
    "head",
)
# segments whose directions are matched: (from, to) joint names; "mid_hip"/"mid_shoulder"/"head"
# are derived points (the head: our ears' midpoint, the capture's head joint)
SEGMENTS: Tuple[Tuple[str, str], ...] = (
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("left_ankle", "left_big_toe"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
    ("right_ankle", "right_big_toe"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("mid_hip", "mid_shoulder"),
    ("right_shoulder", "left_shoulder"),
    ("right_hip", "left_hip"),
    ("mid_shoulder", "head"),
)


def _points(joints: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    pts = dict(joints)
    pts["mid_hip"] = (joints["left_hip"] + joints["right_hip"]) / 2
    pts["mid_shoulder"] = (joints["left_shoulder"] + joints["right_shoulder"]) / 2
    return pts


def body_frame(joints: Dict[str, np.ndarray], up: np.ndarray) -> np.ndarray:
    """Rotations ``(F, 3, 3)`` whose columns are the body's axes in the capture's frame: x from
    the right hip to the left, y ``up`` made orthogonal to x, z = x × y (forward)."""
    x = joints["left_hip"] - joints["right_hip"]
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = up[None] - (x @ up)[:, None] * x
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def capture_directions(bvh: BVH, frames: Sequence[int], scale: float = 0.01) -> np.ndarray:
    """Unit directions ``(F, S, 3)`` of :data:`SEGMENTS` of ``frames`` in the body frame
    (canonical axes: x left, y up, z forward), and the frames' joints for checks."""
    pos = bvh.positions(frames) * scale
    joints = {name: pos[:, bvh.index(rig)] for name, rig in CC_BASE_JOINTS.items()}
    frame = body_frame(joints, np.array([0.0, 1.0, 0.0]))  # BVH: y up
    pts = _points(joints)
    out = []
    for a, b in SEGMENTS:
        d = np.einsum("fji,fj->fi", frame, pts[b] - pts[a])  # into the body's axes
        out.append(d / np.linalg.norm(d, axis=-1, keepdims=True))
    return np.stack(out, axis=1)


def _anny_points(joints: torch.Tensor) -> Dict[str, torch.Tensor]:
    j = {name: joints[:, JOINT_INDEX[name]] for name in JOINT_INDEX}
    j["head"] = (j["left_ear"] + j["right_ear"]) / 2
    j["mid_hip"] = (j["left_hip"] + j["right_hip"]) / 2
    j["mid_shoulder"] = (j["left_shoulder"] + j["right_shoulder"]) / 2
    return j


def anny_directions(joints: torch.Tensor) -> torch.Tensor:
    """Unit directions ``(B, S, 3)`` of :data:`SEGMENTS` of our joints ``(B, 25, 3)`` (canonical frame)."""
    pts = _anny_points(joints)
    d = torch.stack([pts[b] - pts[a] for a, b in SEGMENTS], dim=1)
    return d / d.norm(dim=-1, keepdim=True)


def fit_poses(
    poser,
    bone_labels: Sequence[str],
    targets: np.ndarray,
    shape_id: int = 0,
    iterations: int = 200,
    lr: float = 0.05,
    rest_weight: float = 1e-3,
) -> Tuple[np.ndarray, np.ndarray]:
    """Anny poses ``(F, 103, 3)`` whose segment directions match ``targets`` ``(F, S, 3)``
    (:func:`capture_directions`), and each frame's worst segment angle (degrees) after the fit.
    ``poser``: a :class:`~hmdiff_ros.data.posing.FastPoser`; the fit poses body ``shape_id``."""
    labels = [str(b) for b in bone_labels]
    bones = [labels.index(b) - 1 for b in FIT_BONES]  # pose rows are bones 1..103
    target = torch.as_tensor(targets, dtype=torch.float32)
    n = len(target)
    params = torch.zeros(n, len(bones), 3, requires_grad=True)
    opt = torch.optim.Adam([params], lr=lr)
    ids = torch.full((n,), shape_id, dtype=torch.long)
    index = torch.as_tensor(bones)

    def pose_of(p: torch.Tensor) -> torch.Tensor:
        pose = torch.zeros(n, len(labels) - 1, 3)
        return pose.index_copy(1, index, p)

    for _ in range(iterations):
        _, joints = poser(ids, pose_of(params), count=0)
        loss = ((anny_directions(joints) - target) ** 2).sum(-1).mean() + rest_weight * (params**2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pose = pose_of(params)
        _, joints = poser(ids, pose, count=0)
        cos = (anny_directions(joints) * target).sum(-1).clamp(-1, 1)
        worst = torch.rad2deg(torch.acos(cos)).amax(1)
    return pose.numpy(), worst.numpy()


def save_poses(path: "str | Path", result: Dict[str, np.ndarray]) -> None:
    """Write :func:`retarget_clips`'s ``result`` to ``path`` (.npz), whole or not at all."""
    path = Path(path)
    with made_folder(path.parent):
        write_npz(path, result)


def clip_frames(bvh: BVH, fps: float, skip_first: bool = True) -> List[int]:
    """Frame indices of ``bvh`` at about ``fps`` frames per second (the first frame of the CMU
    re-export is a T-pose added to each clip: skipped)."""
    step = max(1, int(round(1.0 / (fps * bvh.frame_time))))
    return list(range(1 if skip_first else 0, bvh.num_frames, step))


def retarget_clips(
    paths: Sequence, poser, bone_labels: Sequence[str], fps: float = 10.0, max_angle_deg: float = 10.0, batch: int = 512
) -> Dict[str, np.ndarray]:
    """Retarget the clips at ``paths`` (BVH files of the CMU re-export's rig) at about ``fps``
    frames per second: ``{"pose": (N, len(FIT_BONES), 3) float32 axis-angle of FIT_BONES,
    "clip": (N,) index into "clips", "frame": (N,), "worst_deg": (N,), "clips": names,
    "dropped": frames whose fit stayed over max_angle_deg}``."""
    from hmdiff_ros.data.bvh import read_bvh

    labels = [str(b) for b in bone_labels]
    rows = [labels.index(b) - 1 for b in FIT_BONES]
    targets, clip, frame = [], [], []
    names = []
    for k, path in enumerate(paths):
        bvh = read_bvh(path)
        frames = clip_frames(bvh, fps)
        targets.append(capture_directions(bvh, frames))
        clip += [k] * len(frames)
        frame += frames
        names.append(str(getattr(path, "name", path)))
    target = np.concatenate(targets)
    poses, worst = [], []
    for start in range(0, len(target), batch):
        p, w = fit_poses(poser, labels, target[start : start + batch])
        poses.append(p[:, rows])
        worst.append(w)
    pose, worst_deg = np.concatenate(poses), np.concatenate(worst)
    keep = worst_deg <= max_angle_deg
    return {
        "pose": pose[keep].astype(np.float32),
        "clip": np.asarray(clip)[keep],
        "frame": np.asarray(frame)[keep],
        "worst_deg": worst_deg[keep].astype(np.float32),
        "clips": np.asarray(names),
        "fit_bones": np.asarray(FIT_BONES),
        "dropped": np.asarray(int((~keep).sum())),
    }
