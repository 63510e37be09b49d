"""The real evaluation data, read from a folder and checked before any model work
(``hmdiff eval-real``, ``hmdiff eval-protocol --real``, ``hmdiff data pose-coverage``).

The folder has the layout of the project's real evaluation fixtures (Human3.6M and
MPI-INF-3DHP frames with metric 3D joints and calibrated cameras; COCO, MPII, OCHuman and
PoseTrack18 photos with annotated 2D keypoints and person boxes); see ``docs/eval_real.md``.
A file that cannot be read, or a value that cannot be scored, is an error naming the file,
the frame or person and the field. How the frames are scored: :mod:`hmdiff_ros.study.eval_real`.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from hmdiff_ros.body.joints import COCO17_NAMES
from hmdiff_ros.errors import one_line

log = logging.getLogger(__name__)

LIMBS = COCO17_NAMES[5:]  # the 12 limb joints every skeleton here has: shoulders to ankles
# indices of LIMBS in each dataset's 17-joint order (see the fixtures' README)
H36M_LIMBS = (11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3)
MPI_INF_3DHP_LIMBS = (5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
COCO17 = tuple(range(17))  # our first 17 joints are COCO-17, same order
POSETRACK = {0: "nose", 2: "head_top", **dict(zip(range(5, 17), LIMBS, strict=True))}  # COCO order, 1: head_bottom
MPII = {
    0: "right_ankle",
    1: "right_knee",
    2: "right_hip",
    3: "left_hip",
    4: "left_knee",
    5: "left_ankle",
    9: "head_top",
    10: "right_wrist",
    11: "right_elbow",
    12: "right_shoulder",
    13: "left_shoulder",
    14: "left_elbow",
    15: "left_wrist",
}
DATASETS_3D = ("h36m", "mpi_inf_3dhp")
DATASETS_2D = ("coco", "mpii", "ochuman", "posetrack18")


def _K(f, c) -> np.ndarray:
    f, c = np.asarray(f, dtype=np.float64).ravel(), np.asarray(c, dtype=np.float64).ravel()
    return np.array([[f[0], 0, c[0]], [0, f[1], c[1]], [0, 0, 1.0]])


# the errors a damaged or foreign file raises while it is read and indexed
_READ_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    EOFError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


class BadValue(ValueError):
    """A value of the real data that was read but cannot be scored (NaN, inf, a scale or focal
    length that is not positive): the message names the file, the frame or person and the field."""


def _check_values(path: Path, what: str, fields: Dict[str, object], positive: Tuple[str, ...] = ()) -> None:
    """A :class:`BadValue` unless every number of ``fields`` is finite (and those named in
    ``positive`` > 0). Checked as the data is read: a NaN left for the metrics fails there as
    numpy's "SVD did not converge" (the Procrustes fit), naming nothing, after the model ran."""
    for field, value in fields.items():
        a = np.asarray(value, dtype=np.float64)
        if not np.isfinite(a).all():
            kind = "NaN" if np.isnan(a).any() else "inf"
            raise BadValue(
                f"eval-real file '{path}' ({what}): {field} holds {kind}; expected finite numbers "
                "(layout: docs/eval_real.md)"
            )
        if field in positive and not (a > 0).all():
            raise BadValue(f"eval-real file '{path}' ({what}): {field} must be > 0, got {a.ravel().tolist()}")


def _bad_file(path: Path, exc: BaseException, expected: str, what: str = "") -> ValueError:
    why = one_line(exc, 200)
    return ValueError(
        f"eval-real file '{path}'{f' ({what})' if what else ''} cannot be read: {type(exc).__name__}: {why}; "
        f"expected {expected} (layout: docs/eval_real.md)"
    )


def _pickle(path: Path, needed_by: Path):
    if not path.is_file():
        raise FileNotFoundError(f"eval-real file '{path}' not found; '{needed_by}' needs its cameras")
    try:
        with path.open("rb") as fh:
            return pickle.load(fh, encoding="latin1")
    except (*_READ_ERRORS, ImportError) as exc:
        raise _bad_file(path, exc, "a pickled dictionary of cameras with 'f' and 'c'") from None


def _npz(path: Path, keys: Tuple[str, ...]) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as d:
            return {k: d[k] for k in keys}
    except _READ_ERRORS as exc:
        raise _bad_file(path, exc, f"an .npz file with the arrays {list(keys)}") from None


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise _bad_file(path, exc, "a JSON file") from None


