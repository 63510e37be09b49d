"""``hmdiff data bench``: how many training samples per second the engine makes here."""

from __future__ import annotations

import time
from typing import Dict

import torch

from hmdiff_ros.data.engine import SyntheticConfig, SyntheticDataset
from hmdiff_ros.data.shapes import load_or_build_shape_bank
from hmdiff_ros.observation import make_proxy


def bench(batch_size: int = 256, batches: int = 12, workers: int = 2, warmup: int = 2) -> Dict:
    """Steady-state throughput of the proxy representation at the training resolution, with
    ``workers`` data-loader processes (0: in this process) making samples and this process
    turning them into encoder inputs, as training does."""
    if batches < 1 or workers < 0 or warmup < 0:
        raise ValueError("batches must be >= 1, workers and warmup >= 0")
    cfg = SyntheticConfig()
    load_or_build_shape_bank(cfg.bank)  # build the cache once, before workers start
    dataset = SyntheticDataset(cfg, batch_size, seed=1234, num_batches=warmup * max(workers, 1) + batches)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    count, start = 0, None
    for i, batch in enumerate(loader):
        proxy = make_proxy(batch["uv"], batch["vis"], batch["mask"], batch["valid"], cfg.proxy)
        if i == warmup * max(workers, 1):
            start = time.perf_counter()
        elif start is not None:
            count += len(proxy)
    elapsed = time.perf_counter() - start
    # The batch that started the clock is not counted: the rate is over (batches - 1) batches.
    return {
        "samples_per_s": round(count / elapsed, 1),
        "batch_size": batch_size,
        "workers": workers,
        "crop_size": cfg.proxy.crop_size,
        "channels": int(proxy.shape[1]),
        "torch_threads": torch.get_num_threads(),
    }
