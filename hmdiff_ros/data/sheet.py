"""``hmdiff data sheet``: a contact sheet of random synthetic bodies, to judge poses by eye."""

from __future__ import annotations

import math
import numbers
import os
import uuid
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from hmdiff_ros.body.base import axis_angle_to_matrix
from hmdiff_ros.data.engine import SyntheticEngine
from hmdiff_ros.data.poses import FAMILY_NAMES, family_weights
from hmdiff_ros.files import existing_ancestor, missing_folders, remove_empty
from hmdiff_ros.render import render_mesh

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")  # what the sheet can be written as
MIN_TILE = 32  # pixels: smaller tiles leave no room for the label
MAX_NUM = 1024  # samples on one sheet
MAX_SIDE = 16384  # pixels: the sheet (a square grid of tiles) is at most this wide and high (~800 MB)


def max_num(tile: int) -> int:
    """The most samples a sheet of ``tile``-pixel tiles may show: ``MAX_NUM``, and no more
    than a grid of ``MAX_SIDE`` x ``MAX_SIDE`` pixels holds."""
    return min(MAX_NUM, (MAX_SIDE // tile) ** 2)


def check_sheet_args(num: int, out: "str | Path", tile: int = 200) -> None:
    """The checks of :func:`contact_sheet`, before any work: ``ValueError`` naming ``--num``,
    ``--tile`` or ``--out``."""
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or not MIN_TILE <= tile <= MAX_SIDE:
        raise ValueError(f"--tile must be an integer in {MIN_TILE}..{MAX_SIDE} pixels, got {tile!r}")
    bound = max_num(tile)
    if isinstance(num, bool) or not isinstance(num, numbers.Integral) or not 1 <= num <= bound:
        raise ValueError(
            f"--num must be an integer in 1..{bound} (at most {MAX_NUM} samples, on a sheet of at most "
            f"{MAX_SIDE}x{MAX_SIDE} pixels at --tile {tile}), got {num!r}"
        )
    out = Path(out)
    if out.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"--out '{out}' must end in one of {', '.join(IMAGE_EXTENSIONS)} (the image format), got "
            f"{repr(out.suffix) if out.suffix else 'no extension'}"
        )
    if out.is_dir():
        raise ValueError(f"--out '{out}' is a folder; expected an image file path")
    ancestor = existing_ancestor(out.parent)
    if ancestor.exists() and not ancestor.is_dir():
        raise ValueError(f"--out '{out}': '{ancestor}' is a file; expected a folder")


def contact_sheet(
    engine: SyntheticEngine,
    num: int,
    seed: int,
    out: "str | Path",
    tile: int = 200,
    families: Sequence[str] | None = None,
) -> Path:
    """Render ``num`` random (shape, pose) samples, each seen from the front-ish at a random
    yaw within +-45 degrees, labelled with its activity family and age; written to ``out``
    (an image file, replaced if it exists) in one step, so that a failed write leaves no file
    (nor folders it made). ``families``: only these, equally often (default: the engine's
    family weights). See :func:`check_sheet_args` for the bounds."""
    check_sheet_args(num, out, tile)
    weights = None if families is None else family_weights(families)
    num, tile, out = int(num), int(tile), Path(out)
    rng = np.random.default_rng(seed)
    pose, family, tilt = engine.pose_sampler.sample(rng, num, weights)
    ids = rng.integers(engine.bank.size, size=num)
    with torch.no_grad():
        verts, _ = engine.poser(torch.as_tensor(ids), torch.as_tensor(pose), count=engine.topology.num_coarse)
        yaw = torch.zeros(num, 3)
        yaw[:, 1] = torch.as_tensor(rng.uniform(-math.pi / 4, math.pi / 4, num), dtype=torch.float32)
        rot = axis_angle_to_matrix(yaw) @ axis_angle_to_matrix(torch.as_tensor(tilt))
        verts = (verts @ rot.transpose(1, 2)).numpy()
    K = np.array([[tile * 1.3, 0, tile / 2], [0, tile * 1.3, tile / 2], [0, 0, 1]])
    tallest = max(float(np.ptp(v[:, 1])) for v in verts)
    tiles = []
    for i in range(num):
        v = verts[i] - (verts[i].max(0) + verts[i].min(0)) / 2
        cam = v * np.array([1.0, -1.0, -1.0])  # a camera in front of the body: 180 degrees about x
        cam[:, 2] += tallest * 1.45  # one scale for all tiles: children look small
        img = render_mesh(np.full((tile, tile, 3), 245, np.uint8), cam, engine.topology.coarse_faces, K)
        label = f"{FAMILY_NAMES[family[i]]} {engine.bank.ages[ids[i]]:.0f}y"
        cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
        tiles.append(img)
    cols = math.ceil(math.sqrt(num))
    tiles += [np.full_like(tiles[0], 255)] * (cols * math.ceil(num / cols) - num)
    sheet = np.vstack([np.hstack(tiles[r * cols : (r + 1) * cols]) for r in range(len(tiles) // cols)])
    ok, data = cv2.imencode(out.suffix.lower(), sheet)
    if not ok:
        raise ValueError(f"--out '{out}': this OpenCV cannot write {out.suffix} images; use .png or .jpg")
    _write_atomic(out, data.tobytes())
    return out


def _write_atomic(out: Path, data: bytes) -> None:
    """``data`` into ``out`` through a temporary file renamed over it; on failure neither that
    file nor the folders made for it are left."""
    made = missing_folders(out.parent)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # usual permissions
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, out)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        remove_empty(made)
        raise
