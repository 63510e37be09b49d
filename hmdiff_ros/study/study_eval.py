"""``hmdiff eval-study``: the model on what the real prior reported, in the prior study.

The prior study (:mod:`hmdiff_ros.study.prior_study`) ran MediaPipe on rendered held-out
bodies and kept its output beside the ground truth. Here the model is given MediaPipe's own
observation of each person -- its keypoints, visibilities, 3D landmarks U and mask, cropped
by the study's box as the data engine crops -- so that its joints can be set against U, the
yardstick it has to beat, on the same samples. This is the selection set between synthetic
validation data (a simulated prior) and real frames (``hmdiff eval-real``, the final check).

Samples: those MediaPipe detected among the study's held-out part, the samples after the
first ``fit_fraction`` by index (the part the fitted prior simulator,
``hmdiff data fit-prior``, was not fitted on). The held-out part is cut in two by index
(:data:`PARTS`): ``val``, its first half, is a selection set (every choice of a model or a
setting is made there); ``test``, its second half, is a test set no choice is made on. Metrics on the prior's 24 joints, as
``docs/prior_study.md`` measures the prior: MPJPE after aligning the mid-hip points, and
PA-MPJPE (similarity Procrustes), in mm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import torch

from hmdiff_ros import defaults
from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES
from hmdiff_ros.data.study_reader import HELD_OUT_FROM, load_prior_study, observed
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.metrics import pa_mpjpe_mm
from hmdiff_ros.observation import ProxyConfig, make_proxy

FIT_FRACTION = HELD_OUT_FROM  # 'hmdiff data fit-prior --train-fraction' default: the rest is held out
HIPS = [PRIOR_JOINT_NAMES.index("left_hip"), PRIOR_JOINT_NAMES.index("right_hip")]
PARTS = ("held-out", "val", "test")
# MediaPipe "nearly right" on a sample: PA-MPJPE at most this (on real frames its mean is 82-105 mm)
NEARLY_RIGHT_MM = 80.0  # the held-out part; its first half (selection); its second half (test)


def study_rows(study: Dict[str, np.ndarray], fit_fraction: float = FIT_FRACTION, part: str = "held-out") -> np.ndarray:
    """Indices into ``study`` of the samples of ``part`` (:data:`PARTS`) that MediaPipe
    detected, in sample order. Parts are cut by sample index (``index`` runs 0 .. num - 1; a
    study made with ``--held-out-only`` holds the held-out chunks only, and its last index
    still gives ``num``)."""
    if part not in PARTS:
        raise ValueError(f"study part must be one of {', '.join(PARTS)}, got {part!r}")
    index = np.asarray(study["index"])
    num = int(index.max()) + 1 if len(index) else 0
    start = int(round(fit_fraction * num))
    middle = start + (num - start) // 2
    lo, hi = {"held-out": (start, num), "val": (start, middle), "test": (middle, num)}[part]
    order = np.argsort(index, kind="stable")
    keep = order[(index[order] >= lo) & (index[order] < hi)]
    return keep[np.asarray(study["mp_detected"])[keep]]


def study_batch(study: Dict[str, np.ndarray], rows: np.ndarray, crop_size: int) -> Dict[str, np.ndarray]:
    """An engine-style batch of MediaPipe's observations of samples ``rows``: ``uv`` (crop
    pixels), ``vis``, ``prior_xyz`` (U), ``mask`` (its mask), ``valid``, ``joints_rel`` and
    ``proxy``."""
    b = observed(study, rows, crop_size)
    b["joints_rel"] = study["joints_rel"][rows].astype(np.float32)
    b["proxy"] = make_proxy(b["uv"], b["vis"], b["mask"], b["valid"], ProxyConfig(crop_size=crop_size))
    return b


def _errors(pred: np.ndarray, gt: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-sample MPJPE (mid-hip aligned) and PA-MPJPE, mm, of ``(N, 24, 3)`` prior-joint sets."""
    p = pred - pred[:, HIPS].mean(1, keepdims=True)
    g = gt - gt[:, HIPS].mean(1, keepdims=True)
    return {"mpjpe": np.linalg.norm(p - g, axis=-1).mean(1) * 1000.0, "pa": pa_mpjpe_mm(p, g)}


@torch.no_grad()
def evaluate_study(
    model,
    study: "str | Path | Dict[str, np.ndarray]",
    steps: int = defaults.STEPS,
    dat: DATConfig = DATConfig(),
    hypotheses: int = 1,
    lifter=None,
    limit: int | None = None,
    fit_fraction: float = FIT_FRACTION,
    batch_size: int = 64,
    part: str = "held-out",
    seed: int = 0,
    per_sample: bool = False,
) -> Dict:
    """``{"num_samples", "mpjpe_mm", "pa_mpjpe_mm", "prior_mpjpe_mm", "prior_pa_mpjpe_mm"}``
    (plus ``lifter_*`` with ``lifter``) on the detected samples of the study's ``part``
    (:data:`PARTS`; ``limit``: the first of them), sampled with ``seed``; see the module
    docstring. ``"strata"``: the same figures where MediaPipe is nearly right (its PA-MPJPE
    at most :data:`NEARLY_RIGHT_MM`) and where it is not; ``per_sample``: also
    ``"per_sample"``, each figure's per-sample errors."""
    if not isinstance(study, dict):
        study = load_prior_study(study, held_out_only=True)
    rows = study_rows(study, fit_fraction, part)[:limit]
    if len(rows) == 0:
        raise ValueError(f"the prior study has no {part} sample that MediaPipe detected")
    q = list(PRIOR_JOINT_INDICES)
    gen = torch.Generator().manual_seed(seed)
    errs: Dict[str, list] = {}
    for start in range(0, len(rows), batch_size):
        b = study_batch(study, rows[start : start + batch_size], model.cfg.encoder.input_size)
        out = model.sample(
            torch.as_tensor(b["proxy"]),
            torch.as_tensor(b["prior_xyz"]),
            torch.as_tensor(b["vis"]),
            steps=steps,
            dat=dat,
            hypotheses=hypotheses,
            generator=gen,
        )
        gt = b["joints_rel"][:, q].astype(np.float64)
        found = {"": out.points[:, model.num_coarse :][:, q].numpy(), "prior_": b["prior_xyz"]}
        if lifter is not None:
            found["lifter_"] = np.asarray(lifter.predict(b["uv"], b["vis"], b["prior_xyz"]))[:, q]
        for name, pred in found.items():
            for k, v in _errors(np.asarray(pred, np.float64), gt).items():
                errs.setdefault(f"{name}{'mpjpe_mm' if k == 'mpjpe' else 'pa_mpjpe_mm'}", []).append(v)
    per = {k: np.concatenate(v) for k, v in errs.items()}
    result = {"num_samples": int(len(rows)), **{k: round(float(v.mean()), 2) for k, v in per.items()}}
    good = per["prior_pa_mpjpe_mm"] <= NEARLY_RIGHT_MM
    result["strata"] = {
        name: {"num_samples": int(sel.sum()), **{k: round(float(v[sel].mean()), 2) for k, v in per.items()}}
        for name, sel in (("prior_nearly_right", good), ("prior_wrong", ~good))
        if sel.any()
    }
    if per_sample:
        result["per_sample"] = per
    return result
