"""The optimisation ``hmdiff train`` and ``hmdiff train-lifter`` share: the learning rate
(:func:`learning_rate`: linear warm-up, then cosine decay, by the clock too under a time
budget) and one step of the weights (:func:`optimiser_step`: AdamW with gradient clipping,
then the EMA of the weights, which is what a run saves and validates)."""

from __future__ import annotations

import math
from typing import Protocol

import torch


class Schedule(Protocol):
    """What :func:`learning_rate` reads of a training config (``TrainConfig``,
    ``LifterTrainConfig``)."""

    lr: float  # the peak rate
    warmup_steps: int
    steps: int  # the run's length: the decay ends there
    max_minutes: float  # a time budget, 0 for none


def learning_rate(cfg: Schedule, step: int, minutes: float = 0.0) -> float:
    """The rate at ``step`` (from 0): up from ``cfg.lr / cfg.warmup_steps`` to ``cfg.lr``
    over the warm-up, then a cosine decay to 0 at ``cfg.steps``. Under a time budget
    (``cfg.max_minutes`` > 0) the decay follows the clock (``minutes`` spent so far) when
    that is the tighter limit."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.max_minutes > 0:
        frac = max(frac, minutes / cfg.max_minutes)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def optimiser_step(
    loss: torch.Tensor,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    *,
    lr: float,
    grad_clip: float,
    ema_decay: float,
) -> None:
    """Step ``opt`` at rate ``lr`` down the gradient of ``loss`` (its norm clipped to
    ``grad_clip``), then move ``ema`` toward ``model``'s new weights; the EMA's decay grows
    from 0.1 at ``step`` 0 up to ``ema_decay``, so that early weights do not linger in it."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    with torch.no_grad():
        decay = min(ema_decay, (1 + step) / (10 + step))
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)
