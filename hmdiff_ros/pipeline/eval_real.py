"""``hmdiff eval-real``: the pipeline on real frames with ground truth (read from a folder).

The folder has the layout of the project's real evaluation fixtures (Human3.6M and
MPI-INF-3DHP frames with metric 3D joints and calibrated cameras; COCO, MPII, OCHuman and
PoseTrack18 photos with annotated 2D keypoints and person boxes); see ``docs/eval_real.md``.
Every person is given to the pipeline by its annotated box (one prior run per box).

- **3D** (Human3.6M, MPI-INF-3DHP): MPJPE and PA-MPJPE (mm) on the 12 limb joints both
  skeletons share (shoulders, elbows, wrists, hips, knees, ankles), after aligning the
  mid-hip points (MPJPE) or a similarity Procrustes fit (PA-MPJPE). The frames' own pinhole
  intrinsics are given to the pipeline.
- **2D** (COCO, MPII, OCHuman, PoseTrack18): PCK@0.1, a joint is correct when its
  reprojection lies within 0.1 x the longer side of the annotated person box from the
  annotated keypoint; every annotated joint counts, and a person the pipeline misses counts
  as all joints wrong.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import cv2
import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.camera import intrinsics_from_fov
from hmdiff_ros.model.metrics import pa_mpjpe_mm
from hmdiff_ros.pipeline.io import overlay, read_image

LIMBS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# indices of LIMBS in each dataset's 17-joint order (see the fixtures' README)
H36M_LIMBS = (11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3)
MPI_INF_3DHP_LIMBS = (5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
COCO17 = tuple(range(17))  # our first 17 joints are COCO-17, same order
POSETRACK = {0: "nose", 2: "head_top", **dict(zip(range(5, 17), LIMBS, strict=True))}  # COCO order, 1: head_bottom
MPII = {
    0: "right_ankle", 1: "right_knee", 2: "right_hip", 3: "left_hip", 4: "left_knee", 5: "left_ankle",
    9: "head_top", 10: "right_wrist", 11: "right_elbow", 12: "right_shoulder", 13: "left_shoulder",
    14: "left_elbow", 15: "left_wrist",
}  # fmt: skip
DATASETS_3D = ("h36m", "mpi_inf_3dhp")
DATASETS_2D = ("coco", "mpii", "ochuman", "posetrack18")


def _K(f, c) -> np.ndarray:
    f, c = np.asarray(f, dtype=np.float64).ravel(), np.asarray(c, dtype=np.float64).ravel()
    return np.array([[f[0], 0, c[0]], [0, f[1], c[1]], [0, 0, 1.0]])


def _pickle(path: Path):
    with path.open("rb") as fh:
        return pickle.load(fh, encoding="latin1")


def _square(center, scale) -> np.ndarray:
    s = float(np.asarray(scale).ravel()[0]) * 200.0
    cx, cy = np.asarray(center, dtype=np.float64).ravel()[:2]
    return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])


def frames_3d(root: Path) -> Iterator[Tuple[str, Path, np.ndarray, np.ndarray, np.ndarray]]:
    """``(dataset, image, K, box, limb joints (12, 3) metres, camera frame)`` per 3D frame."""
    h36m = root / "h36m"
    if (h36m / "test_h36m_body3d.npz").is_file():
        d = np.load(h36m / "test_h36m_body3d.npz")
        cams = _pickle(h36m / "cameras.pkl")
        for i, name in enumerate(d["imgname"]):
            name = str(name)
            subject, cam_id = name.split("/")[0], name.split("/")[-1].split(".")[1].split("_")[0]
            cam = cams[(subject, cam_id)]
            box = _square(d["center"][i], d["scale"][i])
            yield "h36m", h36m / name, _K(cam["f"], cam["c"]), box, d["S"][i, list(H36M_LIMBS), :3]
    mpi = root / "mpi_inf_3dhp"
    for split, cam_file in (("test", "cameras_test.pkl"), ("train", "cameras_train.pkl")):
        npz = mpi / f"test_3dhp_{split}.npz"
        if not npz.is_file():
            continue
        d, cams = np.load(npz), _pickle(mpi / cam_file)
        for i, name in enumerate(d["imgname"]):
            name = str(name)
            key = name.split("_")[0] if split == "test" else "_".join(name.split("_")[:3])
            cam = cams[key]
            box = _square(d["center"][i], d["scale"][i])
            yield "mpi_inf_3dhp", mpi / name, _K(cam["f"], cam["c"]), box, d["S"][i, list(MPI_INF_3DHP_LIMBS), :3]


def people_2d(root: Path) -> Iterator[Tuple[str, Path, np.ndarray, Dict[str, np.ndarray]]]:
    """``(dataset, image, box (u0, v0, u1, v1), {joint name: (u, v)})`` per annotated person."""
    for name, folder, ann in (
        ("coco", root / "coco", root / "coco" / "test_coco.json"),
        ("ochuman", root / "ochuman", root / "ochuman" / "test_ochuman.json"),
        ("posetrack18", root / "posetrack18", root / "posetrack18" / "annotations" / "test_posetrack18_val.json"),
    ):
        if not ann.is_file():
            continue
        data = json.loads(ann.read_text())
        images = {im["id"]: im for im in data["images"]}
        table = POSETRACK if name == "posetrack18" else {k: n for k, n in enumerate(_coco_names())}
        for a in data["annotations"]:
            kp = np.asarray(a.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
            if len(kp) != 17 or not (kp[:, 2] > 0).any() or "bbox" not in a:
                continue
            x, y, w, h = a["bbox"]
            if w <= 1 or h <= 1:
                continue
            joints = {n: kp[k, :2] for k, n in table.items() if kp[k, 2] > 0}
            yield name, folder / images[a["image_id"]]["file_name"], np.array([x, y, x + w, y + h]), joints
    mpii = root / "mpii" / "test_mpii.json"
    if mpii.is_file():
        for rec in json.loads(mpii.read_text()):
            kp = np.asarray(rec["joints"], dtype=np.float64) - 1.0  # MATLAB 1-based
            vis = np.asarray(rec["joints_vis"], dtype=np.float64)
            joints = {n: kp[k] for k, n in MPII.items() if vis[k] > 0}
            yield "mpii", root / "mpii" / rec["image"], _square(rec["center"], rec["scale"]), joints


def _coco_names() -> List[str]:
    from hmdiff_ros.body.joints import JOINT_NAMES

    return list(JOINT_NAMES[:17])


def _best_person(people, box: np.ndarray):
    """The result whose crop centre is nearest the annotated box centre (one box in -> at most one out)."""
    if not people:
        return None
    centre = (box[:2] + box[2:]) / 2
    return min(people, key=lambda p: np.linalg.norm((p.box[:2] + p.box[2:]) / 2 - centre))


def evaluate_real(pipe, root: "str | Path", out: "str | Path | None" = None, progress: bool = True) -> Dict:
    """The ``hmdiff eval-real`` figures (see the module docstring) and a per-dataset breakdown."""
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"eval-real data folder '{root}' does not exist")
    items_3d, items_2d = list(frames_3d(root)), list(people_2d(root))
    if not items_3d and not items_2d:
        raise ValueError(
            f"'{root}' holds no known real evaluation data (expected h36m/, mpi_inf_3dhp/, coco/, mpii/, "
            "ochuman/ or posetrack18/ as in the fixtures' README)"
        )
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    per: Dict[str, Dict] = {}
    errors_3d, pa_3d, missed_3d = [], [], 0
    lj = [JOINT_INDEX[n] for n in LIMBS]
    hips = [LIMBS.index("left_hip"), LIMBS.index("right_hip")]
    for ds, path, K, box, gt in tqdm(items_3d, desc="3D frames", disable=not progress):
        image = read_image(path)
        person = _best_person(pipe(image, K, boxes=[box]), box)
        row = per.setdefault(ds, {"frames": 0, "missed": 0, "mpjpe_mm": [], "pa_mpjpe_mm": []})
        if person is None:
            row["missed"] += 1
            missed_3d += 1
            continue
        pred = person.joints[lj]
        e = np.linalg.norm((pred - pred[hips].mean(0)) - (gt - gt[hips].mean(0)), axis=-1).mean() * 1000
        pa = float(pa_mpjpe_mm(pred[None], gt[None])[0])
        errors_3d.append(e)
        pa_3d.append(pa)
        row["frames"] += 1
        row["mpjpe_mm"].append(e)
        row["pa_mpjpe_mm"].append(pa)
        if out is not None:
            cv2.imwrite(str(out / f"{ds}_{path.stem}.jpg"), overlay(image, [person], K, pipe.topology.full_faces))
    hits, total = 0, 0
    cache: Dict[Path, np.ndarray] = {}
    drawn: Dict[Path, list] = {}
    for ds, path, box, joints in tqdm(items_2d, desc="2D people", disable=not progress):
        if path not in cache:
            cache[path] = read_image(path)
        image = cache[path]
        K = intrinsics_from_fov(image.shape[1], image.shape[0], pipe.cfg.hfov_deg)
        person = _best_person(pipe(image, K, boxes=[box]), box)
        row = per.setdefault(ds, {"people": 0, "missed": 0, "hits": 0, "joints": 0})
        row["people"] += 1
        thr = 0.1 * max(box[2] - box[0], box[3] - box[1])
        ok = 0
        if person is None:
            row["missed"] += 1
        else:
            drawn.setdefault(path, []).append((person, K))
            ok = sum(int(np.linalg.norm(person.joints_uv[JOINT_INDEX[n]] - uv) <= thr) for n, uv in joints.items())
        row["hits"] += ok
        row["joints"] += len(joints)
        hits, total = hits + ok, total + len(joints)
    if out is not None:
        for path, people in drawn.items():
            image = cache[path]
            cv2.imwrite(str(out / f"{path.parent.name}_{path.stem}.jpg"),
                        overlay(image, [p for p, _ in people], people[0][1], pipe.topology.full_faces))  # fmt: skip
    for row in per.values():
        if "mpjpe_mm" in row:
            row["mpjpe_mm"] = round(float(np.mean(row["mpjpe_mm"])), 1) if row["mpjpe_mm"] else None
            row["pa_mpjpe_mm"] = round(float(np.mean(row["pa_mpjpe_mm"])), 1) if row["pa_mpjpe_mm"] else None
        else:
            row["pck_at_0.1"] = round(row["hits"] / max(row["joints"], 1), 3)
    return {
        "pck_at_0.1": round(hits / total, 3) if total else None,
        "mpjpe_mm": round(float(np.mean(errors_3d)), 1) if errors_3d else None,
        "pa_mpjpe_mm": round(float(np.mean(pa_3d)), 1) if pa_3d else None,
        "num_frames_3d": len(errors_3d),
        "num_people_2d": sum(r.get("people", 0) for r in per.values()),
        "missed_3d": missed_3d,
        "per_dataset": per,
    }
