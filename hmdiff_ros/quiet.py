"""Third-party start-up chatter kept off stderr, unless asked for.

The pose prior's first frame makes MediaPipe 0.10.14 print lines a user cannot act on
(measured on the demo image, CPU build):

- ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` (TFLite, C++ straight to fd 2);
- ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``
  and ``W0000 ... inference_feedback_manager.cc:114] Feedback manager requires a model with a
  single signature inference. Disabling support for feedback tensors.`` once per graph (C++
  absl logging, straight to fd 2);
- ``UserWarning: SymbolDatabase.GetPrototype() is deprecated ...`` (protobuf, a Python warning
  raised on every frame and shown once by Python's default filter);
- OpenCV's and FFmpeg's own lines when a camera or video cannot be opened (``[ WARN:0@...]
  cap_v4l.cpp``, ``moov atom not found``): the run names the input itself. Silenced with
  ``OPENCV_LOG_LEVEL=SILENT`` and ``OPENCV_FFMPEG_LOGLEVEL=-8`` (unless already set).

Levers, measured: ``GLOG_minloglevel`` and ``TF_CPP_MIN_LOG_LEVEL`` change none of these (this
build logs through absl, not glog or TensorFlow), and Python's ``absl.logging`` does not reach
the C++ logger. What works: a warnings filter for the protobuf message, and
:func:`third_party_output` around the creation of each MediaPipe graph (until its worker
threads have opened the models, where the C++ lines are printed) and its first ``process``
call, which sends fd 2 to a temporary file for the call and afterwards writes back every
captured line that is not one of the known ones above: errors, ours or theirs, still reach
stderr (only a hard crash inside the block, such as a C++ abort, loses what it captured).

Verbosity: ``quiet_third_party(verbose=True)`` (what ``hmdiff -v`` calls before the prior is
imported), or the environment variable ``HMDIFF_VERBOSE=1``, shows them all.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from typing import Iterator

VERBOSE_ENV = "HMDIFF_VERBOSE"
# Lines a user cannot act on; anything else captured is written back.
NOISE = (
    re.compile(r"Created TensorFlow Lite XNNPACK delegate for CPU"),
    re.compile(r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"Feedback manager requires a model with a single signature inference"),
    re.compile(r"SymbolDatabase\.GetPrototype\(\) is deprecated"),
    re.compile(r"^\s*warnings\.warn\('SymbolDatabase\.GetPrototype\(\) is deprecated"),
)
_PROTOBUF_WARNING = r"SymbolDatabase\.GetPrototype\(\) is deprecated"

_verbose: bool | None = None  # None: not chosen yet, HMDIFF_VERBOSE decides
_lock = threading.RLock()
_depth = 0


def _env_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def quiet_third_party(verbose: bool | None = None) -> bool:
    """Hide (default) or show the third-party lines listed in the module docstring; returns
    whether they are shown.

    ``verbose=None`` keeps the choice of an earlier call with ``True`` or ``False``; without
    one it reads ``HMDIFF_VERBOSE`` (``1``: show). The prior calls it with ``None`` when it is
    imported, so a command-line ``-v`` must call ``quiet_third_party(True)`` (or set the
    variable) before importing :mod:`hmdiff_ros.prior.mediapipe_prior`, or at any time before
    the first frame."""
    global _verbose
    if verbose is not None:
        _verbose = bool(verbose)
    shown = _env_verbose() if _verbose is None else _verbose
    # the later filter wins; filterwarnings drops an identical older one first
    warnings.filterwarnings("default" if shown else "ignore", message=_PROTOBUF_WARNING, category=UserWarning)
    if not shown:  # OpenCV's and FFmpeg's own lines for a camera or video that cannot open: ours name it
        os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")  # read when cv2 is imported
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg is first used
        cv2 = sys.modules.get("cv2")
        with contextlib.suppress(AttributeError):
            if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == "SILENT":
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return shown


def is_verbose() -> bool:
    """Whether third-party lines are shown (see :func:`quiet_third_party`)."""
    return _env_verbose() if _verbose is None else _verbose


@contextlib.contextmanager
def third_party_output() -> Iterator[None]:
    """Within the block, what is written to file descriptor 2 (C++ libraries write there
    directly) goes to a temporary file; on leaving it, even by an exception, fd 2 is restored
    and every captured line except the known third-party ones is written to it. Does nothing
    when verbose, when nested, or when fd 2 cannot be duplicated."""
    global _depth
    if is_verbose():
        yield
        return
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no fd 2, or a closed sys.stderr
            yield
            return
        _depth = 1
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                _depth = 0
                capture.seek(0)
                kept = [line for line in capture.read().splitlines(keepends=True) if not _is_noise(line)]
                data = b"".join(kept)
                while data:
                    data = data[os.write(2, data) :]


def _is_noise(line: bytes) -> bool:
    text = line.decode("utf-8", errors="replace")
    return any(p.search(text) for p in NOISE)
