"""The synthetic batches ``hmdiff train`` and ``hmdiff train-lifter`` read: the training
stream through a data loader (:func:`training_loader`; with the same seed and batch size,
both train on the very same batches) and the fixed validation batches
(:func:`validation_batches`), which never overlap a training stream."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from hmdiff_ros.data.engine import SyntheticConfig, SyntheticDataset, SyntheticEngine, batch_rng, quiet_worker

VAL_SEED = 10_000  # validation batches never overlap training streams (seed = the training config's seed)
VAL_BATCH = 256  # people per validation batch, at most


def training_loader(
    data_cfg: SyntheticConfig,
    batch_size: int,
    *,
    seed: int,
    workers: int,
    skip: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> torch.utils.data.DataLoader:
    """The batches of ``batch_size`` of the stream ``seed`` that process ``rank`` of
    ``world_size`` trains on, after its first ``skip`` (the steps a resumed run has taken);
    made by ``workers`` data-loader processes (0: in this one)."""
    stream = SyntheticDataset(data_cfg, batch_size, seed=seed, rank=rank, world_size=world_size)
    stream.skip = skip
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, worker_init_fn=quiet_worker if workers else None
    )


def validation_batches(engine: SyntheticEngine, samples: int, proxy: bool = True) -> List[Dict[str, np.ndarray]]:
    """``samples`` people of the validation stream in batches of at most :data:`VAL_BATCH`:
    the same for every run of the same data config; ``proxy``: with the input images."""
    return [
        engine.generate(batch_rng(VAL_SEED, i), min(VAL_BATCH, samples - VAL_BATCH * i), proxy=proxy)
        for i in range(-(-samples // VAL_BATCH))
    ]
