"""The pose-prior simulator fitted to a prior study, and checked against it (``hmdiff data
fit-prior``).

:func:`fit_study` fits the parameters that :class:`~hmdiff_ros.data.prior_model.FittedPrior`
draws from (what they are: :mod:`hmdiff_ros.data.prior_model`) on the first samples of a prior
study by index, and writes an extract of the held-out rest with MediaPipe's error statistics
(:func:`error_stats`), which ``tests/test_prior_model.py`` compares the simulator with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES
from hmdiff_ros.data.prior_model import (
    CONDITIONS,
    FORMAT_VERSION,
    LEVELS,
    OUTSIDE_EDGES,
    PELVIS,
    PELVIS_P,
    SWAP_KINDS,
    SWAP_PERMS,
    VIEW_BINS,
    FittedPrior,
    P,
    body_yaw,
    joint_conditions,
    person_size,
    view_bin,
    visible_box_area,
)
from hmdiff_ros.observation import in_image
from hmdiff_ros.study.swaps import find_swaps

AREA_EDGES_Q = np.linspace(0, 1, 11)[1:-1]  # detection: deciles of log visible box area (by joints outside)
MIN_CELL = 30  # a quantile cell with fewer samples falls back to all views
STUDY_KEYS = (
    "index",
    "joints",
    "gt_uv",
    "image_size",
    "rotation",
    "occluder",
    "person_box",
    "joints_outside",
    "height_m",
    "mp_detected",
    "mp_uv",
    "mp_vis",
    "mp_xyz",
    "K",
)


def _normal_ppf(u: np.ndarray) -> np.ndarray:
    """Inverse normal CDF (Acklam's rational approximation; |error| < 1.2e-9)."""
    a = [
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
    ]
    a.append(2.506628277459239e00)
    b = [
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    ]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00]
    c += [4.374664141464968e00, 2.938163982698783e00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00]
    u = np.clip(u, 1e-9, 1 - 1e-9)
    q = np.where(u < 0.5, u, 1 - u)
    t = np.sqrt(-2 * np.log(q))
    num = ((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]
    den = (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1
    tail = num / den
    r = (u - 0.5) ** 2
    qc = u - 0.5
    num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * qc
    den = ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1
    central = num / den
    out = np.where(np.abs(u - 0.5) <= 0.425, central, np.where(u < 0.5, tail, -tail))
    return out


def _quantile_table(values: np.ndarray, joint: np.ndarray, cond: np.ndarray, view: np.ndarray, axes: int):
    """Quantiles (P, 4, VIEW_BINS, axes, L) of ``values`` (M, axes) per cell; sparse cells pooled over views."""
    table = np.zeros((P, len(CONDITIONS), VIEW_BINS, axes, len(LEVELS)))
    for j in range(P):
        for c in range(len(CONDITIONS)):
            cell = (joint == j) & (cond == c)
            pooled = values[cell] if cell.sum() >= MIN_CELL else values[joint == j]
            pooled_q = np.quantile(pooled, LEVELS, axis=0).T
            for b in range(VIEW_BINS):
                here = cell & (view == b)
                table[j, c, b] = np.quantile(values[here], LEVELS, axis=0).T if here.sum() >= MIN_CELL else pooled_q
    return table


def _loading(values: np.ndarray, joint: np.ndarray, cond: np.ndarray, view: np.ndarray, sample: np.ndarray) -> float:
    """Copula loading: normal scores of each value within its cell, averaged per sample; the
    variance of the average over K values is rho^2 + (1 - rho^2) / K."""
    key = (joint * len(CONDITIONS) + cond) * VIEW_BINS + view
    order = np.lexsort((values, key))
    ranks = np.empty(len(values))
    sk = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sk)) + 1]
    counts = np.diff(np.r_[starts, len(sk)])
    first = np.repeat(starts, counts)
    ranks[order] = (np.arange(len(sk)) - first + 0.5) / np.repeat(counts, counts)
    z = _normal_ppf(ranks)
    k = np.bincount(sample)
    mean = np.bincount(sample, z) / np.maximum(k, 1)
    ok = k >= 8
    var = float(np.mean(mean[ok] ** 2))
    kk = float(np.mean(k[ok]))
    rho2 = (var - 1 / kk) / (1 - 1 / kk)
    return float(np.sqrt(np.clip(rho2, 0.0, 0.99)))


