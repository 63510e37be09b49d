"""Left/right swaps: when a pose prior's keypoints are the other side's joints.

The fitted simulator (:mod:`hmdiff_ros.data.prior_model`) draws swaps of these kinds
(:data:`~hmdiff_ros.data.prior_model.SWAP_KINDS`); the fit and its agreement check find them
in MediaPipe's outputs with :func:`find_swaps`.
"""

from __future__ import annotations

import numpy as np

from hmdiff_ros.body.joints import PRIOR_FLIP_PERMUTATION
from hmdiff_ros.data.prior_model import ARMS, LEGS

SWAP_MARGIN = 0.5  # a limb pair is swapped when the flipped truth explains it this much better ...
SWAP_MIN_ERR = 0.05  # ... and its direct error is at least this fraction of the person's size


def find_swaps(uv: np.ndarray, gt_uv: np.ndarray, size: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Swap kind (N,) into :data:`~hmdiff_ros.data.prior_model.SWAP_KINDS` of keypoints ``uv``
    against the truth ``gt_uv``: a limb group (arms, legs) is swapped when the left-right
    flipped truth fits it better by ``SWAP_MARGIN`` and its direct error is at least
    ``SWAP_MIN_ERR`` of the person's size, over the group's joints in the image."""
    flip = np.asarray(PRIOR_FLIP_PERMUTATION)
    direct = np.linalg.norm(uv - gt_uv, axis=-1)
    flipped = np.linalg.norm(uv - gt_uv[:, flip], axis=-1)
    seen = inside & inside[:, flip]
    out = []
    for g in (ARMS, LEGS):
        w = seen[:, g]
        count = np.maximum(w.sum(1), 1)
        d = (direct[:, g] * w).sum(1) / count
        f = (flipped[:, g] * w).sum(1) / count
        out.append((w.sum(1) >= 2) & (f < SWAP_MARGIN * d) & (d > SWAP_MIN_ERR * size))
    arms, legs = out
    return np.where(arms & legs, 1, np.where(arms, 2, np.where(legs, 3, 0)))
