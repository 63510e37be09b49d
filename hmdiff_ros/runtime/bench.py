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


PIPELINE_STAGES = ("prior", "proxy", "encoder", "sampling", "dat", "geometry", "total")


def bench_pipeline(pipe, image: np.ndarray, repeats: int = 20, warmup: int = 3) -> Dict:
    """Per-stage latency of the whole frame pipeline on one image, and end-to-end FPS.

    ``prior`` (pose prior), ``proxy`` (crop observation + proxy input), ``encoder``,
    ``sampling`` (the DDIM loop without DAT), ``dat`` (what DAT adds to it), ``geometry``
    (camera translation, full mesh) and ``total`` (the pipeline call): p50/p90/p99 in ms.
    The model stages are re-timed in isolation on the inputs the pipeline built.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: Dict[str, List[float]] = {k: [] for k in PIPELINE_STAGES}
    model, cfg = pipe.model, pipe.cfg
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        people = pipe(image)
        total = time.perf_counter() - t0
        if not people:
            raise ValueError("no person found in the benchmark image")
        proxy, prior, vis = (torch.as_tensor(x) for x in pipe._last_inputs)
        with torch.no_grad():
            t0 = time.perf_counter()
            model.encoder(proxy.repeat_interleave(cfg.hypotheses, 0))
            t1 = time.perf_counter()
            model.sample(proxy, prior, vis, steps=cfg.steps, dat=DATConfig(mode="off"), hypotheses=cfg.hypotheses)
            t2 = time.perf_counter()
            model.sample(proxy, prior, vis, steps=cfg.steps, dat=cfg.dat, hypotheses=cfg.hypotheses)
            t3 = time.perf_counter()
        if i < warmup:
            continue
        for k in ("prior", "proxy", "geometry"):
            times[k].append(pipe.timings[k])
        times["encoder"].append(t1 - t0)
        times["sampling"].append(max(0.0, (t2 - t1) - (t1 - t0)))
        times["dat"].append(max(0.0, (t3 - t2) - (t2 - t1)))
        times["total"].append(total)
    stages = [{"stage": k, **_percentiles(v)} for k, v in times.items()]
    fps = 1000.0 / float(np.median(np.asarray(times["total"]) * 1000.0))
    return {
        "stages": stages, "fps": round(fps, 1), "people": len(people), "steps": cfg.steps,
        "dat": cfg.dat.mode, "hypotheses": cfg.hypotheses, "threads": torch.get_num_threads(),
    }  # fmt: skip
