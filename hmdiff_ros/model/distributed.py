"""Where a training run computes: the device of ``--device`` (:func:`training_device`), the
processes ``torchrun`` starts (:class:`Ranks`, :func:`launch_ranks`) and their process group
(:func:`process_group`: NCCL on ``cuda:LOCAL_RANK``, Gloo on the CPU)."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, NamedTuple

import torch
import torch.distributed as dist


def training_device(name: str) -> torch.device:
    """The device of ``--device`` ``name`` ("auto", "cpu" or "cuda"): "auto" is CUDA where
    there is a GPU; "cuda" without one is a ``ValueError`` saying why."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            why = "built without CUDA" if torch.version.cuda is None else "no GPU found"
            raise ValueError(f"--device cuda: CUDA is not available here (torch {torch.__version__}, {why})")
        return torch.device("cuda")
    return torch.device("cpu")


class Ranks(NamedTuple):
    """The processes of a run: this one's ``rank`` and ``local_rank`` (its GPU on this machine)
    of ``world_size`` in all."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def launch_ranks(environ=None) -> Ranks:
    """The ``Ranks`` that ``torchrun`` gives this process in ``RANK``, ``LOCAL_RANK`` and
    ``WORLD_SIZE`` (``environ``: default ``os.environ``); one process when they are unset."""
    env = os.environ if environ is None else environ
    values = []
    for name, default in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        text = str(env.get(name, "")).strip()
        try:
            values.append(int(text) if text else default)
        except ValueError:
            raise ValueError(f"{name} must be an integer (torchrun sets it), got {text!r}") from None
    ranks = Ranks(*values)
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size or ranks.local_rank < 0:
        raise ValueError(
            f"RANK {ranks.rank}, LOCAL_RANK {ranks.local_rank}, WORLD_SIZE {ranks.world_size}: "
            "expected WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
        )
    return ranks if ranks.world_size > 1 else Ranks()


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[torch.device]:
    """The process group of ``ranks`` (several processes) for the block, which gets the
    device of this process: on CUDA, GPU ``LOCAL_RANK`` of this machine (made the current
    one), else ``device``."""
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE is {ranks.world_size}, but this torch is built without torch.distributed")
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {ranks.local_rank}: this machine has {torch.cuda.device_count()} GPUs; "
                "start at most that many processes per machine"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world_size)
    try:
        yield device
    finally:
        dist.destroy_process_group()
