"""``hmdiff data sheet``: a contact sheet of random synthetic bodies, to judge poses by eye."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from hmdiff_ros.body.base import axis_angle_to_matrix
from hmdiff_ros.data.engine import SyntheticEngine
from hmdiff_ros.data.poses import FAMILY_NAMES
from hmdiff_ros.render import render_mesh


def contact_sheet(engine: SyntheticEngine, num: int, seed: int, out: "str | Path", tile: int = 200) -> Path:
    """Render ``num`` random (shape, pose) samples, each seen from the front-ish at a random
    yaw within +-45 degrees, labelled with its activity family and age."""
    if num < 1 or tile < 32:
        raise ValueError("num must be >= 1 and tile >= 32 pixels")
    rng = np.random.default_rng(seed)
    pose, family, tilt = engine.pose_sampler.sample(rng, num)
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet):
        raise ValueError(f"could not write image '{out}' (unknown extension or unwritable folder)")
    return out
