"""DAT, the Distribution Alignment Technique: steer the early reverse steps towards the prior.

Inside reverse step k, with x̂_0 the network's estimate of the clean points (metres after
de-normalisation) and U the prior's root-relative joints with visibilities w:

1. f(x̂_0): our estimate of the prior's joints, the mean of the joints regressed from the
   coarse vertices and the joint points themselves (so the alignment reaches both);
2. the gap ``D_k = sum_i w_i huber(|u_i - f(x̂_0)_i|) / sum_i w_i`` (robust to a wrong joint);
3. activation: the first step aligns (its gap is D_K, the reference); a later step k among
   the first ``max_fraction`` of the steps aligns while ``R_k = D_k / D_K > tau``. ``tau``
   therefore acts at 2 steps when ``max_fraction`` reaches the second step (1.0); at the
   default 0.5 only the first step aligns and ``tau`` changes nothing (before, the first
   step's gap was compared with itself, so ``tau`` 1 switched even the first step off);
4. the alignment gradient g = ∇_{h_k} D_k regularises the score:
   ``ε' = ε + c g``, with c chosen so that, to first order, x̂_0 moves to cut the gap by a
   fraction ``scale`` (λ); then x̂_0 is recomputed from ε' and the DDIM step proceeds.

Rigid start (``rigid``, on by default; our addition, measured in the ablation): in an
aligned step, before the gradient step, x̂_0 is first rotated about the root by the rotation
that best maps f(x̂_0) onto U (visibility-weighted Kabsch): the closed-form minimiser of the
gap over global orientations. A few first-order steps cannot undo a wrong global orientation
(the proxy's front/back and depth ambiguities), a rotation can. The rotation is the polar
factor of the weighted cross-covariance, computed by Newton iterations with an explicit 3x3
inverse (matrix products only: exportable like ``fast``).

Gradient modes: ``fast`` holds the noise estimate ε̂ constant (the paper's ε view), so
``g = ∇_{x̂_0} D / sqrt(ᾱ_k)`` in closed form (no autograd: exportable to ONNX/TensorRT);
``full`` differentiates through the network g(h_k, k, f_I) with autograd (PyTorch only).

The sampling loop calls :meth:`DAT.guide` between the network and ``scheduler.step``: it
measures the gap, decides the activation, applies the rigid start (:meth:`DAT.rigid_start`)
and the gradient step with its score rewrite (:meth:`DAT.align`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hmdiff_ros import defaults

if TYPE_CHECKING:
    from hmdiff_ros.model.scheduler import DDIMScheduler

MIN_COSINE = 0.2  # bound on the alignment step when its direction barely reduces the gap


@dataclass(frozen=True)
class DATConfig:
    mode: str = defaults.DAT_MODE  # "off", "fast" (closed form) or "full" (autograd through the denoiser)
    tau: float = defaults.DAT_TAU  # align while the relative gap R_k = D_k / D_K exceeds tau
    max_fraction: float = defaults.DAT_MAX_FRACTION  # ... and only in this first fraction of the steps (at least one)
    scale: float = defaults.DAT_LAMBDA  # λ: fraction of the gap one aligned step removes (first order)
    huber_m: float = 0.05  # Huber threshold on the joint distance, metres
    min_visibility: float = 0.5  # prior joints below contribute nothing
    rigid: bool = True  # rotate x̂_0 onto the prior (weighted Kabsch) before the gradient step

    def __post_init__(self) -> None:
        if self.mode not in defaults.DAT_MODES:
            raise ValueError(f"dat mode must be one of {defaults.DAT_MODES}, got {self.mode!r}")
        why = defaults.range_error("dat tau", self.tau, defaults.DAT_TAU_RANGE) or defaults.range_error(
            "dat scale (lambda)", self.scale, defaults.DAT_LAMBDA_RANGE
        )
        if why:
            raise ValueError(why)
        if not 0.0 <= self.max_fraction <= 1.0:
            raise ValueError(f"dat max_fraction must be in [0, 1], got {self.max_fraction}")
        if self.huber_m <= 0:
            raise ValueError(f"dat huber_m must be > 0, got {self.huber_m}")


@dataclass
class DATOutput:
    pred_original_sample: torch.Tensor  # (B, P, 3) x̂_0 after the alignment, normalised units
    pred_epsilon: torch.Tensor  # (B, P, 3) ε̂ rewritten with it: the pair still gives the same h_k
    gap: torch.Tensor  # (B,) D_k of the network's own x̂_0, metres²


_NEXT, _AFTER = [1, 2, 0], [2, 0, 1]  # the cyclic shifts of (x, y, z)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product over the last axis, written out with the cyclic shifts of the components
    (exports to any ONNX opset as a few Gather/Mul/Sub nodes)."""
    return a[..., _NEXT] * b[..., _AFTER] - a[..., _AFTER] * b[..., _NEXT]


