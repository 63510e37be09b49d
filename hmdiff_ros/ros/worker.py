"""The node's worker thread: the newest frame wins (ROS-free, tested without ROS).

A perception node slower than its camera must not queue frames. :meth:`NewestFrameWorker.put`
keeps only the newest waiting frame (the one it replaces is counted as dropped); a thread
hands it to ``process``, dropping (and counting) frames over the rate limit; a frame whose
processing raises is counted as failed with its reason, never a crash. The counts go to a
:class:`~hmdiff_ros.ros.health.FrameHealth`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from hmdiff_ros.ros.health import FrameHealth


class NewestFrameWorker:
    """``process(frame, received)`` on a thread for the newest frame given to :meth:`put`
    (``received``: when it was put, monotonic seconds); at most ``max_rate_hz()`` frames a
    second (0: no limit, read before each frame); ``on_failure(exc)`` after a frame raised."""

    def __init__(
        self,
        process: Callable[[object, float], None],
        stats: FrameHealth,
        max_rate_hz: Callable[[], float],
        on_failure: Callable[[Exception], None],
    ) -> None:
        self._process, self._stats, self._max_rate_hz, self._on_failure = process, stats, max_rate_hz, on_failure
        self._lock, self._wake, self._stop = threading.Lock(), threading.Event(), threading.Event()
        self._pending = None  # (frame, receive time)
        self._thread = threading.Thread(target=self._loop, name="hmdiff-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, frame) -> None:
        with self._lock:
            self._stats.count("received")
            if self._pending is not None:
                self._stats.count("dropped")  # newest frame wins
            self._pending = (frame, time.monotonic())
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the frame in progress (waiting at most ``timeout`` seconds for it)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            with self._lock:
                item, self._pending = self._pending, None
            if item is None:
                continue
            rate = self._max_rate_hz()
            if rate > 0 and time.monotonic() - last < 1.0 / rate:
                self._stats.count("dropped")
                continue
            last = time.monotonic()
            try:
                self._process(*item)
            except Exception as exc:  # a bad frame is dropped and counted, never a crash
                self._stats.fail(str(exc) or type(exc).__name__)
                self._on_failure(exc)
