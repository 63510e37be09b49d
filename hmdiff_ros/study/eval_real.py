"""``hmdiff eval-real``: the pipeline on real frames with ground truth (read from a folder).

The folder is read and checked first (:mod:`hmdiff_ros.study.real_data`; its layout:
``docs/eval_real.md``). Every person is given to the pipeline by its annotated box (one
prior run per box).

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

import logging
from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES
from hmdiff_ros.camera import apply_affine, crop_affine, intrinsics_from_fov
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.metrics import centred_mpjpe_mm, pa_mpjpe_mm
from hmdiff_ros.pipeline.io import overlay, read_image
from hmdiff_ros.study.real_data import LIMBS, RealData, check_root, read_real

log = logging.getLogger(__name__)


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
        check_root(root)  # the folder, then --out, then what the folder holds
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
