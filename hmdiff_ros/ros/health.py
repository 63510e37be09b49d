"""The node's frame accounting and health, ROS-free (tested without ROS).

Every image is counted once as received, and ends as processed, dropped (a newer frame
replaced it, or the rate limit) or failed (with a reason). The health level follows the
outcomes of the recent frames, so a node whose every frame fails after a good start shows
ERROR, not OK. :meth:`FrameHealth.values` are the ``/diagnostics`` key/value pairs.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, deque
from typing import List, Tuple

import numpy as np

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
LEVEL_NAMES = ("OK", "WARN", "ERROR")  # ... by their DiagnosticStatus constant names
WINDOW = 20  # recent frames whose outcomes set the level
WARN_FAILURES = 0.1  # fraction of recent frames failed: WARN at or above this
ERROR_FAILURES = 0.5  # ... ERROR at or above this
TIMING_WINDOW = 100  # processed frames whose latencies give the medians
RATE_WINDOW_S = 5.0  # the rate counts the frames published this recently (0 when they stop)


def reason_key(message: str) -> str:
    """A failure's kind: its message up to the first ':' or ';', numbers masked, so frames that
    fail alike are counted together (``no transform ... at the image stamp N.N``)."""
    head = re.split(r"[:;]", message, maxsplit=1)[0]
    return re.sub(r"\b\d+(\.\d+)?\b", "N", head).strip()[:80] or "error"


class FrameHealth:
    """Counters and the recent outcomes of a stream of frames (thread-safe)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "failed": 0, "camera_info_unused": 0}
        self.reasons: Counter = Counter()
        self.last_error = ""
        self.recent: deque = deque(maxlen=window)  # True: processed, False: failed
        self.times: deque = deque(maxlen=TIMING_WINDOW)  # when processed frames were published (monotonic s)
        # (receive to publish, processing, image stamp to publish) of each, seconds
        self.latency: deque = deque(maxlen=TIMING_WINDOW)

    def __getitem__(self, key: str):
        return self.last_error if key == "last_error" else self.counts[key]

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1
            if key == "processed":
                self.recent.append(True)

    def fail(self, message: str) -> None:
        with self._lock:
            self.counts["failed"] += 1
            self.reasons[reason_key(message)] += 1
            self.last_error = message[:200]
            self.recent.append(False)

    def level(self) -> tuple:
        """``(level, message)`` for the diagnostics summary."""
        c, recent = self.counts, list(self.recent)
        failed = recent.count(False)
        rate = failed / len(recent) if recent else 0.0
        if c["received"] == 0:
            return WARN, "no images received (check the image topic and its QoS)"
        if recent and rate >= ERROR_FAILURES:
            return ERROR, f"{failed} of the last {len(recent)} frames failed: {self.last_error}"
        if recent and rate >= WARN_FAILURES:
            return WARN, f"{failed} of the last {len(recent)} frames failed: {self.last_error}"
        if (c["dropped"] + c["failed"]) / c["received"] > 0.5:
            return WARN, "more than half of the frames dropped or failed (model slower than the camera?)"
        return OK, "running"

    def reasons_text(self, top: int = 3) -> str:
        return "; ".join(f"{k} ({n})" for k, n in self.reasons.most_common(top))

    def processed(self, now: float, received: float, started: float, age: float) -> None:
        """Count a frame published at ``now`` that was received at ``received`` and processed
        from ``started`` (monotonic seconds); ``age``: its image stamp to publish, seconds."""
        self.count("processed")
        self.times.append(now)
        self.latency.append((now - received, now - started, age))

    def frame_interval(self) -> float:
        """The median interval between the last few published frames, seconds (0 before two)."""
        times = list(self.times)[-6:]
        return float(np.median(np.diff(times))) if len(times) > 1 else 0.0

    def values(self, now: float, backend: str, backend_asked: str) -> List[Tuple[str, str]]:
        """The diagnostics' ``(key, value)`` pairs at ``now`` (monotonic seconds): rate,
        median latencies (ms), the counters and reasons, and the model backend that runs and
        the one asked for."""
        recent = [t for t in self.times if now - t < RATE_WINDOW_S]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        lat, proc, age = np.median(np.array(self.latency), axis=0) * 1000 if self.latency else (float("nan"),) * 3
        c = self.counts
        return [
            ("rate_hz", f"{rate:.1f}"),
            ("latency_ms (receive to publish)", f"{lat:.1f}"),
            ("processing_ms", f"{proc:.1f}"),
            ("age_ms (image stamp to publish)", f"{age:.1f}"),
            ("received", str(c["received"])),
            ("processed", str(c["processed"])),
            ("dropped", str(c["dropped"])),
            ("failed", str(c["failed"])),
            ("failed_reasons", self.reasons_text()),
            ("camera_info_unused", str(c["camera_info_unused"])),
            ("last_error", self.last_error),
            ("backend", str(backend)),
            ("backend_asked", str(backend_asked)),
        ]
