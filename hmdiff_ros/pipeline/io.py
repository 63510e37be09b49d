"""Reading frames robustly and writing results: overlays, meshes, JSON.

Image files of any common kind become RGB uint8 (grayscale, RGBA, 16-bit images are
converted by :func:`hmdiff_ros.image.to_rgb8`); unreadable files raise an
:class:`~hmdiff_ros.image.ImageError` that names the file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Collection, Dict, List, Sequence

import cv2
import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, SKELETON_EDGES
from hmdiff_ros.image import MAX_SIDE, ImageError, to_rgb8
from hmdiff_ros.pipeline.outputs import is_camera
from hmdiff_ros.pipeline.pipeline import PersonResult
from hmdiff_ros.render import render_mesh

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MULTI_PAGE_SUFFIXES = {".tif", ".tiff", ".gif", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
PERSON_COLOURS = [(90, 160, 230), (120, 200, 120), (220, 130, 90), (200, 120, 200), (90, 200, 220), (230, 200, 90)]


def input_problem(source: str) -> "str | None":
    """Why the input ``source`` cannot be processed, found without decoding it (no model is
    needed to say so), or None: a missing file, a dangling link, a pipe or device, an empty
    file, an image whose first bytes are of no format OpenCV reads. The same words as
    :func:`read_image`'s errors."""
    path = Path(source)
    if source.isdigit() and not path.exists():  # a camera index: only opening it tells
        return None
    if path.is_dir():
        return f"{path}: is a folder; expected an image file"
    if path.exists() and not path.is_file():
        return f"{path}: is not a regular file (a pipe or a device); expected an image file"
    if not path.exists():
        return f"{path}: {'a symbolic link that leads nowhere' if path.is_symlink() else 'file not found'}"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            readable = path.stat().st_size > 0 and cv2.haveImageReader(str(path))
        except (OSError, cv2.error):
            return None  # read_image says what it is
        if not readable:
            return f"{path}: not an image OpenCV can decode"
    return None


def read_image(path: "str | Path") -> np.ndarray:
    """An image file as RGB uint8, turned upright as its EXIF orientation says (phone photos);
    errors name the file and what is wrong. Multi-page files give their first page (a warning
    says so)."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a folder; expected an image file")
    if path.exists() and not path.is_file():
        raise ImageError(f"{path}: is not a regular file (a pipe or a device); expected an image file")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        why = "a symbolic link that leads nowhere" if path.is_symlink() else "file not found"
        raise ImageError(f"{path}: {why}") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    # ANYDEPTH|ANYCOLOR keeps 16 bits and applies the EXIF orientation (UNCHANGED would not)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if data.size else None
    except cv2.error as exc:  # e.g. a header announcing more pixels than OpenCV's limit
        first = (str(exc).strip().splitlines() or ["?"])[-1].strip()
        raise ImageError(
            f"{path}: OpenCV refuses to decode it ({first}); images of more than "
            f"{MAX_SIDE} pixels on a side are not accepted"
        ) from None
    if image is None:
        raise ImageError(f"{path}: not an image OpenCV can decode")
    if path.suffix.lower() in MULTI_PAGE_SUFFIXES:
        pages = _page_count(path)
        if pages > 1:
            log.warning("%s holds %d pages or frames: only the first is processed", path, pages)
    return to_rgb8(image, str(path))


def _page_count(path: Path) -> int:
    try:
        return int(cv2.imcount(str(path)))
    except (cv2.error, AttributeError):  # formats or builds without a page count
        return 1


def person_json(person: PersonResult, index: int) -> Dict:
    joints = []
    for j, name in enumerate(person.joint_names):
        prior = person.prior_uv[j]
        joints.append(
            {
                "name": name,
                "xyz": [round(float(v), 4) for v in person.joints[j]],
                "uv": [round(float(v), 1) for v in person.joints_uv[j]],
                "prior_uv": None if not np.isfinite(prior).all() else [round(float(v), 1) for v in prior],
                "visibility": round(float(person.visibility[j]), 3),
                "std_m": round(float(person.joint_std[j]), 4),
            }
        )
    pid = person.track_id if person.track_id >= 0 else index
    return {
        "id": int(pid),
        "score": round(person.score, 3),
        "box": [round(float(v), 1) for v in person.box],
        "joints": joints,
    }


def overlay(image_rgb: np.ndarray, people: Sequence[PersonResult], K: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """BGR overlay: each person's mesh (translucent) and skeleton over the frame."""
    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    for i, p in enumerate(sorted(people, key=lambda p: -p.translation[2])):  # far first
        colour = PERSON_COLOURS[i % len(PERSON_COLOURS)]
        verts = p.vertices if p.vertices is not None else p.coarse_vertices
        out = render_mesh(out, verts, faces, K, color=colour, alpha=0.6)
        uv = np.round(p.joints_uv).astype(int)
        for a, b in SKELETON_EDGES:
            cv2.line(out, tuple(uv[JOINT_INDEX[a]]), tuple(uv[JOINT_INDEX[b]]), (255, 255, 255), 2, cv2.LINE_AA)
    return out


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    lines = [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def collect_inputs(paths: Sequence[str], skip: Collection[Path] = ()) -> List[str]:
    """Expand folders into their images and videos (sorted, not recursive); keep files and
    camera indices. Files in ``skip`` (absolute paths: a run's own outputs) are never inputs;
    an input given twice (or reached twice) is kept once. Warnings name the sub-folders and
    the files a folder scan leaves out."""
    skip = set(skip)
    out: List[str] = []
    seen: Dict[str, str] = {}

    def add(source: str) -> None:
        key = source if is_camera(source) else os.path.realpath(source)
        if key in seen:
            log.warning("%s: given more than once (as '%s'): processed once", source, seen[key])
            return
        seen[key] = source
        out.append(source)

    for p in paths:
        path = Path(p)
        if path.is_dir():
            listing = sorted(path.iterdir())
            entries = [e for e in listing if not e.name.startswith(".")]
            media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
            for f in entries:
                if f.is_file() and f.suffix.lower() in media and f.resolve() not in skip:
                    add(str(f))
            subs = [f.name for f in entries if f.is_dir()]
            broken = [f.name for f in entries if f.is_symlink() and not f.exists()]
            left = [
                f.name
                for f in entries
                if f.exists()
                and not f.is_dir()
                and f.resolve() not in skip
                and not (f.is_file() and f.suffix.lower() in media)
            ]
            hidden = [f.name for f in listing if f.name.startswith(".") and f.suffix.lower() in media]
            for what, names in (
                ("sub-folders are not scanned", subs),
                ("links that lead nowhere, skipped", broken),
                ("not images or videos, skipped", left),
                ("hidden files, skipped", hidden),
            ):
                if names:
                    log.warning("%s: %s: %s", path, what, _some(names))
        elif path.is_file() and path.resolve() in skip:
            log.warning("%s: an output of an earlier run here, not an input: skipped", p)
        else:
            add(p)
    return out


def _some(names: Sequence[str], most: int = 10) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def dump_json(path: Path, record: Dict) -> None:
    path.write_text(json.dumps(record, indent=1) + "\n")
