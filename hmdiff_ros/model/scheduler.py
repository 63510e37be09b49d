"""DDPM training schedule and DDIM sampling, as an object with no network inside.

Notation (DDIM, Song et al. 2021; diffusers ``DDIMScheduler``):

- ``alpha_prod_t`` = ᾱ_t, the cumulative product of ``1 - beta`` up to step t;
- ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` (:meth:`add_noise`);
- the network predicts ``epsilon`` (ε), ``sample`` (x_0) or ``v_prediction``
  (v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0); :meth:`to_x0_eps` turns any of them into (x̂_0, ε̂);
- at a fixed x_t, x̂_0 and ε̂ determine each other (:meth:`x0_from_eps`, :meth:`eps_from_x0`);
- one DDIM step t -> t' (< t): ``x_t' = sqrt(ᾱ_t') x̂_0 + sqrt(1 - ᾱ_t' - σ²) ε̂ + σ z`` with
  ``σ = eta sqrt((1 - ᾱ_t') / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_t')`` (formula 16).

The same object serves training (``add_noise``, ``target``) and sampling
(``set_timesteps``, ``timesteps``, ``step``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

PredictionType = Literal["epsilon", "sample", "v_prediction"]
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
BETA_SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class SchedulerConfig:
    num_train_timesteps: int = 1000  # K_train
    beta_schedule: str = "cosine"  # "linear" (DDPM) or "cosine" (Nichol & Dhariwal)
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02
    prediction_type: str = "sample"  # what the network predicts: x_0 ("sample"); see docs/model_card.md

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError("betas must satisfy 0 < beta_start < beta_end < 1")


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # x_{t'}
    pred_original_sample: torch.Tensor  # x̂_0
    pred_epsilon: torch.Tensor  # ε̂


class DDIMScheduler:
    def __init__(self, config: SchedulerConfig = SchedulerConfig()) -> None:
        self.config = config
        k = config.num_train_timesteps
        if config.beta_schedule == "linear":
            betas = torch.linspace(config.beta_start, config.beta_end, k, dtype=torch.float64)
        else:  # cosine: ᾱ(t) = cos²((t/K + s) / (1 + s) · π/2), betas clipped at 0.999
            s = 0.008
            f = lambda t: math.cos((t / k + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
            betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(k)], dtype=torch.float64)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # ᾱ_t, (K,)
        self.final_alpha_cumprod = 1.0  # ᾱ beyond the last step
        self._alphas = self.alphas_cumprod.tolist()  # ᾱ_t as Python floats, for the sampling loop
        self._tables = {}  # device -> ᾱ table there (training reads it per sample)
        self.timesteps = torch.arange(k - 1, -1, -1)
        self.num_inference_steps = k

    def set_timesteps(self, num_inference_steps: int, start_timestep: int | None = None) -> None:
        """Evenly spaced DDIM timesteps from ``start_timestep`` (default K_train - 1) down;
        a lower start begins sampling from a partly noised input (e.g. around the prior)."""
        k = self.config.num_train_timesteps
        start = k - 1 if start_timestep is None else start_timestep
        if not 1 <= num_inference_steps <= start + 1:
            raise ValueError(f"num_inference_steps must be in [1, {start + 1}], got {num_inference_steps}")
        if not 0 <= start < k:
            raise ValueError(f"start_timestep must be in [0, {k - 1}], got {start_timestep}")
        # "trailing" spacing (as diffusers' timestep_spacing="trailing"): the first step is the
        # start itself, so even one step goes from the noisiest level to x_0.
        steps = np.round(np.arange(start + 1, 0, -(start + 1) / num_inference_steps)) - 1
        self.timesteps = torch.as_tensor(steps[:num_inference_steps].astype(np.int64))
        self.num_inference_steps = num_inference_steps

    def _alpha(self, t: "int | torch.Tensor", like: torch.Tensor) -> "float | torch.Tensor":
        """ᾱ_t for ``like``: a Python float for one step given as an int (a sampling loop: nothing
        crosses to ``like``'s device, so the loop can be held in a CUDA graph); for steps ``t``
        ``(B,)`` (training) or a 0-d tensor, a tensor in ``like``'s dtype shaped to broadcast over
        it, ``(B, 1, ...)``, from the table on ``like``'s device (copied there once)."""
        if isinstance(t, (int, np.integer)):
            return self.alpha(t)
        table = self._tables.get(like.device)
        if table is None:
            table = self._tables[like.device] = self.alphas_cumprod.to(like.device)
        return table[t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` for per-sample steps ``t`` ``(B,)``."""
        a = self._alpha(t, x0)
        return a**0.5 * x0 + (1 - a) ** 0.5 * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for ``prediction_type``."""
        if self.config.prediction_type == "epsilon":
            return noise
        if self.config.prediction_type == "sample":
            return x0
        a = self._alpha(t, x0)
        return a**0.5 * noise - (1 - a) ** 0.5 * x0

    def x0_from_eps(self, eps: torch.Tensor, t: "int | torch.Tensor", sample: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t): the clean sample that ``eps`` implies at
        ``sample`` = x_t."""
        a = self._alpha(t, sample)
        return (sample - (1 - a) ** 0.5 * eps) / a**0.5

    def eps_from_x0(self, x0: torch.Tensor, t: "int | torch.Tensor", sample: torch.Tensor) -> torch.Tensor:
        """ε̂ = (x_t - sqrt(ᾱ_t) x̂_0) / sqrt(1 - ᾱ_t): the noise that ``x0`` implies at ``sample`` = x_t
        (guidance that moves x̂_0 rewrites ε̂ with it, so that the pair stays on the same x_t)."""
        a = self._alpha(t, sample)
        return (sample - a**0.5 * x0) / (1 - a) ** 0.5

    def to_x0_eps(self, model_output: torch.Tensor, t: "int | torch.Tensor", sample: torch.Tensor):
        """(x̂_0, ε̂) from the network output at steps ``t`` (``(B,)``, or one step as an int:
        see :meth:`_alpha`)."""
        if self.config.prediction_type == "epsilon":
            return self.x0_from_eps(model_output, t, sample), model_output
        if self.config.prediction_type == "sample":
            return model_output, self.eps_from_x0(model_output, t, sample)
        a = self._alpha(t, sample)  # v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0
        x0 = a**0.5 * sample - (1 - a) ** 0.5 * model_output
        eps = a**0.5 * model_output + (1 - a) ** 0.5 * sample
        return x0, eps

    def alpha(self, t: int) -> float:
        """ᾱ_t as a Python float (the float64 table's value)."""
        return self._alphas[int(t)]

    def previous_timestep(self, t: int) -> int:
        """The step after ``t`` in the current schedule (-1 past the last)."""
        steps = self.timesteps.tolist()
        i = steps.index(int(t))
        return steps[i + 1] if i + 1 < len(steps) else -1

    def step(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """One DDIM step from ``sample`` = x_t given (x̂_0, ε̂) (see :meth:`to_x0_eps`; guidance
        such as DAT edits them before this call)."""
        # the coefficients are Python floats (float64 from the CPU table): no tensor crosses to the
        # samples' device, so a step on a GPU never waits for the host (and a CUDA graph can hold it)
        prev_t = self.previous_timestep(t)
        alpha_prod_t = self.alpha(t)
        alpha_prod_prev = self.alpha(prev_t) if prev_t >= 0 else self.final_alpha_cumprod
        # formula (16): σ_t
        variance = (1 - alpha_prod_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_prev)
        std = eta * math.sqrt(max(variance, 0.0))
        # formula (12): direction pointing to x_t, then x_{t-1}
        direction = math.sqrt(max(1 - alpha_prod_prev - std**2, 0.0)) * eps
        prev = math.sqrt(alpha_prod_prev) * x0 + direction
        if eta > 0:
            noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device=sample.device)
            prev = prev + std * noise
        return StepOutput(prev_sample=prev, pred_original_sample=x0, pred_epsilon=eps)
