"""``hmdiff bench``: per-stage latency of the model (encoder, sampling with DAT) per backend.

Prints a list of ``{"backend", "stage", "p50_ms", "p90_ms", "p99_ms"}`` rows, with a
``model`` stage (encoder + sampling + DAT) for every backend. Inputs are a real synthetic
sample (batch = people x 1 hypothesis), timed after warm-up.
"""

from __future__ import annotations

import time
from typing import Dict, List, Sequence

import numpy as np
import torch

from hmdiff_ros.model.checkpoint import load_checkpoint
from hmdiff_ros.model.dat import DATConfig

BACKENDS = ("torch",)


def _percentiles(times: List[float]) -> Dict[str, float]:
    ms = np.asarray(times) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)}


def bench(
    backends: Sequence[str] = ("torch",),
    steps: int = 4,
    people: int = 1,
    dat: str = "fast",
    repeats: int = 50,
    warmup: int = 5,
    checkpoint: str | None = None,
) -> List[Dict]:
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; available: {list(BACKENDS)}")
    if people < 1 or steps < 1 or repeats < 1:
        raise ValueError("people, steps and repeats must be >= 1")
    model, _ = load_checkpoint(checkpoint)
    g = torch.Generator().manual_seed(0)
    proxy = torch.rand(
        people, model.cfg.encoder.in_channels, model.cfg.encoder.input_size, model.cfg.encoder.input_size, generator=g
    )
    prior = torch.randn(people, 24, 3, generator=g) * 0.3
    vis = torch.ones(people, 24)
    rows = []
    for backend in backends:
        enc, total = [], []
        with torch.no_grad():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model.encoder(proxy)
                t1 = time.perf_counter()
                model.sample(proxy, prior, vis, steps=steps, dat=DATConfig(mode=dat), generator=g)
                t2 = time.perf_counter()
                if i >= warmup:
                    enc.append(t1 - t0)
                    total.append(t2 - t1)  # sample() runs the encoder too: the whole model
        rows.append({"backend": backend, "stage": "encoder", **_percentiles(enc)})
        rows.append({"backend": backend, "stage": "model", **_percentiles(total)})
    return rows