def _square(center, scale) -> np.ndarray:
    s = float(np.asarray(scale).ravel()[0]) * 200.0
    cx, cy = np.asarray(center, dtype=np.float64).ravel()[:2]
    return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _frames_3d(root: Path, notes: List[str]) -> List[Tuple[str, Path, np.ndarray, np.ndarray, np.ndarray]]:
    """The 3D frames of ``root``; ``notes`` gets why a dataset folder there gives none."""
    items: list = []
    h36m = root / "h36m"
    npz = h36m / "test_h36m_body3d.npz"
    if npz.is_file():
        d = _npz(npz, ("imgname", "S", "center", "scale"))
        cams = _pickle(h36m / "cameras.pkl", npz)
        for i, name in enumerate(d["imgname"]):
            name = str(name)
            try:
                subject, cam_id = name.split("/")[0], name.split("/")[-1].split(".")[1].split("_")[0]
                cam = cams[(subject, cam_id)]
                S = d["S"][i, list(H36M_LIMBS), :3]
                _check_values(
                    npz, f"frame {i} {name!r}", {"S": S, "center": d["center"][i], "scale": d["scale"][i]}, ("scale",)
                )
                _check_values(
                    h36m / "cameras.pkl",
                    f"camera {subject} {cam_id} of frame {i}",
                    {"f": cam["f"], "c": cam["c"]},
                    ("f",),
                )
                box = _square(d["center"][i], d["scale"][i])
                items.append(("h36m", h36m / name, _K(cam["f"], cam["c"]), box, S))
            except BadValue:
                raise
            except _READ_ERRORS as exc:
                raise _bad_file(
                    npz,
                    exc,
                    "frames named S<n>/<action>.<camera>/..., each with a camera in h36m/cameras.pkl and S (N, 17, 4)",
                    f"frame {i} {name!r}",
                ) from None
        if not len(d["imgname"]):
            notes.append(f"{_rel(npz, root)} holds no frames")
    elif h36m.is_dir():
        notes.append(f"h36m/ has no {npz.name}")
    mpi = root / "mpi_inf_3dhp"
    found = False
    for split, cam_file in (("test", "cameras_test.pkl"), ("train", "cameras_train.pkl")):
        npz = mpi / f"test_3dhp_{split}.npz"
        if not npz.is_file():
            continue
        found = True
        d, cams = _npz(npz, ("imgname", "S", "center", "scale")), _pickle(mpi / cam_file, npz)
        for i, name in enumerate(d["imgname"]):
            name = str(name)
            try:
                key = name.split("_")[0] if split == "test" else "_".join(name.split("_")[:3])
                cam = cams[key]
                S = d["S"][i, list(MPI_INF_3DHP_LIMBS), :3]
                _check_values(
                    npz, f"frame {i} {name!r}", {"S": S, "center": d["center"][i], "scale": d["scale"][i]}, ("scale",)
                )
                _check_values(mpi / cam_file, f"camera {key} of frame {i}", {"f": cam["f"], "c": cam["c"]}, ("f",))
                box = _square(d["center"][i], d["scale"][i])
                items.append(("mpi_inf_3dhp", mpi / name, _K(cam["f"], cam["c"]), box, S))
            except BadValue:
                raise
            except _READ_ERRORS as exc:
                raise _bad_file(
                    npz,
                    exc,
                    f"frames whose names lead to a camera in mpi_inf_3dhp/{cam_file} and S (N, 17, 4)",
                    f"frame {i} {name!r}",
                ) from None
        if not len(d["imgname"]):
            notes.append(f"{_rel(npz, root)} holds no frames")
    if mpi.is_dir() and not found:
        notes.append("mpi_inf_3dhp/ has neither test_3dhp_test.npz nor test_3dhp_train.npz")
    return items


def frames_3d(root: Path) -> Iterator[Tuple[str, Path, np.ndarray, np.ndarray, np.ndarray]]:
    """``(dataset, image, K, box, limb joints (12, 3) metres, camera frame)`` per 3D frame.
    A file that cannot be read is a ``ValueError`` (``FileNotFoundError`` for a missing
    camera file) naming it."""
    yield from _frames_3d(Path(root), [])


_COCO_LAYOUT = "a COCO-style object with 'images' (id, file_name) and 'annotations' (image_id, bbox, keypoints)"


