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

Beside each figure, the prior's own (``prior_*``), the yardstick the model has to beat: on
the same frames and people, the same joints, alignment and threshold.

- **3D**: the prior's root-relative 3D joints U (MediaPipe's world landmarks, the ones DAT
  aligns to; ``PersonResult.prior_xyz``) on the 12 limb joints, mid-hip aligned or Procrustes
  fitted exactly as the model's joints (MediaPipe's root and our pelvis need not agree: both
  sides are re-centred on the mid-hip of the 12 joints' hips).
- **2D**: the prior's own keypoints (``PersonResult.prior_uv``) for the people the pipeline
  returned. A joint the prior has no keypoint for (head_top, annotated by MPII and
  PoseTrack18) counts as wrong for the prior, as every joint of a missed person does.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import cv2
import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES
from hmdiff_ros.camera import apply_affine, crop_affine, intrinsics_from_fov
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.metrics import centred_mpjpe_mm, pa_mpjpe_mm
from hmdiff_ros.pipeline.io import overlay, read_image

log = logging.getLogger(__name__)

LIMBS = (
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


def _best_person(people, box: np.ndarray):
    """The result whose crop centre is nearest the annotated box centre (one box in -> at most one out)."""
    if not people:
        return None
    centre = (box[:2] + box[2:]) / 2
    return min(people, key=lambda p: np.linalg.norm((p.box[:2] + p.box[2:]) / 2 - centre))


def _errors_3d(pred: np.ndarray, gt: np.ndarray, hips) -> Tuple[float, float]:
    """MPJPE (mid-hip aligned) and PA-MPJPE (mm) of limb joints ``pred`` against ``gt`` ``(12, 3)``."""
    return float(centred_mpjpe_mm(pred[None], gt[None], hips)[0]), float(pa_mpjpe_mm(pred[None], gt[None])[0])


def lifted(lifter, person, crop_size: int) -> np.ndarray:
    """The lifter's root-relative joints ``(25, 3)`` for a pipeline ``person``, from the
    observation the model read: the prior's keypoints moved into the person's crop (the same
    :func:`~hmdiff_ros.camera.crop_affine` as :func:`~hmdiff_ros.observation.observe`), their
    visibilities and U."""
    q = list(PRIOR_JOINT_INDICES)
    u0, v0, u1, _ = person.box
    affine = crop_affine(np.array([(u0 + u1) / 2, (v0 + person.box[3]) / 2, u1 - u0]), crop_size)
    uv = apply_affine(affine, person.prior_uv[q])
    return lifter.predict(
        uv.astype(np.float32), person.visibility[q].astype(np.float32), person.prior_xyz[q].astype(np.float32)
    )


def _pck_hits(uv: np.ndarray, joints: Dict[str, np.ndarray], thr: float) -> int:
    """How many annotated ``joints`` the keypoints ``uv`` ``(25, 2)`` (NaN: none) hit within ``thr`` pixels."""
    return sum(int(np.linalg.norm(uv[JOINT_INDEX[n]] - a) <= thr) for n, a in joints.items())  # NaN: a miss


def _mean(values) -> float | None:
    return round(float(np.mean(values)), 1) if len(values) else None


def check_out(out: "str | Path", force: bool = False) -> None:
    """The overlay folder ``out`` can be written: new, or empty unless ``force`` (a ``ValueError``
    naming ``--out`` otherwise)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is an existing file; expected a folder for the overlay images")
    if out.is_dir() and not force and any(out.iterdir()):
        raise ValueError(
            f"--out '{out}' already exists and is not empty; use --force to write the overlays there "
            "(files of the same names are replaced) or choose another --out"
        )


def _write_jpg(path: Path, image_bgr: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", image_bgr)
    if not ok:
        raise ValueError(f"cannot encode the overlay image '{path}'")
    path.parent.mkdir(parents=True, exist_ok=True)  # ``out`` is made with the first overlay only
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data.tobytes())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RealData:
    """The frames and people of a real evaluation folder, read and checked by :func:`read_real`."""

    root: Path
    frames_3d: list  # (dataset, image, K, box, limb joints (12, 3)) per 3D frame, as frames_3d yields
    people_2d: list  # (dataset, image, box, {joint name: (u, v)}) per person, as people_2d yields


def _check_root(root: "str | Path") -> Path:
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
    root = _check_root(root)
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


def evaluate_real(
    pipe,
    root: "str | Path | RealData",
    out: "str | Path | None" = None,
    progress: bool = True,
    force: bool = False,
    lifter=None,
    per_sample: bool = False,
) -> Dict:
    """The ``hmdiff eval-real`` figures (see the module docstring), the prior's beside them
    (``prior_mpjpe_mm``, ``prior_pa_mpjpe_mm``, ``prior_pck_at_0.1``), and a per-dataset
    breakdown with the same keys.

    ``lifter``: a :class:`~hmdiff_ros.model.lifter.Lifter`, the learned yardstick: on the 3D
    frames it reads the same observation of each person as the model (the prior's keypoints in
    the model's crop, their visibilities and U) and is scored the same way
    (``lifter_mpjpe_mm``, ``lifter_pa_mpjpe_mm``; None without a lifter). It predicts 3D
    joints only, so it has no 2D figure.

    ``out``: a folder for overlay images, new or empty unless ``force`` (then files of the same
    names are replaced), made only when there is an overlay to write. An image that cannot be
    read is skipped with a warning: the result lists it under ``skipped`` (and each
    ``per_dataset`` row counts the frames or people it lost under ``skipped``); when nothing
    could be read, or ``root`` holds nothing usable, it is a ``ValueError`` saying what is
    wrong.

    ``per_sample``: also ``"per_sample"``: each 3D figure per frame and, per 2D person,
    ``hits``, ``prior_hits`` and ``joints`` (arrays, for intervals).

    ``root``: the folder, or what :func:`read_real` read from it."""
    from tqdm import tqdm

    if not isinstance(root, RealData):
        _check_root(root)  # the folder, then --out, then what the folder holds
    out = Path(out) if out is not None else None
    if out is not None:
        check_out(out, force)
    data = root if isinstance(root, RealData) else read_real(root)
    root, items_3d, items_2d = data.root, data.frames_3d, data.people_2d
    per: Dict[str, Dict] = {}
    skipped: Dict[Path, str] = {}  # image -> why it could not be read

    def read(path: Path):
        if path in skipped:
            return None
        try:
            return read_image(path)
        except (OSError, ValueError) as exc:  # read_image names the file
            skipped[path] = str(exc)
            log.warning("eval-real: skipping %s", one_line(exc))
            return None

    figures_3d = ("mpjpe_mm", "pa_mpjpe_mm", "prior_mpjpe_mm", "prior_pa_mpjpe_mm")
    if lifter is not None:
        figures_3d += ("lifter_mpjpe_mm", "lifter_pa_mpjpe_mm")
    all_3d: Dict[str, list] = {k: [] for k in figures_3d}
    missed_3d = 0
    lj = [JOINT_INDEX[n] for n in LIMBS]
    hips = [LIMBS.index("left_hip"), LIMBS.index("right_hip")]
    for ds, path, K, box, gt in tqdm(items_3d, desc="3D frames", disable=not progress):
        row = per.setdefault(ds, {"frames": 0, "missed": 0, **{k: [] for k in figures_3d}, "skipped": 0})
        image = read(path)
        if image is None:
            row["skipped"] += 1
            continue
        person = _best_person(pipe(image, K, boxes=[box]), box)
        if person is None:
            row["missed"] += 1
            missed_3d += 1
            continue
        figures = (*_errors_3d(person.joints[lj], gt, hips), *_errors_3d(person.prior_xyz[lj], gt, hips))
        if lifter is not None:
            figures += _errors_3d(lifted(lifter, person, pipe.proxy_cfg.crop_size)[lj], gt, hips)
        for k, v in zip(figures_3d, figures, strict=True):
            all_3d[k].append(v)
            row[k].append(v)
        row["frames"] += 1
        if out is not None:
            _write_jpg(out / f"{ds}_{path.stem}.jpg", overlay(image, [person], K, pipe.topology.full_faces))
    hits, prior_hits, total = 0, 0, 0
    per_person: Dict[str, list] = {"hits": [], "prior_hits": [], "joints": []}
    cache: Dict[Path, np.ndarray] = {}
    drawn: Dict[Path, list] = {}
    for ds, path, box, joints in tqdm(items_2d, desc="2D people", disable=not progress):
        row = per.setdefault(ds, {"people": 0, "missed": 0, "hits": 0, "prior_hits": 0, "joints": 0, "skipped": 0})
        if path not in cache:
            image = read(path)
            if image is None:
                row["skipped"] += 1
                continue
            cache[path] = image
        image = cache[path]
        K = intrinsics_from_fov(image.shape[1], image.shape[0], pipe.cfg.hfov_deg)
        person = _best_person(pipe(image, K, boxes=[box]), box)
        row["people"] += 1
        thr = 0.1 * max(box[2] - box[0], box[3] - box[1])
        ok = prior_ok = 0
        if person is None:
            row["missed"] += 1
        else:
            drawn.setdefault(path, []).append((person, K))
            ok, prior_ok = _pck_hits(person.joints_uv, joints, thr), _pck_hits(person.prior_uv, joints, thr)
        for k, v in (("hits", ok), ("prior_hits", prior_ok), ("joints", len(joints))):
            per_person[k].append(v)
        row["hits"] += ok
        row["prior_hits"] += prior_ok
        row["joints"] += len(joints)
        hits, prior_hits, total = hits + ok, prior_hits + prior_ok, total + len(joints)
    if skipped and not any(r.get("frames", 0) + r.get("people", 0) + r["missed"] for r in per.values()):
        first, why = next(iter(skipped.items()))
        raise ValueError(
            f"none of the {len(skipped)} images of '{root}' could be read, so nothing was evaluated "
            f"(first: {' '.join(why.split())})"
        )
    if out is not None:
        for path, people in drawn.items():
            image = cache[path]
            _write_jpg(
                out / f"{path.parent.name}_{path.stem}.jpg",
                overlay(image, [p for p, _ in people], people[0][1], pipe.topology.full_faces),
            )
    for row in per.values():
        if "mpjpe_mm" in row:
            row.update({k: _mean(row[k]) for k in figures_3d})
        else:
            row["pck_at_0.1"] = round(row["hits"] / max(row["joints"], 1), 3) if row["people"] else None
            row["prior_pck_at_0.1"] = round(row["prior_hits"] / max(row["joints"], 1), 3) if row["people"] else None
    result = {
        "pck_at_0.1": round(hits / total, 3) if total else None,
        "prior_pck_at_0.1": round(prior_hits / total, 3) if total else None,
        "mpjpe_mm": _mean(all_3d["mpjpe_mm"]),
        "pa_mpjpe_mm": _mean(all_3d["pa_mpjpe_mm"]),
        "prior_mpjpe_mm": _mean(all_3d["prior_mpjpe_mm"]),
        "prior_pa_mpjpe_mm": _mean(all_3d["prior_pa_mpjpe_mm"]),
        "lifter_mpjpe_mm": _mean(all_3d.get("lifter_mpjpe_mm", [])),
        "lifter_pa_mpjpe_mm": _mean(all_3d.get("lifter_pa_mpjpe_mm", [])),
        "num_frames_3d": len(all_3d["mpjpe_mm"]),
        "num_people_2d": sum(r.get("people", 0) for r in per.values()),
        "missed_3d": missed_3d,
        "per_dataset": per,
        "skipped": [str(p) for p in skipped],  # images that could not be read (each logged as a warning)
    }
    if per_sample:
        result["per_sample"] = {
            **{k: np.asarray(v, np.float64) for k, v in all_3d.items()},
            **{f"pck_{k}": np.asarray(v, np.float64) for k, v in per_person.items()},
        }
    return result
