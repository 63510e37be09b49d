"""The node's worker threads: the newest frame wins (ROS-free, tested without ROS).

A perception node slower than its camera must not queue frames. :meth:`NewestFrameWorker.put`
keeps only the newest waiting frame (the one it replaces is counted as dropped); a thread
hands it to ``process``, dropping (and counting) frames over the rate limit; a frame whose
processing raises is counted as failed with its reason, never a crash. The counts go to a
:class:`~hmdiff_ros.ros.health.FrameHealth`.

With ``finish``, a frame is two stages on two threads, as a stream's overlapped stages
(:mod:`hmdiff_ros.pipeline.stream`): ``process`` (reading the image, the pose prior) on the
first, ``finish`` (the model, the outputs) on the second, so that the prior of frame t+1 runs
while the model finishes frame t. Between them is a one-frame slot where the newest frame wins
too: a prepared frame that a newer one replaces before ``finish`` takes it is counted as
dropped. Every frame put is counted once as received and ends once as processed (counted by
``finish``), dropped or failed.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from hmdiff_ros.ros.health import FrameHealth


class _Slot:
    """One waiting item, the newest: :meth:`put` returns whether it replaced one."""

    def __init__(self) -> None:
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._item = None

    def put(self, item) -> bool:
        with self._lock:
            replaced, self._item = self._item is not None, item
        self._wake.set()
        return replaced

    def take(self, timeout: float):
        """The waiting item (None after ``timeout`` seconds without one, or after :meth:`wake`)."""
        self._wake.wait(timeout=timeout)
        self._wake.clear()
        with self._lock:
            item, self._item = self._item, None
        return item

    def wake(self) -> None:
        self._wake.set()


class NewestFrameWorker:
    """``process(frame, received)`` on a thread for the newest frame given to :meth:`put`
    (``received``: when it was put, monotonic seconds); at most ``max_rate_hz()`` frames a
    second (0: no limit, read before each frame); ``on_failure(exc)`` after a frame raised.
    With ``finish``: ``finish(process(frame, received))`` on a second thread, the newest
    processed frame first (see the module's notes)."""

    def __init__(
        self,
        process: Callable[[object, float], object],
        stats: FrameHealth,
        max_rate_hz: Callable[[], float],
        on_failure: Callable[[Exception], None],
        finish: Callable[[object], None] | None = None,
    ) -> None:
        self._process, self._stats, self._max_rate_hz, self._on_failure = process, stats, max_rate_hz, on_failure
        self._finish = finish
        self._stop = threading.Event()
        self._frames, self._prepared = _Slot(), _Slot()  # put -> process -> (finish)
        self._threads = [threading.Thread(target=self._first, name="hmdiff-worker", daemon=True)]
        if finish is not None:
            self._threads.append(threading.Thread(target=self._second, name="hmdiff-model", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def put(self, frame) -> None:
        self._stats.count("received")
        if self._frames.put((frame, time.monotonic())):
            self._stats.count("dropped")  # newest frame wins

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the frames in progress (waiting at most ``timeout`` seconds for them)."""
        self._stop.set()
        self._frames.wake()
        self._prepared.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for slot in (self._frames, self._prepared):  # frames still waiting end as dropped: counts stay whole
            if slot.take(timeout=0.0) is not None:
                self._stats.count("dropped")

    def _run(self, stage: Callable, *args):
        """``stage(*args)``; a raised exception counted as the frame's failure (None returned)."""
        try:
            return stage(*args)
        except Exception as exc:  # a bad frame is dropped and counted, never a crash
            self._stats.fail(str(exc) or type(exc).__name__)
            self._on_failure(exc)
            return None

    def _first(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            item = self._frames.take(timeout=0.5)
            if item is None:
                continue
            rate = self._max_rate_hz()
            if rate > 0 and time.monotonic() - last < 1.0 / rate:
                self._stats.count("dropped")
                continue
            last = time.monotonic()
            state = self._run(self._process, *item)
            if self._finish is not None and state is not None:
                if self._prepared.put(state):
                    self._stats.count("dropped")  # a newer frame is ready before the model took this one

    def _second(self) -> None:
        while not self._stop.is_set():
            state = self._prepared.take(timeout=0.5)
            if state is None:
                continue
            if self._stop.is_set():
                self._stats.count("dropped")  # stopping: not finished
                return
            self._run(self._finish, state)
