"""Readers for real datasets in their common layouts, giving camera-frame ground truth.

- **Human3.6M**, mmpose ``body3d`` layout (``*.npz`` with ``imgname``, ``S`` (N, 17, 4) camera
  coordinates in metres, ``part`` (N, 17, 3) pixels, ``center``, ``scale``) and optional
  ``cameras.pkl`` (keyed ``(subject, camera_id)``; ``f``, ``c`` give the intrinsics);
- **3DPW**, the official sequence files (``sequenceFiles/<split>/<seq>.pkl``: per person
  ``poses`` (F, 72), ``betas``, ``trans`` (F, 3), ``genders``; ``cam_poses`` (F, 4, 4) world ->
  camera, ``cam_intrinsics`` (3, 3), ``img_frame_ids``), turned into camera-frame SMPL
  parameters, and into our joints and meshes when the SMPL body model is given.

The dataset files themselves are the datasets' own (pickles written with Python 2 for 3DPW
and H36M cameras): read only files you trust.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np

from hmdiff_ros.body.joints import H36M17_NAMES


@dataclass
class Frame:
    """One person in one image, ground truth in the camera frame (metres)."""

    image: Path
    joints: np.ndarray  # (J, 3) camera frame, metres, named by joint_names
    joint_names: tuple
    K: np.ndarray | None = None  # (3, 3)
    joints_2d: np.ndarray | None = None  # (J, 2) pixels
    extra: Dict = field(default_factory=dict)  # e.g. SMPL parameters, vertices


def _load_pickle(path: Path):
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot read '{path}': {exc}") from exc


def read_h36m_body3d(npz_path: "str | Path", cameras_pkl: "str | Path | None" = None) -> List[Frame]:
    """Human3.6M frames (H36M-17 joints, index 1 = the subject's right hip)."""
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"Human3.6M annotation file '{path}' not found")
    try:
        with np.load(path, allow_pickle=False) as d:
            names, s3d, s2d = d["imgname"], d["S"], d["part"]
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"'{path}' is not an mmpose Human3.6M body3d file (needs imgname, S, part): {exc}") from exc
    if s3d.ndim != 3 or s3d.shape[1:] != (17, 4):
        raise ValueError(f"'{path}': S must have shape (N, 17, 4), got {s3d.shape}")
    cams = _load_pickle(Path(cameras_pkl)) if cameras_pkl is not None else None
    frames = []
    for name, joints, part in zip(names, s3d, s2d, strict=True):
        name = str(name)
        K = None
        if cams is not None:
            subject, cam_id = name.split("/")[0], name.split("/")[-1].split(".")[1].split("_")[0]
            cam = cams.get((subject, cam_id))
            if cam is None:
                raise ValueError(f"camera ({subject}, {cam_id}) of '{name}' is not in '{cameras_pkl}'")
            f, c = np.ravel(cam["f"]), np.ravel(cam["c"])
            K = np.array([[f[0], 0, c[0]], [0, f[1], c[1]], [0, 0, 1.0]])
        frames.append(
            Frame(path.parent / name, joints[:, :3].astype(np.float64), H36M17_NAMES, K, part[:, :2].astype(np.float64))
        )
    return frames


def read_3dpw_sequence(pkl_path: "str | Path", smpl_model_path: "str | Path | None" = None) -> List[Frame]:
    """3DPW people per valid frame, with camera-frame SMPL parameters in ``extra``
    (``global_orient``, ``body_pose``, ``betas``, ``transl``, ``gender``); with
    ``smpl_model_path``, ``joints`` are our 25 joints and ``extra['vertices']`` the mesh."""
    path = Path(pkl_path)
    if not path.is_file():
        raise FileNotFoundError(f"3DPW sequence file '{path}' not found")
    seq = _load_pickle(path)
    need = ("poses", "betas", "trans", "cam_poses", "cam_intrinsics", "genders", "img_frame_ids")
    missing = [k for k in need if k not in seq] if isinstance(seq, dict) else list(need)
    if missing:
        raise ValueError(f"'{path}' is not a 3DPW sequence file: missing {missing}")
    K = np.asarray(seq["cam_intrinsics"], dtype=np.float64)
    cam_poses = np.asarray(seq["cam_poses"], dtype=np.float64)  # (F, 4, 4) world -> camera
    valid = seq.get("campose_valid", [np.ones(len(cam_poses), bool)] * len(seq["poses"]))
    name = seq.get("sequence", path.stem)
    bodies: Dict[str, object] = {}
    frames = []
    for person, (poses, betas, trans, gender) in enumerate(
        zip(seq["poses"], seq["betas"], seq["trans"], seq["genders"], strict=True)
    ):
        gender = {"m": "male", "f": "female"}.get(str(gender), "neutral")
        for i, frame_id in enumerate(seq["img_frame_ids"]):
            if not np.asarray(valid[person])[i]:
                continue
            R, t = cam_poses[i, :3, :3], cam_poses[i, :3, 3]
            root = rotvec_to_matrix(np.asarray(poses[i][:3], dtype=np.float64))
            params = {
                "global_orient": matrix_to_rotvec(R @ root),
                "body_pose": np.asarray(poses[i][3:72], dtype=np.float64).reshape(23, 3),
                "betas": np.asarray(betas, dtype=np.float64)[:10],
                "world_transl": np.asarray(trans[i], dtype=np.float64),
                "cam_rotation": R,
                "cam_translation": t,
                "gender": gender,
            }
            image = path.parent.parent.parent / "imageFiles" / name / f"image_{int(frame_id):05d}.jpg"
            frames.append(Frame(image, np.zeros((0, 3)), (), K, extra={"person": person, **params}))
    if smpl_model_path is not None:
        _pose_3dpw(frames, smpl_model_path, bodies)
    return frames


def _pose_3dpw(frames: List[Frame], model_path, bodies: Dict) -> None:
    """Run SMPL in the world frame, then move to the camera: x_cam = R x_world + t."""
    import torch

    from hmdiff_ros.body.joints import JOINT_NAMES
    from hmdiff_ros.body.smpl_body import SMPLBody

    for fr in frames:
        g = fr.extra["gender"]
        if g not in bodies:
            bodies[g] = SMPLBody(model_path, "smpl", gender=g, dtype=torch.float64)
        body = bodies[g]
        R, t = fr.extra["cam_rotation"], fr.extra["cam_translation"]
        world_orient = matrix_to_rotvec(R.T @ rotvec_to_matrix(fr.extra["global_orient"]))
        with torch.no_grad():
            out = body(
                shape=fr.extra["betas"][None],
                pose=fr.extra["body_pose"][None],
                global_orient=world_orient[None],
                transl=fr.extra["world_transl"][None],
            )
        fr.joints = out.joints[0].numpy() @ R.T + t
        fr.joint_names = JOINT_NAMES
        fr.extra["vertices"] = out.vertices[0].numpy() @ R.T + t


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """The rotation matrix of an axis-angle vector (Rodrigues)."""
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    """The axis-angle vector of a rotation matrix (the inverse of :func:`rotvec_to_matrix`)."""
    cos = np.clip((np.trace(m) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-6:  # 180 degrees: axis from the symmetric part
        axis = np.sqrt(np.clip((np.diag(m) + 1) / 2, 0, None))
        axis *= np.sign([1, m[0, 1] + 1e-12, m[0, 2] + 1e-12])
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / (2 * np.sin(angle))
    return axis * angle
