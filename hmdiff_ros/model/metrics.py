"""Accuracy metrics in millimetres: MPJPE, PA-MPJPE, MPVPE, PA-MPVPE."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-align ``pred`` to ``gt`` (both ``(B, N, 3)``): the optimal rotation, scale and
    translation (Umeyama), as in PA-MPJPE."""
    mu_p, mu_g = pred.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    p, g = pred - mu_p, gt - mu_g
    cov = np.einsum("bni,bnj->bij", g, p)  # (B, 3, 3)
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    s[:, 2] *= d
    u[:, :, 2] *= d[:, None]
    rot = u @ vt  # (B, 3, 3)
    scale = s.sum(1) / (p**2).sum((1, 2)).clip(min=1e-12)
    return scale[:, None, None] * np.einsum("bij,bnj->bni", rot, p) + mu_g


def mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-sample mean point error (mm) of root-aligned ``(B, N, 3)`` metre arrays."""
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) * 1000.0


def centred_mpjpe_mm(pred: np.ndarray, gt: np.ndarray, centre: Sequence[int]) -> np.ndarray:
    """Per-sample mean point error (mm) of ``(B, N, 3)`` metre arrays after moving the mean of
    each one's points ``centre`` (indices into ``N``, e.g. the two hips) to the origin."""
    c = list(centre)
    return mpjpe_mm(pred - pred[:, c].mean(1, keepdims=True), gt - gt[:, c].mean(1, keepdims=True))


def pa_mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-sample mean point error (mm) after Procrustes alignment."""
    return mpjpe_mm(procrustes_align(pred, gt), gt)
