"""The losses of ``hmdiff train``: the diffusion target (ε, x_0 or v, per the scheduler) as
MSE; plus, on x̂_0, an L1 on vertices and joints (metres) and an L1 on coarse-mesh edge
lengths. :class:`Objective` wraps them as one module for ``DistributedDataParallel``;
``focus_steps`` trains a share of each batch at the timesteps a few-step sampler visits
(:func:`focus_timesteps`)."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from hmdiff_ros.model.hmdiff import HMDiff
from hmdiff_ros.model.train_config import TrainConfig


def points_of(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Ground-truth points ``(B, P, 3)``: coarse vertices then joints, root-relative, metres."""
    return torch.cat([batch["coarse_rel"], batch["joints_rel"]], dim=1).float()


FOCUS_STEPS = (1, 2, 3, 4)  # the DDIM step counts whose timesteps ``focus_steps`` trains at


def focus_timesteps(sched) -> torch.Tensor:
    """Every timestep the DDIM sampler visits at :data:`FOCUS_STEPS` steps (trailing spacing)."""
    from hmdiff_ros.model.scheduler import DDIMScheduler

    probe = DDIMScheduler(sched.config)
    visited = set()
    for k in FOCUS_STEPS:
        probe.set_timesteps(k)
        visited.update(probe.timesteps.tolist())
    return torch.tensor(sorted(visited))


def losses(model: HMDiff, batch: Dict[str, torch.Tensor], proxy: torch.Tensor, cfg: TrainConfig, edges: torch.Tensor):
    """The loss of ``batch`` (``proxy``: its input images) and its terms ``diffusion``,
    ``x0_l1`` and ``edge_l1`` (``edges``: the coarse mesh's, :func:`coarse_edges`), weighted
    by ``cfg.loss_x0`` and ``cfg.loss_edge``; each sample at a random timestep."""
    sched = model.scheduler
    x0 = points_of(batch) / model.cfg.data_scale  # (B, P, 3) normalised
    noise = torch.randn_like(x0)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), device=x0.device)
    if cfg.focus_steps > 0:  # a share of the batch at the few-step samplers' own steps
        visited = focus_timesteps(sched).to(x0.device)
        pick = visited[torch.randint(0, len(visited), (len(x0),), device=x0.device)]
        t = torch.where(torch.rand(len(x0), device=x0.device) < cfg.focus_steps, pick, t)
    xt = sched.add_noise(x0, noise, t)
    prior_xyz, prior_vis = batch["prior_xyz"].float(), batch["vis"].float()
    out = model(xt, t, model.encode(proxy, prior_xyz, prior_vis), model.prior_offset(prior_xyz, prior_vis))
    pred = sched.to_x0_eps(out, t, xt)[0] * model.cfg.data_scale  # x̂_0, metres
    gt = x0 * model.cfg.data_scale
    terms = {"diffusion": torch.nn.functional.mse_loss(out, sched.target(x0, noise, t))}
    terms["x0_l1"] = (pred - gt).abs().mean()
    vp, vg = pred[:, : model.num_coarse], gt[:, : model.num_coarse]
    length = lambda v: (v[:, edges[:, 0]] - v[:, edges[:, 1]]).norm(dim=-1)  # noqa: E731
    terms["edge_l1"] = (length(vp) - length(vg)).abs().mean()
    total = terms["diffusion"] + cfg.loss_x0 * terms["x0_l1"] + cfg.loss_edge * terms["edge_l1"]
    return total, terms


class Objective(torch.nn.Module):
    """The training loss as a module, so that ``DistributedDataParallel`` sees every use of the
    weights (the encoder too) in one ``forward``."""

    def __init__(self, model: HMDiff, cfg: TrainConfig, edges: torch.Tensor) -> None:
        super().__init__()
        self.model, self.cfg, self.edges = model, cfg, edges

    def forward(self, batch: Dict[str, torch.Tensor], proxy: torch.Tensor):
        return losses(self.model, batch, proxy, self.cfg, self.edges)


def coarse_edges(faces: np.ndarray) -> np.ndarray:
    """The edges ``(E, 2)`` of mesh ``faces`` ``(F, 3)``, each once, lower index first."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)
