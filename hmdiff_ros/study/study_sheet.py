"""A contact sheet of a prior study's first samples as the prior saw them (``hmdiff data
prior-study --sheet``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict

import cv2
import numpy as np

from hmdiff_ros.body.joints import PRIOR_JOINT_NAMES, SKELETON_EDGES
from hmdiff_ros.data.poses import FAMILY_NAMES
from hmdiff_ros.files import made_folder
from hmdiff_ros.study.people_render import BACKGROUNDS
from hmdiff_ros.study.study_config import StudyConfig
from hmdiff_ros.study.study_worker import StudyWorker

_BONES = [(PRIOR_JOINT_NAMES.index(a), PRIOR_JOINT_NAMES.index(b)) for a, b in SKELETON_EDGES if b != "head_top"]


def study_sheet(
    path: "str | Path",
    cfg: StudyConfig,
    prior: Callable,
    prior_kwargs: Dict | None = None,
    num: int = 12,
    tile: int = 256,
) -> Path:
    """A PNG contact sheet of the study's first ``num`` samples (made again here, the same
    as in the study's chunks) as the prior saw them: the ground-truth skeleton in white, the
    prior's keypoints in green (visibility >= 0.5) or orange (below), and a caption (pose
    family, age, background, and the prior's detection with its mask IoU). Written whole,
    over ``path`` if it exists."""
    path = Path(path)
    num = min(num, cfg.num)
    worker = StudyWorker(cfg, prior, dict(prior_kwargs or {}))
    images: list = []
    try:
        parts = [worker.make_chunk(c, images) for c in range((num + cfg.chunk - 1) // cfg.chunk)]
    finally:
        worker.close()
    s = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    tiles, high = [], tile * 3 // 4
    for i in range(num):
        w, h = (int(v) for v in s["image_size"][i])
        scale = min(tile / w, high / h)  # fitted into a 4:3 tile, black bars where it is wider
        img = cv2.resize(images[i], (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        img = np.pad(img, ((0, high - img.shape[0]), (0, tile - img.shape[1]), (0, 0)))
        gt = s["gt_uv"][i] * scale
        for a, b in _BONES:
            cv2.line(img, _pt(gt[a]), _pt(gt[b]), (255, 255, 255), 1, cv2.LINE_AA)
        if s["mp_detected"][i]:
            for uv, vis in zip(s["mp_uv"][i] * scale, s["mp_vis"][i], strict=True):
                cv2.circle(img, _pt(uv), 2, (0, 230, 0) if vis >= 0.5 else (255, 140, 0), -1, cv2.LINE_AA)
        seen = f"MediaPipe: IoU {s['mp_mask_iou'][i]:.2f}" if s["mp_detected"][i] else "MediaPipe: nobody"
        caption = f"{FAMILY_NAMES[s['family'][i]]}, {s['age'][i]:.0f}y, {BACKGROUNDS[s['background'][i]]}; {seen}"
        cv2.rectangle(img, (0, 0), (tile, 13), (0, 0, 0), -1)
        cv2.putText(img, caption, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.29, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    cols = min(4, num)
    tiles += [np.zeros_like(tiles[0])] * (-num % cols)
    sheet = np.vstack([np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)])
    sheet = sheet // 8 * 8 + 4  # 32 levels per channel: a third of the PNG's size, the same to the eye
    ok, data = cv2.imencode(".png", sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"cannot encode the sheet '{path}' as PNG")
    with made_folder(path.parent):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data.tobytes())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _pt(uv: np.ndarray) -> tuple:
    return (int(round(float(uv[0]))), int(round(float(uv[1])))) if np.isfinite(uv).all() else (-99, -99)
