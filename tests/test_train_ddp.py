"""Several training processes (torchrun / DistributedDataParallel): who takes which batch,
what torchrun's variables must hold, and a real two-process run on the CPU (Gloo)."""

from __future__ import annotations

import itertools
import json
import math
import socket

import pytest
import torch

from hmdiff_ros.data.engine import stream_indices
from hmdiff_ros.model.denoiser import DenoiserConfig
from hmdiff_ros.model.distributed import Ranks, launch_ranks
from hmdiff_ros.model.encoder import EncoderConfig
from hmdiff_ros.model.hmdiff import HMDiffConfig
from hmdiff_ros.model.scheduler import SchedulerConfig

TINY = HMDiffConfig(
    encoder=EncoderConfig(width=32, base_channels=8),
    denoiser=DenoiserConfig(width=32, heads=2, self_blocks=1, cross_blocks=1, vertex_groups=8),
    scheduler=SchedulerConfig(num_train_timesteps=100),
)


def _take(skip, rank, world, workers, steps):
    """The batches process ``rank`` trains on in ``steps`` steps (the loader takes its workers in turn)."""
    streams = [stream_indices(skip, rank, world, w, workers) for w in range(workers)]
    return [next(streams[s % workers]) for s in range(steps)]


def test_processes_take_disjoint_batches_and_one_process_keeps_the_old_stream():
    assert _take(0, 0, 1, 3, 7) == list(range(7))  # one process: batches 0, 1, 2, ... as before
    assert _take(5, 0, 1, 2, 3) == [5, 6, 7]  # resumed after 5 steps
    for world, workers in itertools.product((2, 3), (1, 2)):
        taken = [_take(4, r, world, workers, 6) for r in range(world)]
        every = sorted(i for t in taken for i in t)
        assert every == list(range(4 * world, 10 * world))  # all of them, each once, none of the skipped
        for step in range(6):  # at each step the processes take consecutive batches
            assert sorted(t[step] for t in taken) == list(range((4 + step) * world, (5 + step) * world))


def test_launch_ranks_reads_torchrun_variables_and_names_bad_ones():
    assert launch_ranks({}) == Ranks(0, 0, 1)
    assert launch_ranks({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}) == Ranks(1, 1, 4)
    assert launch_ranks({"RANK": "0", "WORLD_SIZE": "1"}) == Ranks()
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        launch_ranks({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="RANK 4, LOCAL_RANK 0, WORLD_SIZE 4"):
        launch_ranks({"RANK": "4", "WORLD_SIZE": "4"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, results) -> None:
    import os

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import TrainConfig

    cfg = TrainConfig(out=out, steps=2, batch_size=2, workers=0, val_every=2, val_samples=4, model=TINY, device="cpu")
    results[rank] = train(cfg, progress=False)


def test_two_processes_train_one_model_with_gloo(tmp_path, engine):
    from hmdiff_ros.model.checkpoint import load_checkpoint

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch has no torch.distributed with Gloo")
    out = tmp_path / "run"
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(
            _worker, args=(2, _free_port(), str(out), results), nprocs=2, join=True, start_method="spawn"
        )
        results = dict(results)
    assert results[0] == results[1]  # process 0's metrics, shared with the other
    assert results[0]["step"] == 2 and math.isfinite(results[0]["loss"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2]  # one writer
    model, extra = load_checkpoint(out)
    assert extra["world_size"] == 2 and extra["step"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