def _inverse3(m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(..., 3, 3)`` matrices by the adjugate (plain products: exportable)."""
    c0 = _cross(m[..., 1, :], m[..., 2, :])
    c1 = _cross(m[..., 2, :], m[..., 0, :])
    c2 = _cross(m[..., 0, :], m[..., 1, :])
    det = (m[..., 0, :] * c0).sum(-1)
    adj = torch.stack([c0, c1, c2], dim=-1)  # columns: the cofactor rows, i.e. the adjugate
    return adj / det[..., None, None], det


def polar_rotation(h: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """Rotation ``R`` ``(..., 3, 3)`` maximising ``trace(R h)`` for cross-covariances ``h``
    (``h = sum_i w_i a_i b_i^T`` gives the R with ``R a_i ≈ b_i``): the orthogonal polar
    factor of ``h^T`` by scaled Newton iterations. Where ``det(h) <= 0`` (a reflection would
    fit better, or the points are degenerate) the identity is returned."""
    x = h.transpose(-1, -2)
    scale = x.flatten(-2).norm(dim=-1).clamp(min=1e-12)[..., None, None]
    x = x / scale
    _, det0 = _inverse3(x)
    ok = det0 > 1e-9
    eye = torch.eye(3, dtype=h.dtype, device=h.device).expand_as(x)
    x = torch.where(ok[..., None, None], x, eye)
    for _ in range(iterations):
        inv, det = _inverse3(x)
        g = det.abs().clamp(min=1e-30) ** (-1.0 / 3.0)  # determinant scaling: fast, stable convergence
        x = 0.5 * (g[..., None, None] * x + inv.transpose(-1, -2) / g[..., None, None])
    return torch.where(ok[..., None, None], x, eye)


def huber(dist: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.where(dist <= delta, 0.5 * dist**2, delta * (dist - 0.5 * delta))


class DAT:
    """Gap and alignment for a fixed point layout.

    ``joint_map`` ``(Q, P)``: f as a matrix from the P points (normalised units) to the Q prior
    joints; ``data_scale``: metres per normalised unit.
    """

    def __init__(self, cfg: DATConfig, joint_map: torch.Tensor, data_scale: float) -> None:
        self.cfg = cfg
        self.joint_map = joint_map
        self.data_scale = data_scale

    def active_steps(self, num_steps: int) -> int:
        return max(1, int(round(self.cfg.max_fraction * num_steps))) if self.cfg.mode != "off" else 0

    def differentiates(self, step_index: int, num_steps: int) -> bool:
        """Whether step ``step_index`` (0-based) of ``num_steps`` takes ∇_{h_k} D through the
        network (``full``): the loop then runs the denoiser with autograd on. At one step
        ``full`` runs as ``fast``: its network-Jacobian direction needs a later step to absorb it."""
        return self.cfg.mode == "full" and num_steps > 1 and step_index < self.active_steps(num_steps)

    def is_active(self, gap: torch.Tensor, first_gap: torch.Tensor, step_index: int, num_steps: int) -> torch.Tensor:
        """Which samples ``(B,)`` align at this step (step 3 of the notation). The first step
        always aligns: its gap is D_K, the reference. A later step among the first
        ``max_fraction`` of them aligns where ``R_k = D_k / D_K > tau``: where the network's
        own x̂_0 has kept more than ``tau`` of the first step's gap to U (it does not follow the
        alignment of the steps before); ``tau`` 1 aligns a later step only where the gap grew."""
        if step_index >= self.active_steps(num_steps):
            return torch.zeros_like(gap, dtype=torch.bool)
        if step_index == 0:
            return torch.ones_like(gap, dtype=torch.bool)
        return gap / first_gap.clamp(min=1e-12) > self.cfg.tau

    def weights(self, visibility: torch.Tensor) -> torch.Tensor:
        return (visibility >= self.cfg.min_visibility).to(visibility.dtype) * visibility  # (B, Q)

    def gap_and_grad(self, x0: torch.Tensor, prior: torch.Tensor, weights: torch.Tensor):
        """Gap ``D`` ``(B,)`` (metres², Huber) and its gradient w.r.t. ``x0`` ``(B, P, 3)``,
        in closed form."""
        m = self.joint_map.to(x0)
        f = torch.matmul(m, x0) * self.data_scale  # (B, Q, 3) metres (matmul: a MatMul in ONNX, not an Einsum)
        r = f - prior  # (B, Q, 3)
        dist = r.norm(dim=-1).clamp(min=1e-9)  # (B, Q)
        norm = weights.sum(1).clamp(min=1e-6)  # (B,)
        gap = (weights * huber(dist, self.cfg.huber_m)).sum(1) / norm
        # d huber / d r = r (inside) or delta r / |r| (outside)
        dh = torch.where(dist <= self.cfg.huber_m, torch.ones_like(dist), self.cfg.huber_m / dist)
        grad_f = (weights * dh)[..., None] * r / norm[:, None, None]  # (B, Q, 3)
        grad_x0 = torch.matmul(m.t(), grad_f) * self.data_scale  # (B, P, 3)
        return gap, grad_x0

    def rotation(self, x0: torch.Tensor, prior: torch.Tensor, weights: torch.Tensor, active: torch.Tensor):
        """Rotations ``(B, 3, 3)`` about the origin (the root) that best map f(x̂_0) onto the
        prior (weighted Kabsch); the identity for samples not ``active``."""
        f = torch.matmul(self.joint_map.to(x0), x0)  # (B, Q, 3), normalised units
        h = torch.matmul((weights[..., None] * f).transpose(1, 2), prior / self.data_scale)  # (B, 3, 3)
        rot = polar_rotation(h)
        eye = torch.eye(3, dtype=x0.dtype, device=x0.device).expand_as(rot)
        return torch.where(active[:, None, None], rot, eye)

    def rigid_start(self, x0: torch.Tensor, eps: torch.Tensor, rot: torch.Tensor, alpha_prod: float):
        """The rigid start: x̂_0 ``(B, P, 3)`` turned about the root by ``rot`` ``(B, 3, 3)``
        (:meth:`rotation`), with ε̂ rewritten for it (:meth:`rewrite_score`). Returns (x̂_0', ε')."""
        turned = x0 @ rot.transpose(-1, -2)  # (B, P, 3)
        return turned, self.rewrite_score(eps, turned - x0, alpha_prod)

    @staticmethod
    def rewrite_score(eps: torch.Tensor, shift: torch.Tensor, alpha_prod: float) -> torch.Tensor:
        """ε' for x̂_0 moved by ``shift`` at the same h_k: ``ε' = ε - sqrt(ᾱ_k) / sqrt(1 - ᾱ_k) shift``,
        so that ``sqrt(ᾱ_k) x̂_0' + sqrt(1 - ᾱ_k) ε' = h_k`` still holds (the DDIM step then starts
        from the aligned x̂_0 without leaving the noise level of h_k)."""
        a = float(alpha_prod)  # a Python float: nothing crosses to the samples' device
        return eps - (math.sqrt(a) / math.sqrt(1 - a)) * shift

    def network_gradient(
        self,
        sample: torch.Tensor,
        x0: torch.Tensor,
        prior: torch.Tensor,
        weights: torch.Tensor,
        rot: torch.Tensor | None,
    ) -> torch.Tensor:
        """∇_{h_k} D(R x̂_0(h_k)) ``(B, P, 3)`` by autograd through the network (``full``), R
        held fixed: ``x0`` must carry the graph of the denoiser call on ``sample`` = h_k."""
        with torch.enable_grad():
            turned = x0 if rot is None else x0 @ rot.transpose(-1, -2)
            return torch.autograd.grad(self.gap_and_grad(turned, prior, weights)[0].sum(), sample)[0]

    def guide(
        self,
        scheduler: "DDIMScheduler",
        step_index: int,
        t: int,
        sample: torch.Tensor,
        x0: torch.Tensor,
        eps: torch.Tensor,
        prior: torch.Tensor,
        weights: torch.Tensor,
        first_gap: torch.Tensor | None = None,
    ) -> DATOutput:
        """One DAT step on the network's (x̂_0, ε̂) at ``sample`` = h_k, step ``t`` (the
        ``step_index``-th of ``scheduler.timesteps``), before ``scheduler.step``.

        ``prior`` ``(B, Q, 3)`` metres and ``weights`` ``(B, Q)`` (:meth:`weights`): U;
        ``first_gap`` ``(B,)``: D_K, the gap at the first step (``None`` at the first step).
        Where :meth:`differentiates`, ``sample`` requires grad and ``x0`` carries the graph of
        the network call.
        """
        num_steps = scheduler.num_inference_steps
        # 1-2. the gap D_k of the network's own estimate
        gap, _ = self.gap_and_grad(x0.detach(), prior, weights)  # (B,)
        if step_index >= self.active_steps(num_steps):  # past the aligned steps: nothing to edit
            return DATOutput(pred_original_sample=x0.detach(), pred_epsilon=eps.detach(), gap=gap)
        # 3. activation
        active = self.is_active(gap, gap if first_gap is None else first_gap, step_index, num_steps)
        rot = self.rotation(x0.detach(), prior, weights, active) if self.cfg.rigid else None
        grad_h = None
        if self.differentiates(step_index, num_steps):
            grad_h = self.network_gradient(sample, x0, prior, weights, rot)
        x0, eps, sample = x0.detach(), eps.detach(), sample.detach()
        alpha_prod = scheduler.alpha(t)
        if rot is not None:
            x0, eps = self.rigid_start(x0, eps, rot, alpha_prod)
        # 4. the alignment gradient regularises the score
        gap_now, grad_x0 = self.gap_and_grad(x0, prior, weights)
        x0, eps = self.align(x0, eps, sample, alpha_prod, gap_now, grad_x0, active, grad_h)
        return DATOutput(pred_original_sample=x0, pred_epsilon=eps, gap=gap)

    def align(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        sample: torch.Tensor,
        alpha_prod: float,
        gap: torch.Tensor,
        grad_x0: torch.Tensor,
        active: torch.Tensor,
        grad_h: torch.Tensor | None = None,
    ):
        """The gradient step and its score rewrite: returns (x̂_0', ε') for the DDIM step.

        ``grad_h``: ∇_{h_k} D from autograd (``full``); ``None`` uses the closed form (``fast``).
        ``active`` ``(B,)``: which samples align at this step.
        """
        g = grad_x0 / math.sqrt(float(alpha_prod)) if grad_h is None else grad_h  # (B, P, 3) ∇_{h_k} D
        # ε' = ε + c g moves x̂_0 by -c sqrt(1 - ᾱ)/sqrt(ᾱ) g; c is set so that, to first order,
        # the gap falls by λ D: the x̂_0 update is -λ D g / <∇_{x̂_0} D, g> (Polyak step).
        along = (grad_x0 * g).flatten(1).sum(1)  # (B,)
        # A direction nearly orthogonal to ∇_{x̂_0} D would call for a huge step: bound it by
        # treating the cosine as at least MIN_COSINE (|Δx̂_0| <= λ D / (MIN_COSINE |∇_{x̂_0} D|)).
        floor = MIN_COSINE * g.flatten(1).norm(dim=1) * grad_x0.flatten(1).norm(dim=1)
        step = torch.where(
            along > 1e-12, self.cfg.scale * gap / torch.maximum(along, floor).clamp(min=1e-12), torch.zeros_like(gap)
        )
        delta = -(step * active.to(step))[:, None, None] * g  # (B, P, 3) change of x̂_0
        return x0 + delta, self.rewrite_score(eps, delta, alpha_prod)
