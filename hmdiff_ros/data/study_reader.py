"""A prior study on disk, read back: its arrays, its meta data, MediaPipe's observation of
its people, and a study of training bodies as training data.

A study (made by ``hmdiff data prior-study``, :mod:`hmdiff_ros.study.prior_study`) is a
folder: ``meta.json`` (what was asked: num, seed, chunk size, engine and render
configuration, the prior's settings) and ``chunk_00000.npz``, ... Training reads it
(``hmdiff train --study``: :func:`study_training_set`), and so do the study's own analyses.
Arrays per sample (``N`` samples; P = 24 prior joints; J = 25 joints; S = crop size):

- ground truth: ``index`` (N,) sample number; ``joints``/``joints_rel`` (N, J, 3) camera frame /
  pelvis-relative, metres; ``coarse_rel`` (N, 600, 3) the coarse mesh, pelvis-relative (the
  training target; studies made before it was recorded lack it); ``gt_uv`` (N, P, 2) the prior joints projected, image pixels;
  ``gt_in_image`` (N, P); ``joints_outside`` (N,) how many of the P joints lie outside the
  image; ``gt_occluded`` (N, P) behind the occluder; ``gt_surface_depth`` (N, P) the rendered
  body's depth at each joint's pixel (inf: background there, NaN: outside the image; a joint
  much deeper than it is hidden by another body part); ``K`` (N, 3, 3); ``image_size`` (N, 2);
  ``rotation`` (N, 3, 3) body -> camera; ``shape`` (N, 6) phenotypes; ``age`` (N,) years;
  ``height_m`` (N,) rest standing height; ``family`` (N,) pose family; ``pose`` (N, 103, 3);
  ``occluder`` (N, 4) image rectangle, NaN where none; ``person_box`` (N, 4) the projected
  body's extent; ``silhouette_px``/``visible_px`` (N,) body pixels before/after the occluder;
- rendering: ``skin_tone`` (N,) 0 light .. 1 dark; ``background`` (N,) index into
  ``hmdiff_ros.study.people_render.BACKGROUNDS``; ``light`` (N, 3); ``ambient`` (N,);
- the real prior: ``mp_detected`` (N,) bool; ``mp_uv`` (N, P, 2) image pixels; ``mp_vis`` (N, P);
  ``mp_xyz`` (N, P, 3) pelvis-relative camera-aligned metres; ``mp_score`` (N,); ``mp_mask_iou``
  (N,) IoU of its mask (> 0.5) with the visible silhouette (all NaN where not detected);
- the simulated prior: ``sim_uv`` (N, P, 2), ``sim_vis`` (N, P), ``sim_xyz`` (N, P, 3),
  ``sim_swapped`` (N,);
- masks in the engine's crop ``box`` (N, 3) (cx, cy, size): ``sim_mask``, ``true_mask`` (the
  visible silhouette) and ``mp_mask`` (N, S, S) uint8 0..255;
- timing (seconds of one worker): ``generate_s`` (engine, per sample), ``render_s``, ``prior_s``.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Dict

import numpy as np

from hmdiff_ros.camera import apply_affine, crop_affine
from hmdiff_ros.errors import one_line

FORMAT_VERSION = 1
META_FILE = "meta.json"
HELD_OUT_FROM = 0.8  # the samples from this fraction of the study on (by index) are held out


def chunk_path(out: Path, index: int) -> Path:
    return Path(out) / f"chunk_{index:05d}.npz"


def read_study_meta(out: "str | Path") -> Dict:
    """The ``meta.json`` of the study in folder ``out``."""
    path = Path(out) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read '{path}' ({type(exc).__name__}: {one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"'{path}' is not the meta data of a prior study of format {FORMAT_VERSION}")
    return meta


_UNREADABLE = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def held_out_chunk(num: int, chunk: int) -> int:
    """The first chunk that holds a held-out sample (index >= ``HELD_OUT_FROM`` x ``num``)."""
    return int(round(HELD_OUT_FROM * num)) // chunk


def load_prior_study(folder: "str | Path", partial: bool = False, held_out_only: bool = False) -> Dict[str, np.ndarray]:
    """The arrays of the study in ``folder`` (see the module docstring), chunks in order, so
    row ``i`` is sample ``index[i]`` (an array that not every chunk holds is left out). A study still missing chunks is refused unless
    ``partial`` (then the chunks there are read); ``held_out_only``: only the chunks of the
    held-out part must be there (``hmdiff data prior-study --held-out-only``), and only they are read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prior study '{folder}' does not exist; make one with 'hmdiff data prior-study'")
    if not (folder / META_FILE).is_file():
        raise FileNotFoundError(
            f"'{folder}' is not a prior study (no {META_FILE}); make one with 'hmdiff data prior-study'"
        )
    meta = read_study_meta(folder)
    first = held_out_chunk(int(meta["num"]), int(meta["chunk"])) if held_out_only else 0
    paths = [chunk_path(folder, c) for c in range(first, int(meta["num_chunks"]))]
    missing = [p.name for p in paths if not p.is_file()]
    if missing and not partial:
        raise ValueError(
            f"prior study '{folder}' lacks {len(missing)} of {len(paths)} chunks (first: {missing[0]}); "
            "run the same 'hmdiff data prior-study' command again to finish it"
        )
    parts: Dict[str, list] = {}
    read = 0
    for path in paths:
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except _UNREADABLE as exc:
            raise ValueError(
                f"'{path}' is truncated or corrupt ({type(exc).__name__}: {one_line(exc)}); delete it and run the "
                "command again"
            ) from None
        for k, v in arrays.items():
            parts.setdefault(k, []).append(v)
        read += 1
    if not parts:
        raise ValueError(f"prior study '{folder}' holds no chunks yet; run 'hmdiff data prior-study' to make them")
    # an array that only some chunks hold (recorded since the others were made) is left out, so
    # that row i of every array is the same sample
    return {k: np.concatenate(v) for k, v in parts.items() if len(v) == read}


