"""How the real pose prior fails, beside the simulated one (``hmdiff data prior-study-report``).

Reads a prior study (:mod:`hmdiff_ros.data.study_reader`) and measures MediaPipe (``mp_*``) and
the engine's simulated prior (``sim_*``) against the ground truth **on the same samples** (those
in which MediaPipe found the person), each beside a trivial yardstick: every joint at the
centre of the person's box (2D), one mean pose for everybody (3D).

Notation (P = 24 prior joints; all per sample ``n`` and joint ``j``):

- 2D error ``e2[n, j] = |uv_pred - uv_gt| / diag[n]`` in % of the diagonal of the box around
  the true projected prior joints (not clipped to the image: truncation does not shrink it);
- 3D error ``e3[n, j] = xyz_pred - xyz_gt`` in mm in the camera frame, **both centred at their
  own mid-hip** (MediaPipe's origin is between its hip landmarks, ours is the pelvis = mean of
  our hips: centring each at the mean of its own two hips is the fair common root);
  MPJPE = mean_j |e3|, PA-MPJPE after a similarity (Procrustes) alignment;
- the body frame is the body's canonical frame (x to the subject's left, y up, z forward):
  ``e_body = R^T e3`` with ``R`` = ``rotation``;
- yaw: the angle about the body's up axis from the direction to the camera to the body's
  forward direction (0 = facing the camera, 180 = its back to it);
- a joint is *truly visible* when it lies in the image, outside the occluder and at most
  ``SELF_OCCLUSION_M`` behind the body surface seen at its pixel;
- left/right swaps as :mod:`hmdiff_ros.study.swaps` defines them for the whole study (the
  simulator is fitted to the same): a pair is *swapped* when the flipped truth fits its two
  keypoints clearly better, judged where the pair lies in the image; a sample is *flipped*
  when its arms and its legs are swapped.

:func:`analyse_prior_study` gives the numbers (JSON-ready); :mod:`hmdiff_ros.study.prior_report`
draws and writes them.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES
from hmdiff_ros.data.poses import FAMILY_NAMES
from hmdiff_ros.data.prior_model import SWAP_KINDS, person_size
from hmdiff_ros.model.metrics import procrustes_align
from hmdiff_ros.study.swaps import PAIR_NAMES, PAIRS, SWAP_MARGIN, SWAP_MIN_ERR, find_swaps, swapped_pairs

P = len(PRIOR_JOINT_NAMES)
HIPS = [PRIOR_JOINT_NAMES.index("left_hip"), PRIOR_JOINT_NAMES.index("right_hip")]
PRIORS = ("mp", "sim")

SELF_OCCLUSION_M = 0.15  # deeper than this behind the surface at its pixel: hidden by another body part
GOOD_2D = 5.0  # % of the diagonal: a joint "found" (visibility AUC)
GROSS_2D = 10.0  # % of the diagonal: a sample whose mean 2D error is larger is a gross failure
CHILD_AGE = 18.0


# -- per sample ---------------------------------------------------------------------------


def sample_conditions(s: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """What each sample's difficulty may depend on: ``diag_px`` (N,) true skeleton box
    diagonal, ``yaw_deg`` (N,) in [-180, 180], ``distance_m`` (N,) pelvis depth, ``outside``
    (N,) joints outside the image, ``occluder`` (N,) bool, ``child`` (N,) bool, ``visible_px``
    (N,), ``family`` (N,), ``truly_visible`` (N, P) bool."""
    gt_uv = s["gt_uv"].astype(np.float64)
    extent = gt_uv.max(1) - gt_uv.min(1)  # (N, 2)
    rot = s["rotation"].astype(np.float64)
    up, forward = rot[:, :, 1], rot[:, :, 2]  # body axes in the camera frame
    to_cam = -s["joints"][:, JOINT_INDEX["pelvis"]].astype(np.float64)
    to_cam -= up * (to_cam * up).sum(1, keepdims=True)  # in the plane about the up axis
    yaw = np.arctan2((np.cross(to_cam, forward) * up).sum(1), (to_cam * forward).sum(1))
    depth = s["joints"][:, list(PRIOR_JOINT_INDICES), 2] - s["gt_surface_depth"]  # (N, P) NaN outside
    with np.errstate(invalid="ignore"):
        hidden = depth > SELF_OCCLUSION_M
    return {
        "diag_px": np.maximum(np.hypot(extent[:, 0], extent[:, 1]), 1e-6),
        "yaw_deg": np.degrees(yaw),
        "distance_m": s["joints"][:, JOINT_INDEX["pelvis"], 2].astype(np.float64),
        "outside": s["joints_outside"].astype(np.int64),
        "occluder": np.isfinite(s["occluder"]).all(1),
        "child": s["age"] < CHILD_AGE,
        "visible_px": s["visible_px"].astype(np.float64),
        "family": s["family"].astype(np.int64),
        "truly_visible": s["gt_in_image"] & ~s["gt_occluded"] & ~hidden,
    }


def _mid_hip(xyz: np.ndarray) -> np.ndarray:
    return xyz - xyz[:, HIPS].mean(1, keepdims=True)


def prior_errors(
    uv: np.ndarray, xyz: np.ndarray, s: Dict[str, np.ndarray], diag_px: np.ndarray, rows: np.ndarray
) -> Dict[str, np.ndarray]:
    """Errors of predictions ``uv`` (N, P, 2) pixels and ``xyz`` (N, P, 3) root-relative metres
    on samples ``rows`` (N,) bool (NaN elsewhere): ``e2`` (N, P) % of the diagonal, ``e3``
    (N, P, 3) mm camera frame, ``mpjpe``/``pa`` (N,) mm, ``swapped``/``judged`` (N, pairs) and
    ``flipped`` (N,) (:mod:`~hmdiff_ros.study.swaps`; False outside ``rows``)."""
    n = len(rows)
    uv, gt_uv = np.asarray(uv, np.float64), s["gt_uv"].astype(np.float64)
    gt = _mid_hip(s["joints_rel"][:, list(PRIOR_JOINT_INDICES)].astype(np.float64))  # (N, P, 3)
    pred = _mid_hip(np.asarray(xyz, np.float64))
    e2 = np.linalg.norm(uv - gt_uv, axis=-1) / diag_px[:, None] * 100.0
    e3 = (pred - gt) * 1000.0
    pa = np.full(n, np.nan)
    if rows.any():
        pa[rows] = np.linalg.norm(procrustes_align(pred[rows], gt[rows]) - gt[rows], axis=-1).mean(1) * 1000.0
    e2[~rows], e3[~rows] = np.nan, np.nan
    size, inside = person_size(s["person_box"].astype(np.float64)), s["gt_in_image"].astype(bool)
    swapped, judged = swapped_pairs(uv, gt_uv, size, inside)
    flipped = find_swaps(uv, gt_uv, size, inside) == SWAP_KINDS.index("body")
    swapped[~rows], judged[~rows], flipped[~rows] = False, False, False
    return {
        "e2": e2,
        "e3": e3,
        "mpjpe": np.linalg.norm(e3, axis=-1).mean(1),
        "pa": pa,
        "swapped": swapped,
        "judged": judged,
        "flipped": flipped,
    }


# -- statistics ---------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x`` (1-D), ties sharing their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse.reshape(-1)]


def auc(score: np.ndarray, positive: np.ndarray) -> "float | None":
    """Area under the ROC curve of ``score`` separating ``positive`` (Mann-Whitney U); None
    without both classes."""
    score, positive = np.asarray(score, np.float64).reshape(-1), np.asarray(positive, bool).reshape(-1)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        return None
    return float((_ranks(score)[positive].sum() - n1 * (n1 - 1) / 2) / (n1 * n0))


def spearman(x: np.ndarray, y: np.ndarray) -> "float | None":
    """Rank correlation of two 1-D arrays (None when either is constant)."""
    rx, ry = _ranks(np.asarray(x).reshape(-1)), _ranks(np.asarray(y).reshape(-1))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / den) if den > 0 else None


def _num(x) -> "float | None":
    x = float(x)
    return round(x, 4) if np.isfinite(x) else None


def _stat(fn, x: np.ndarray) -> "float | None":
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return _num(fn(x)) if len(x) else None


def _mean(x):
    return _stat(np.mean, x)


def _median(x):
    return _stat(np.median, x)


def bias_and_noise(e: np.ndarray, groups: "np.ndarray | None" = None) -> Dict:
    """Systematic offset against spread of errors ``e`` (N, P, 3) mm: per joint the ``bias``
    (mean error vector, (P, 3)), its length ``bias_mm`` and the ``spread_mm`` (RMS distance to
    it), and ``bias_share``: the part of the mean squared error the per-joint biases explain
    (per joint and group when ``groups`` (N,) is given, e.g. view bins)."""
    groups = np.zeros(len(e), np.int64) if groups is None else groups
    rest = np.empty_like(e)
    for g in np.unique(groups):
        rest[groups == g] = e[groups == g] - e[groups == g].mean(0)
    bias = e.mean(0)
    total = (e**2).sum(-1).mean()
    return {
        "bias": np.round(bias, 1).tolist(),
        "bias_mm": np.round(np.linalg.norm(bias, axis=-1), 1).tolist(),
        "spread_mm": np.round(np.sqrt(((e - bias) ** 2).sum(-1).mean(0)), 1).tolist(),
        "bias_share": _num(1.0 - (rest**2).sum(-1).mean() / total) if total > 0 else None,
    }


def depth_scale(pred: np.ndarray, gt: np.ndarray, axis: int) -> np.ndarray:
    """(N,) per-sample slope of predicted on true root-relative coordinate ``axis`` (1: the
    right extent, < 1: squashed along that axis)."""
    g = gt[..., axis] - gt[..., axis].mean(1, keepdims=True)
    p = pred[..., axis] - pred[..., axis].mean(1, keepdims=True)
    return (g * p).sum(1) / np.maximum((g**2).sum(1), 1e-12)


def condition_bins(c: Dict[str, np.ndarray]) -> Dict[str, tuple]:
    """Per condition: (title, bin labels, bin index (N,) of each sample)."""
    yaw = np.abs(c["yaw_deg"])
    dist_edges = [0.8, 1.2, 1.8, 2.7, 4.0, 6.0]
    out_edges = [1, 4, 8, 12]
    px_edges = [2000, 5000, 10000, 20000, 50000, 100000]
    return {
        "yaw": (
            "body yaw (deg; 0 = facing the camera)",
            [f"{a}-{a + 30}" for a in range(0, 180, 30)],
            np.minimum(yaw // 30, 5).astype(np.int64),
        ),
        "distance": ("distance (m)", _edge_labels(dist_edges, "{:g}"), np.digitize(c["distance_m"], dist_edges)),
        "outside": (
            "joints outside the image",
            ["0", "1-3", "4-7", "8-11", "12+"],
            np.digitize(c["outside"], out_edges),
        ),
        "occluder": ("occluder", ["none", "occluder"], c["occluder"].astype(np.int64)),
        "age": ("age", [f"adult (>= {CHILD_AGE:g})", f"child (< {CHILD_AGE:g})"], c["child"].astype(np.int64)),
        "visible_px": (
            "visible body pixels",
            _edge_labels(px_edges, "{:,.0f}"),
            np.digitize(c["visible_px"], px_edges),
        ),
        "family": ("pose family", list(FAMILY_NAMES), c["family"]),
    }


def _edge_labels(edges: Sequence[float], fmt: str) -> List[str]:
    e = [fmt.format(x) for x in edges]
    return [f"< {e[0]}", *(f"{a}-{b}" for a, b in zip(e[:-1], e[1:], strict=True)), f">= {e[-1]}"]


# -- the analysis -------------------------------------------------------------------------


def analyse_prior_study(s: Dict[str, np.ndarray]) -> Dict:
    """The study's numbers (JSON-ready): ``headline``, ``per_joint``, ``axes``, ``bias``,
    ``visibility``, ``swaps``, ``conditions`` (per condition and bin). MediaPipe and the
    simulated prior are measured on the samples MediaPipe detected; the simulation's figures
    on all samples are under ``headline.sim_all``."""
    c = sample_conditions(s)
    n = len(s["mp_detected"])
    det = s["mp_detected"].astype(bool)
    every = np.ones(n, bool)
    box = s["person_box"].astype(np.float64)
    centre = np.broadcast_to(((box[:, :2] + box[:, 2:]) / 2)[:, None], (n, P, 2))
    gt = _mid_hip(s["joints_rel"][:, list(PRIOR_JOINT_INDICES)].astype(np.float64))
    mean_pose = np.broadcast_to(gt.mean(0), gt.shape)
    err = {
        "mp": prior_errors(s["mp_uv"], s["mp_xyz"], s, c["diag_px"], det),
        "sim": prior_errors(s["sim_uv"], s["sim_xyz"], s, c["diag_px"], det),
        "yardstick": prior_errors(centre, mean_pose, s, c["diag_px"], det),
    }
    sim_all = prior_errors(s["sim_uv"], s["sim_xyz"], s, c["diag_px"], every)
    vis = {"mp": s["mp_vis"], "sim": s["sim_vis"]}
    pred = {"mp": _mid_hip(s["mp_xyz"].astype(np.float64)), "sim": _mid_hip(s["sim_xyz"].astype(np.float64))}
    pred["yardstick"] = mean_pose

    def summary(e: Dict, rows: np.ndarray) -> Dict:
        per_sample = np.nanmean(e["e2"][rows], 1) if rows.any() else np.zeros(0)
        return {
            "samples": int(rows.sum()),
            "e2_median_pct": _median(e["e2"][rows]),
            "e2_mean_pct": _mean(e["e2"][rows]),
            "gross_2d_share": _mean(per_sample > GROSS_2D) if rows.any() else None,
            "mpjpe_mm": _mean(e["mpjpe"][rows]),
            "pa_mpjpe_mm": _mean(e["pa"][rows]),
            "mpjpe_median_mm": _median(e["mpjpe"][rows]),
            "flipped_share": _mean(e["flipped"][rows]) if rows.any() else None,
            "any_swap_share": _mean(e["swapped"][rows].any(1)) if rows.any() else None,
        }

    headline = {k: summary(err[k], det) for k in err}
    headline["mp"]["detected_share"] = _num(det.mean())
    headline["sim"]["detected_share"] = 1.0
    headline["sim_all"] = summary(sim_all, every)
    headline["sim_all"]["injected_swap_share"] = _mean(s["sim_swapped"])
    headline["num"] = n
    headline["detected"] = int(det.sum())
    for k in PRIORS:  # masks in the crop, against the visible silhouette
        m = s[f"{k}_mask"][det] >= 128
        t = s["true_mask"][det] >= 128
        union = (m | t).sum((1, 2))
        iou = np.where(union > 0, (m & t).sum((1, 2)) / np.maximum(union, 1), np.nan)
        headline[k]["mask_iou_median"] = _median(iou)

    axes = {}
    gt_det = gt[det]
    for k in err:
        e = err[k]["e3"][det]
        rms = np.sqrt(np.nanmean(e**2, axis=(0, 1))) if det.any() else np.full(3, np.nan)
        axes[k] = {"rms_mm": [_num(v) for v in rms]}
        if k in PRIORS and det.any():
            p = pred[k][det]
            axes[k]["scale_x"] = _median(depth_scale(p, gt_det, 0))
            axes[k]["scale_y"] = _median(depth_scale(p, gt_det, 1))
            axes[k]["scale_z"] = _median(depth_scale(p, gt_det, 2))

    per_joint = {"names": list(PRIOR_JOINT_NAMES)}
    for k in err:
        per_joint[k] = {
            "e2_median_pct": [_median(err[k]["e2"][det, j]) for j in range(P)],
            "mpjpe_mm": [_mean(np.linalg.norm(err[k]["e3"][det, j], axis=-1)) for j in range(P)],
        }

    rot = s["rotation"].astype(np.float64)[det]
    yaw_bin = condition_bins(c)["yaw"][2][det]
    bias = {}
    for k in PRIORS:
        e = err[k]["e3"][det]
        if not len(e):
            continue
        body = np.einsum("nji,npj->npi", rot, e)  # R^T e: the body frame
        bias[k] = {
            "camera": bias_and_noise(e),
            "camera_by_yaw": {"bias_share": bias_and_noise(e, yaw_bin)["bias_share"]},
            "body": bias_and_noise(body),
        }

    visibility = {"bins": np.linspace(0, 1, 11).round(1).tolist()}
    for k in PRIORS:
        v, e2 = vis[k][det], err[k]["e2"][det]
        seen = c["truly_visible"][det]
        b = np.clip((v * 10).astype(np.int64), 0, 9) if len(v) else np.zeros((0, P), np.int64)
        visibility[k] = {
            "auc_truly_visible": auc(v, seen) if len(v) else None,
            "auc_good_2d": auc(v, e2 < GOOD_2D) if len(v) else None,
            "spearman_vs_e2": spearman(v, e2) if len(v) else None,
            "joints": [int((b == i).sum()) for i in range(10)],
            "e2_median_pct": [_median(e2[b == i]) for i in range(10)],
            "truly_visible_share": [_mean(seen[b == i]) for i in range(10)],
        }

    swaps = {"pairs": PAIR_NAMES}
    for k in PRIORS:
        sw, jd = err[k]["swapped"][det], err[k]["judged"][det]
        swaps[k] = {"pair_share": [_num(sw[:, i].sum() / max(jd[:, i].sum(), 1)) for i in range(len(PAIRS))]}

    conditions = {}
    fl = {k: err[k]["flipped"] for k in PRIORS}
    for name, (title, labels, index) in condition_bins(c).items():
        rows = []
        for i, label in enumerate(labels):
            inbin = index == i
            both = inbin & det
            row = {"label": label, "samples": int(inbin.sum()), "detected": int(both.sum())}
            row["mp_detected_share"] = _mean(det[inbin]) if inbin.any() else None
            for k in PRIORS:
                per_sample_e2 = np.nanmean(err[k]["e2"][both], 1) if both.any() else np.zeros(0)
                row[f"{k}_e2_median_pct"] = _median(per_sample_e2)
                row[f"{k}_mpjpe_median_mm"] = _median(err[k]["mpjpe"][both])
                row[f"{k}_pa_mpjpe_median_mm"] = _median(err[k]["pa"][both])
                row[f"{k}_flipped_share"] = _mean(fl[k][both]) if both.any() else None
            rows.append(row)
        conditions[name] = {"title": title, "bins": rows}

    return {
        "headline": headline,
        "per_joint": per_joint,
        "axes": axes,
        "bias": bias,
        "visibility": visibility,
        "swaps": swaps,
        "conditions": conditions,
        "settings": {
            "self_occlusion_m": SELF_OCCLUSION_M,
            "swap_margin": SWAP_MARGIN,
            "swap_min_error_of_size": SWAP_MIN_ERR,
            "good_2d_pct": GOOD_2D,
            "gross_2d_pct": GROSS_2D,
            "child_age": CHILD_AGE,
        },
    }
