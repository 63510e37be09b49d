"""``hmdiff eval``: accuracy of a checkpoint on a synthetic split written by ``hmdiff data make``.

Without ``--data`` it uses the fixed default test split (``DEFAULT_TEST_SPLIT``: 512 samples,
seed 20000), generated once and cached in ``~/.cache/hmdiff_ros``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from hmdiff_ros.data.shapes import cache_dir
from hmdiff_ros.data.store import META_FILE, SplitReader
from hmdiff_ros.model.checkpoint import load_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.train import evaluate_batches

DEFAULT_TEST_SPLIT = {"split": "test", "num": 512, "seed": 20_000}


def default_test_split() -> Path:
    """The fixed synthetic test split, made on first use."""
    folder = cache_dir() / f"test_split_{DEFAULT_TEST_SPLIT['num']}_{DEFAULT_TEST_SPLIT['seed']}"
    if not (folder / META_FILE).is_file():
        from hmdiff_ros.data.engine import SyntheticEngine
        from hmdiff_ros.data.store import write_split

        write_split(SyntheticEngine(), folder, DEFAULT_TEST_SPLIT["num"], DEFAULT_TEST_SPLIT["seed"], "test", force=True)
    return folder


def evaluate(
    checkpoint: "str | Path | None" = None,
    data: "str | Path | None" = None,
    steps: int = 4,
    dat: str = "fast",
    hypotheses: int = 1,
    limit: int | None = None,
    dat_config: DATConfig | None = None,
    model=None,
) -> Dict:
    """``{"mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm", "num_samples"}`` (joints:
    our 25; vertices: the coarse mesh; root-relative, camera frame)."""
    if model is None:
        model, _ = load_checkpoint(checkpoint)
    reader = SplitReader(data if data is not None else default_test_split())
    cfg = dat_config if dat_config is not None else DATConfig(mode=dat)
    torch.manual_seed(0)
    return evaluate_batches(model, reader.batches(64, limit), steps=steps, dat=cfg, hypotheses=hypotheses)