def _less_bias(table: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Quantiles of error sizes (P, 4, V, A, L) less the bias sizes (P, V, A), in quadrature."""
    return np.sqrt(np.clip(table**2 - bias[:, None, :, :, None] ** 2, 0.0, None))


def _axis_corr(values: np.ndarray) -> float:
    """Correlation of the normal scores of a joint's lateral and depth residual sizes (pooled)."""
    z = [_normal_ppf((np.argsort(np.argsort(v)) + 0.5) / len(v)) for v in values.T]
    return float(np.clip(np.corrcoef(z[0], z[1])[0, 1], 0.0, 0.99))


def study_features(study: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """What the fit and the agreement checks need of a study (see :mod:`~hmdiff_ros.data.study_reader`)."""
    joints = study["joints"].astype(np.float64)
    xyz = joints[:, list(PRIOR_JOINT_INDICES)]
    pelvis = joints[:, PELVIS]
    gt_uv = study["gt_uv"].astype(np.float64)
    size_wh = study["image_size"].astype(np.float64)
    occ = study["occluder"].astype(np.float64)
    box = study["person_box"].astype(np.float64)
    return {
        "gt_uv": gt_uv,
        "gt_rel": xyz - pelvis[:, None],
        "view": view_bin(body_yaw(study["rotation"].astype(np.float64), pelvis)),
        "cond": joint_conditions(xyz, pelvis[:, 2], gt_uv, size_wh, occ),
        "size": person_size(box),
        "inside": in_image(gt_uv, size_wh),
        "area": visible_box_area(box, size_wh, occ),
        "outside": np.asarray(study["joints_outside"]).astype(np.int64),
        "height": study["height_m"].astype(np.float64),
    }


def fit_prior_model(study: Dict[str, np.ndarray], train: np.ndarray) -> Dict[str, np.ndarray]:
    """Parameters (a dict of arrays, see :func:`save_prior_model`) fitted on the study's rows ``train``."""
    f = {k: v[train] for k, v in study_features(study).items()}
    det = study["mp_detected"][train].astype(bool)
    mp_uv = study["mp_uv"][train].astype(np.float64)
    mp_vis = study["mp_vis"][train].astype(np.float64)
    mp_xyz = study["mp_xyz"][train].astype(np.float64)

    # detection by visible box area and truncation
    log_area = np.log(f["area"])
    area_edges = np.quantile(log_area, AREA_EDGES_Q)
    cell = np.digitize(log_area, area_edges) * (len(OUTSIDE_EDGES) + 1) + np.digitize(f["outside"], OUTSIDE_EDGES)
    ncell = (len(area_edges) + 1) * (len(OUTSIDE_EDGES) + 1)
    hits, counts = np.bincount(cell, det, ncell), np.bincount(cell, minlength=ncell)
    detect = (hits + 5 * det.mean()) / (counts + 5)  # a few pseudo-samples of the overall rate

    # what follows is conditional on detection
    gt_uv, gt_rel, size, view, cond, inside = (f[k][det] for k in ("gt_uv", "gt_rel", "size", "view", "cond", "inside"))
    mp_uv, mp_vis, mp_xyz, height = mp_uv[det], mp_vis[det], mp_xyz[det], f["height"][det]
    n = len(gt_uv)
    kind = find_swaps(mp_uv, gt_uv, size, inside)
    swap = np.zeros((VIEW_BINS, len(SWAP_KINDS)))
    np.add.at(swap, (view, kind), 1)
    swap = (swap + 1) / (swap.sum(1, keepdims=True) + len(SWAP_KINDS))
    perms = np.stack(SWAP_PERMS)[kind]  # (n, P): the truth as the prior labelled it
    rows = np.arange(n)[:, None]
    gt_uv, gt_rel = gt_uv[rows, perms], gt_rel[rows, perms]
    # the prior's labels are swapped, but each joint's condition is where the labelled joint is
    cond = cond[rows, perms]

    # 3D: per-sample lateral and depth scales, then per-joint bias by view and residuals
    s_xy = (gt_rel[..., :2] * mp_xyz[..., :2]).sum((1, 2)) / np.maximum((gt_rel[..., :2] ** 2).sum((1, 2)), 1e-9)
    s_z = (gt_rel[..., 2] * mp_xyz[..., 2]).sum(1) / np.maximum((gt_rel[..., 2] ** 2).sum(1), 1e-9)
    scaled = gt_rel * np.stack([s_xy, s_xy, s_z], -1)[:, None]
    r3 = mp_xyz - scaled
    r2 = (mp_uv - gt_uv) / size[:, None, None]
    bias3, bias2 = np.zeros((P, VIEW_BINS, 3)), np.zeros((P, VIEW_BINS, 2))
    for b in range(VIEW_BINS):
        m = view == b
        bias3[:, b] = np.median(r3[m], 0)
        bias2[:, b] = np.median(r2[m], 0)
    bias3[PELVIS_P] = 0.0  # the root is the root
    joint = np.broadcast_to(np.arange(P), (n, P)).ravel()
    vflat = np.repeat(view, P)
    cflat = cond.ravel()
    sample = np.repeat(np.arange(n), P)
    # Residual sizes are the errors' sizes less the bias (in quadrature): the bias is added back
    # in a random direction, |b + m u|^2 = |b|^2 + m^2 on average over u.
    m3 = np.stack([np.linalg.norm(r3[..., :2], axis=-1), np.abs(r3[..., 2])], -1).reshape(-1, 2)
    m2 = np.linalg.norm(r2, axis=-1).reshape(-1, 1)
    b3 = np.stack([np.linalg.norm(bias3[..., :2], axis=-1), np.abs(bias3[..., 2])], -1)  # (P, V, 2)
    b2 = np.linalg.norm(bias2, axis=-1)[..., None]
    vis = mp_vis.ravel()[:, None]
    keep = joint != PELVIS_P  # the root's 3D residual is zero by definition
    params = {
        "format": np.array(FORMAT_VERSION),
        "area_edges": area_edges,
        "detect": detect.reshape(len(area_edges) + 1, len(OUTSIDE_EDGES) + 1),
        "swap": swap,
        "scale_pairs": np.stack([s_xy, s_z], -1).astype(np.float16),
        "scale_height": height.astype(np.float16),
        "bias2": bias2,
        "bias3": bias3,
        "q2": _less_bias(_quantile_table(m2, joint, cflat, vflat, 1), b2)[..., 0, :].astype(np.float16),
        "q3": _less_bias(_quantile_table(m3, joint, cflat, vflat, 2), b3).astype(np.float16),
        "qvis": _quantile_table(vis, joint, cflat, vflat, 1)[..., 0, :].astype(np.float16),
        "rho": np.array(
            [
                _loading(m2[:, 0], joint, cflat, vflat, sample),
                _loading(m3[keep, 0], joint[keep], cflat[keep], vflat[keep], sample[keep]),
                _loading(-vis[:, 0], joint, cflat, vflat, sample),  # low visibility goes with large errors
                _axis_corr(m3[keep]),
            ]
        ),
        "fit_rows": np.array([int(np.min(train)), int(np.max(train)) + 1]) if len(train) else np.zeros(2, int),
        "scale_shrink": np.array(1.0),
    }
    params["scale_shrink"] = np.array(_scale_shrink(params, study, np.asarray(train)[det]))
    return params


def _scale_shrink(params: Dict[str, np.ndarray], study: Dict[str, np.ndarray], rows: np.ndarray) -> float:
    """How far the per-sample 3D scales spread around their medians (0..1), so that the 3D
    errors' medians and 90th percentiles match the prior's on the detected ``rows`` on average.

    Scales fitted per sample carry part of that sample's residuals, which are drawn again on
    their own: the full spread counts those twice."""
    f = {k: v[rows] for k, v in study_features(study).items()}
    joints = study["joints"][rows].astype(np.float64)
    args = (
        joints[:, list(PRIOR_JOINT_INDICES)],
        joints[:, PELVIS],
        f["gt_uv"],
        study["image_size"][rows].astype(np.float64),
        study["person_box"][rows].astype(np.float64),
        study["occluder"][rows].astype(np.float64),
        f["height"],
        study["rotation"][rows].astype(np.float64),
    )
    use = np.arange(P) != PELVIS_P
    target = np.quantile(np.linalg.norm(study["mp_xyz"][rows] - f["gt_rel"], axis=-1), [0.5, 0.9], axis=0)[:, use]

    def excess(shrink: float) -> float:
        out = FittedPrior({**params, "scale_shrink": np.array(shrink)}).sample(np.random.default_rng(0), *args)
        e3 = np.quantile(np.linalg.norm(out["prior_xyz"] - f["gt_rel"], axis=-1), [0.5, 0.9], axis=0)
        return float(np.mean(np.log(e3[:, use] / target)))

    lo, hi = 0.0, 1.0
    if excess(hi) <= 0:
        return hi
    for _ in range(10):  # bisection: the errors grow with the spread
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) < 0 else (lo, mid)
    return round(0.5 * (lo + hi), 4)


def save_prior_model(params: Dict[str, np.ndarray], path: "str | Path") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **params)
    tmp.replace(path)
    return path


