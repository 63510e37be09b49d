"""Left/right swaps: a pose prior that puts a left joint where the right one is, and back.

One definition for the whole prior study: the fit of the simulator and its agreement check
(:mod:`~hmdiff_ros.study.prior_fit`; the simulator draws swaps of the kinds
:data:`~hmdiff_ros.data.prior_model.SWAP_KINDS`) and the report
(:mod:`~hmdiff_ros.study.prior_analysis`: swaps per pair, flipped people).

A *group* of left/right pairs (both arms, both legs, or one pair) is **judged** when at
least one of its pairs lies in the image (both sides), and **swapped** when, over those
joints, the left-right flipped truth fits the keypoints better by ``SWAP_MARGIN`` (mean
pixel error) and the direct error is at least ``SWAP_MIN_ERR`` of the person's size (so that
a profile view, whose sides project onto each other, is not a swap). A person is **flipped**
(kind ``"body"``) when both the arms and the legs are swapped.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from hmdiff_ros.body.joints import PRIOR_FLIP_PERMUTATION, PRIOR_JOINT_NAMES
from hmdiff_ros.data.prior_model import ARMS, LEGS

SWAP_MARGIN = 0.5  # a group is swapped when the flipped truth explains it this much better ...
SWAP_MIN_ERR = 0.05  # ... and its direct error is at least this fraction of the person's size
PAIRS = [(j, PRIOR_JOINT_NAMES.index("right_" + n[5:])) for j, n in enumerate(PRIOR_JOINT_NAMES) if n[:5] == "left_"]
PAIR_NAMES = [PRIOR_JOINT_NAMES[a][5:] for a, _ in PAIRS]


def swapped_groups(
    uv: np.ndarray, gt_uv: np.ndarray, size: np.ndarray, inside: np.ndarray, groups: Sequence[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    """``(swapped, judged)``, both (N, G) bool, of keypoints ``uv`` (N, P, 2) against the truth
    ``gt_uv`` (N, P, 2) for each group of prior joints in ``groups`` (both sides of its pairs);
    ``size`` (N,) the person's size in pixels, ``inside`` (N, P) the true joints in the image.
    Keypoints that are NaN (no detection) are never swapped."""
    flip = np.asarray(PRIOR_FLIP_PERMUTATION)
    direct = np.linalg.norm(uv - gt_uv, axis=-1)  # (N, P)
    flipped = np.linalg.norm(uv - gt_uv[:, flip], axis=-1)
    seen = inside & inside[:, flip]  # both sides of the pair in the image
    swapped, judged = [], []
    for g in groups:
        w = seen[:, g]
        count = np.maximum(w.sum(1), 1)
        d = np.where(w, direct[:, g], 0.0).sum(1) / count
        f = np.where(w, flipped[:, g], 0.0).sum(1) / count
        judged.append(w.sum(1) >= 2)
        with np.errstate(invalid="ignore"):
            swapped.append(judged[-1] & (f < SWAP_MARGIN * d) & (d > SWAP_MIN_ERR * size))
    return np.stack(swapped, 1), np.stack(judged, 1)


def find_swaps(uv: np.ndarray, gt_uv: np.ndarray, size: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Swap kind (N,) into :data:`~hmdiff_ros.data.prior_model.SWAP_KINDS`: ``"body"`` when the
    arms and the legs are swapped, else ``"arms"`` or ``"legs"``, else ``"none"``."""
    swapped, _ = swapped_groups(uv, gt_uv, size, inside, (ARMS, LEGS))
    arms, legs = swapped.T
    return np.where(arms & legs, 1, np.where(arms, 2, np.where(legs, 3, 0)))


def swapped_pairs(
    uv: np.ndarray, gt_uv: np.ndarray, size: np.ndarray, inside: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """``(swapped, judged)``, both (N, pairs) bool, each left/right pair of :data:`PAIRS` a group."""
    return swapped_groups(uv, gt_uv, size, inside, [np.array(pair) for pair in PAIRS])