def _people_2d(root: Path, notes: List[str]) -> List[Tuple[str, Path, np.ndarray, Dict[str, np.ndarray]]]:
    """The annotated people of ``root``; ``notes`` gets why a dataset there gives none."""
    items: list = []
    for name, folder, ann in (
        ("coco", root / "coco", root / "coco" / "test_coco.json"),
        ("ochuman", root / "ochuman", root / "ochuman" / "test_ochuman.json"),
        ("posetrack18", root / "posetrack18", root / "posetrack18" / "annotations" / "test_posetrack18_val.json"),
    ):
        if not ann.is_file():
            if folder.is_dir():
                notes.append(f"{name}/ has no {_rel(ann, folder)}")
            continue
        data = _json(ann)
        table = POSETRACK if name == "posetrack18" else {k: n for k, n in enumerate(_coco_names())}
        no_keypoints = empty_box = 0
        try:
            images = {im["id"]: im for im in data["images"]}
            annotations = list(data["annotations"])
            for i, a in enumerate(annotations):
                kp = np.asarray(a.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
                what = f"annotation {i}, image_id {a.get('image_id')!r}"
                _check_values(ann, what, {"keypoints": kp})
                if len(kp) != 17 or not (kp[:, 2] > 0).any() or "bbox" not in a:
                    no_keypoints += 1
                    continue
                _check_values(ann, what, {"bbox": a["bbox"]})
                x, y, w, h = (float(v) for v in a["bbox"])
                if not w > 1 or not h > 1:
                    empty_box += 1
                    continue
                if a["image_id"] not in images:
                    raise KeyError(f"annotation {i}: image_id {a['image_id']!r} is not in 'images'")
                joints = {n: kp[k, :2] for k, n in table.items() if kp[k, 2] > 0}
                image = folder / str(images[a["image_id"]]["file_name"])
                items.append((name, image, np.array([x, y, x + w, y + h]), joints))
        except BadValue:
            raise
        except _READ_ERRORS as exc:
            raise _bad_file(ann, exc, _COCO_LAYOUT) from None
        if no_keypoints + empty_box == len(annotations):
            why = (
                f"every box in {_rel(ann, root)} is empty (width or height <= 1 px)"
                if empty_box == len(annotations) and annotations
                else f"{_rel(ann, root)} has no usable person ({len(annotations)} annotations: {empty_box} with an "
                f"empty box, {no_keypoints} without 17 keypoints, a visible one and a box)"
            )
            notes.append(why)
    mpii = root / "mpii" / "test_mpii.json"
    if mpii.is_file():
        records = _json(mpii)
        try:
            for i, rec in enumerate(records):
                kp = np.asarray(rec["joints"], dtype=np.float64).reshape(16, 2) - 1.0  # MATLAB 1-based
                vis = np.asarray(rec["joints_vis"], dtype=np.float64).reshape(16)
                fields = {"joints": kp, "joints_vis": vis, "center": rec["center"], "scale": rec["scale"]}
                _check_values(mpii, f"record {i} {rec.get('image')!r}", fields, ("scale",))
                joints = {n: kp[k] for k, n in MPII.items() if vis[k] > 0}
                items.append(("mpii", root / "mpii" / str(rec["image"]), _square(rec["center"], rec["scale"]), joints))
        except BadValue:
            raise
        except _READ_ERRORS as exc:
            raise _bad_file(
                mpii, exc, "a JSON list of records with image, joints (16, 2), joints_vis, center, scale"
            ) from None
        if not records:
            notes.append("mpii/test_mpii.json holds no records")
    elif (root / "mpii").is_dir():
        notes.append("mpii/ has no test_mpii.json")
    return items


def people_2d(root: Path) -> Iterator[Tuple[str, Path, np.ndarray, Dict[str, np.ndarray]]]:
    """``(dataset, image, box (u0, v0, u1, v1), {joint name: (u, v)})`` per annotated person.
    A file that cannot be read, or does not have the layout, is a ``ValueError`` naming it."""
    yield from _people_2d(Path(root), [])


def _coco_names() -> List[str]:
    from hmdiff_ros.body.joints import JOINT_NAMES

    return list(JOINT_NAMES[:17])


@dataclass(frozen=True)
class RealData:
    """The frames and people of a real evaluation folder, read and checked by :func:`read_real`."""

    root: Path
    frames_3d: list  # (dataset, image, K, box, limb joints (12, 3)) per 3D frame, as frames_3d yields
    people_2d: list  # (dataset, image, box, {joint name: (u, v)}) per person, as people_2d yields


def check_root(root: "str | Path") -> Path:
    """``root`` as a path, checked to be a folder (a ``ValueError`` naming it otherwise)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"eval-real data folder '{root}' is a file; expected a folder (layout: docs/eval_real.md)")
    if not root.is_dir():
        raise ValueError(f"eval-real data folder '{root}' does not exist")
    return root


def read_real(root: "str | Path") -> RealData:
    """Every annotation of ``root`` read and checked (layout, NaN and inf, boxes and cameras)
    before any model work: ``hmdiff eval-real`` reads its data before it loads the model, so a
    bad file is named in a second. A ``ValueError`` (``FileNotFoundError`` for a missing camera
    file) names the file, the frame or person and the field; a dataset folder that gives
    nothing is a warning, or the error when nothing at all is usable."""
    root = check_root(root)
    notes: List[str] = []
    items_3d, items_2d = _frames_3d(root, notes), _people_2d(root, notes)
    if not items_3d and not items_2d:
        if notes:
            raise ValueError(f"'{root}' holds no usable real evaluation data: {'; '.join(notes)}")
        raise ValueError(
            f"'{root}' holds no known real evaluation data (expected h36m/, mpi_inf_3dhp/, coco/, mpii/, "
            "ochuman/ or posetrack18/ as in the fixtures' README)"
        )
    images = sorted({Path(item[1]) for item in (*items_3d, *items_2d)})
    missing = [p for p in images if not p.is_file()]
    if missing and len(missing) == len(images):  # named now, not after the model has loaded
        raise ValueError(
            f"none of the {len(images)} images of '{root}' could be read, so nothing would be evaluated "
            f"(first: {missing[0]}: file not found)"
        )
    for note in notes:
        log.warning("eval-real: %s: left out", note)
    return RealData(root, items_3d, items_2d)