def error_stats(
    gt_uv: np.ndarray,
    gt_rel: np.ndarray,
    size: np.ndarray,
    inside: np.ndarray,
    uv: np.ndarray,
    xyz: np.ndarray,
    rows: np.ndarray,
) -> Dict[str, np.ndarray]:
    """Per-joint 2D error (fraction of the person's size) and 3D error (metres) quantiles
    (median, 90th percentile) over ``rows``, and the swap rate (:func:`find_swaps`) there."""
    e2 = np.linalg.norm(uv[rows] - gt_uv[rows], axis=-1) / size[rows, None]
    e3 = np.linalg.norm(xyz[rows] - gt_rel[rows], axis=-1)
    swaps = find_swaps(uv[rows], gt_uv[rows], size[rows], inside[rows]) > 0
    return {
        "e2": np.quantile(e2, [0.5, 0.9], axis=0),  # (2, P)
        "e3": np.quantile(e3, [0.5, 0.9], axis=0),
        "swap_rate": np.array(swaps.mean()),
    }


def write_extract(study: Dict[str, np.ndarray], rows: np.ndarray, path: "str | Path") -> Path:
    """A small extract of the study's rows for the agreement test: the ground truth the
    simulators need (float16), whether MediaPipe found each person, and MediaPipe's error
    statistics over the same rows (:func:`error_stats`)."""
    f = {k: v[rows] for k, v in study_features(study).items()}
    det = study["mp_detected"][rows].astype(bool)
    stats = error_stats(
        f["gt_uv"],
        f["gt_rel"],
        f["size"],
        f["inside"],
        study["mp_uv"][rows],
        study["mp_xyz"][rows],
        np.flatnonzero(det),
    )
    out = {
        "index": study["index"][rows].astype(np.int32) if "index" in study else rows.astype(np.int32),
        "rel": f["gt_rel"].astype(np.float16),
        "pelvis": study["joints"][rows][:, PELVIS].astype(np.float32),
        "K": study["K"][rows][:, [0, 1, 0, 1], [0, 1, 2, 2]].astype(np.float32),  # fx fy cx cy
        "image_size": study["image_size"][rows].astype(np.float32),
        "rotation": study["rotation"][rows].astype(np.float16),
        "person_box": study["person_box"][rows].astype(np.float32),
        "occluder": study["occluder"][rows].astype(np.float32),
        "height_m": study["height_m"][rows].astype(np.float16),
        "mp_detected": det,
        "mp_e2": stats["e2"],
        "mp_e3": stats["e3"],
        "mp_swap_rate": stats["swap_rate"],
        "mp_detect_rate": np.array(det.mean()),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return path


def fit_study(
    study: Dict[str, np.ndarray],
    out: "str | Path",
    train_fraction: float = 0.8,
    extract: "str | Path | None" = None,
    extract_num: int = 1500,
) -> Dict:
    """``hmdiff data fit-prior``: fit on the first ``train_fraction`` of a prior study's samples
    (by sample index; :func:`~hmdiff_ros.data.study_reader.load_prior_study`), write the parameters
    to ``out`` and, if asked, an ``extract`` of the first ``extract_num`` held-out samples
    (:func:`write_extract`). Returns the fit's summary."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    order = np.argsort(study["index"], kind="stable")
    study = {k: v[order] for k, v in study.items() if k in STUDY_KEYS}
    n = len(order)
    cut = int(round(train_fraction * n))
    save_prior_model(fit_prior_model(study, np.arange(cut)), out)
    summary = load_summary(out)
    summary.update({"train_samples": cut, "held_out_samples": n - cut, "out": str(out)})
    if extract is not None:
        rows = np.arange(cut, min(n, cut + extract_num))
        summary["extract"] = str(write_extract(study, rows, extract))
    return summary


def load_summary(path: "str | Path") -> Dict:
    with np.load(path, allow_pickle=False) as data:
        return FittedPrior({k: data[k] for k in data.files}).summary()
