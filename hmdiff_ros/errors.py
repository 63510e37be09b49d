"""Errors as the one line a user reads."""

from __future__ import annotations

import signal


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc``'s message on one line of at most ``limit`` characters (some libraries write
    paragraphs), or its type's name when it has no message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def interrupt_signal(exc: KeyboardInterrupt) -> int:
    """The signal a ``KeyboardInterrupt`` stands for: the one it carries (SIGTERM is raised as
    ``KeyboardInterrupt(signal.SIGTERM)``), else SIGINT (Ctrl-C)."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