def observed(study: Dict[str, np.ndarray], rows: np.ndarray, crop_size: int) -> Dict[str, np.ndarray]:
    """MediaPipe's observation of samples ``rows``, as the data engine gives its simulated
    prior's: ``uv`` (N, P, 2) crop pixels, ``vis`` (N, P) (0 where none), ``prior_xyz`` (N, P, 3)
    U, ``mask`` (N, S, S) uint8 0..255 and ``valid`` (N, S, S) float32, the crop pixels inside
    the image; cropped by each sample's ``box`` as the engine crops."""
    box = study["box"][rows].astype(np.float64)  # (N, 3) cx, cy, side
    size = study["image_size"][rows].astype(np.float64)  # (N, 2) width, height
    affine = crop_affine(box, crop_size)
    uv = apply_affine(affine, study["mp_uv"][rows].astype(np.float64)).astype(np.float32)
    # the crop pixels that fall inside the image: (crop - offset) / scale is the image pixel
    grid = np.arange(crop_size, dtype=np.float64)
    scale, offset = affine[:, 0, 0], affine[:, :, 2]

    def inside(axis: int) -> np.ndarray:  # (N, S): crop pixels along ``axis`` within the image
        image = (grid[None] - offset[:, axis, None]) / scale[:, None]
        return (image >= 0) & (image <= size[:, axis, None] - 1)

    valid = (inside(1)[:, :, None] & inside(0)[:, None, :]).astype(np.float32)  # (N, S, S) rows are v
    return {
        "uv": uv,
        "vis": np.nan_to_num(study["mp_vis"][rows].astype(np.float32)),
        "prior_xyz": study["mp_xyz"][rows].astype(np.float32),
        "mask": study["mp_mask"][rows],
        "valid": valid,
    }


TRAINING_KEYS = ("uv", "vis", "prior_xyz", "mask", "valid", "coarse_rel", "joints_rel")


def study_training_set(folder: "str | Path", crop_size: int) -> Dict[str, np.ndarray]:
    """The samples of a study of training bodies (``hmdiff data prior-study --bodies train``)
    that MediaPipe detected, as training data: :data:`TRAINING_KEYS`, MediaPipe's observation
    (:func:`observed`) with the ground truth, in the form the training stream gives its
    batches (:func:`~hmdiff_ros.data.engine.compact`: ``mask`` uint8 0..255, ``valid`` bool).
    A study of held-out bodies is refused: its bodies, poses and cameras are those of the
    selection and test sets."""
    meta = read_study_meta(folder)
    role = meta.get("bodies", {}).get("role")
    if role != "train":
        raise ValueError(
            f"prior study '{folder}' is of held-out bodies (bodies: {role}), the selection and test sets; "
            "training needs a study of training bodies: hmdiff data prior-study --bodies train"
        )
    study = load_prior_study(folder)
    if "coarse_rel" not in study:
        raise ValueError(f"prior study '{folder}' lacks the coarse mesh (coarse_rel); make it again with this version")
    rows = np.flatnonzero(study["mp_detected"])
    if len(rows) == 0:
        raise ValueError(f"prior study '{folder}': MediaPipe detected no one; nothing to train on")
    out = observed(study, rows, crop_size)
    out["valid"] = out["valid"] > 0.5
    out["coarse_rel"] = study["coarse_rel"][rows].astype(np.float32)
    out["joints_rel"] = study["joints_rel"][rows].astype(np.float32)
    return out
