"""Streams with overlapped stages: the prior of frame t+1 runs while the model finishes frame t.

A frame is :meth:`~hmdiff_ros.pipeline.pipeline.Pipeline.prepare` (the pose prior and the
model's inputs) then :meth:`~hmdiff_ros.pipeline.pipeline.Pipeline.finish` (the model and the
geometry). :func:`overlapped` prepares the next frame on one worker thread while the caller's
thread finishes the current one; MediaPipe's graph and PyTorch release the GIL, so the two
share the cores: the model gets half of them (PyTorch's threads) and the prior the rest.
On 2 CPU cores the demo photo streams at 30.3 FPS overlapped against 18.0 one frame at a time
(``hmdiff bench-pipeline``: its ``stream`` and ``frame`` rows); with PyTorch on both cores the
overlap gains nothing, the two stages then fight over them.
Frames are prepared in order on that one thread (MediaPipe's video mode needs it) and every
frame's result equals :meth:`Pipeline.run`'s on it. A frame whose preparation or model raises a
``ValueError`` (a bad frame) gives that error in place of its result; the stream goes on. If
the source of the frames raises, the frame in flight is finished and given first.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Tuple

import numpy as np
import torch

from hmdiff_ros.pipeline.pipeline import Pipeline


def overlapped(pipe: Pipeline, frames: Iterable[Tuple]) -> Iterator[Tuple[object, object, float]]:
    """``(tag, outcome, latency_s)`` for each ``(image, K, boxes, tag)`` of ``frames``, in
    order: ``outcome`` is the frame's :class:`FrameResult`, or the ``ValueError`` it raised;
    ``latency_s``: from the frame's arrival (taken from ``frames``) to its outcome. The prior
    of the next frame runs while the model runs on this one."""
    with model_threads(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="hmdiff-prior") as pool:
        pending, source = None, iter(frames)  # pending: (tag, arrival, future of prepare)
        while True:
            try:
                image, K, boxes, tag = next(source)
            except StopIteration:
                break
            except BaseException:  # the source failed (a corrupt file, Ctrl-C): the frame in flight first
                if pending is not None:
                    yield _finish(pipe, pending)
                raise
            arrived = time.perf_counter()
            job = (tag, arrived, pool.submit(pipe.prepare, image, K, boxes))
            if pending is not None:
                yield _finish(pipe, pending)
            pending = job
        if pending is not None:
            yield _finish(pipe, pending)


def model_thread_count() -> int:
    """The model's threads while the prior runs beside it: half of the cores, at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


@contextlib.contextmanager
def model_threads():
    """PyTorch (and ONNX Runtime, which follows it) on :func:`model_thread_count` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(model_thread_count())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finish(pipe: Pipeline, pending) -> Tuple[object, object, float]:
    tag, arrived, future = pending
    try:
        outcome = pipe.finish(future.result())
    except ValueError as exc:  # a bad frame: its error in place of its result
        outcome = exc
    return tag, outcome, time.perf_counter() - arrived


def stream_figures(pipe: Pipeline, image: np.ndarray, boxes=None, repeats: int = 20, warmup: int = 3) -> dict:
    """``{"fps", "p50_ms", "p90_ms", "p99_ms"}`` of ``image`` streamed ``repeats`` times with
    overlapped stages (latency: a frame's arrival to its result), after ``warmup`` frames
    streamed the same way (the model's first calls on fewer threads are not counted)."""
    for _ in overlapped(pipe, ((image, None, boxes, i) for i in range(warmup))):
        pass
    start, latency = time.perf_counter(), []
    for _, _, lat in overlapped(pipe, ((image, None, boxes, i) for i in range(repeats))):
        latency.append(lat)
    fps = repeats / (time.perf_counter() - start)
    ms = np.asarray(latency) * 1000.0
    return {"fps": round(fps, 1), **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)}}
