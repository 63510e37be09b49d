"""The tiny HMDiff the model tests share (tests/test_model.py, test_dat.py, test_training.py):
its configuration, small enough for a CPU, and seeded inputs of the shapes ``HMDiff.sample``
takes. conftest.py's ``tiny`` fixture builds the model from ``TINY``."""

import torch

from hmdiff_ros.model.denoiser import DenoiserConfig
from hmdiff_ros.model.encoder import EncoderConfig
from hmdiff_ros.model.hmdiff import HMDiffConfig
from hmdiff_ros.model.scheduler import SchedulerConfig

TINY = HMDiffConfig(
    encoder=EncoderConfig(width=32, base_channels=8),
    denoiser=DenoiserConfig(width=32, heads=2, self_blocks=1, cross_blocks=1, vertex_groups=8),
    scheduler=SchedulerConfig(num_train_timesteps=100),
)


def inputs(b=2, seed=0):
    """(proxy (B, 26, 64, 64), prior joints (B, 24, 3), visibility (B, 24)), seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 26, 64, 64, generator=g), torch.randn(b, 24, 3, generator=g) * 0.3, torch.ones(b, 24)
