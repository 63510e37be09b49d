"""How a training run stops when interrupted: Ctrl-C, SIGTERM, or a data-loader worker killed
by a signal (a process-group SIGTERM, as systemd, docker or Slurm stop jobs, reaches the
workers too). :func:`interruptible` holds the signals over the training loop, has the run
saved once and raises the interruption again as ``KeyboardInterrupt`` of its signal, so that
the same command resumes the run; a second signal while it is saved is ignored."""

from __future__ import annotations

import contextlib
import re
import signal
from typing import Callable, Dict, Iterable, Iterator

from hmdiff_ros.errors import interrupt_signal

_WORKER_KILLED = re.compile(r"DataLoader worker \(pid[^)]*\) is killed by signal: ([^.]+)")


def worker_signal(exc: BaseException, workers=()) -> "int | None":
    """The signal that killed a data-loader worker when ``exc`` is the loader's report of that
    (a process-group SIGTERM, as systemd, docker or Slurm stop jobs, reaches the workers too);
    ``workers``: the loader's processes, whose exit codes tell when the report does not. None
    for any other error (a worker that failed on its own is a bug, not an interruption)."""
    if not isinstance(exc, RuntimeError) or "DataLoader worker" not in str(exc):
        return None
    found = _WORKER_KILLED.search(str(exc))
    if found:
        by_text = {signal.strsignal(s): s for s in signal.Signals if signal.strsignal(s)}
        return by_text.get(found.group(1).strip(), signal.SIGTERM)
    if "exited unexpectedly" in str(exc) and "exit code" not in str(exc):
        for w in workers:  # a process ended by a signal has minus it as exit code
            code = getattr(w, "exitcode", None)
            if isinstance(code, int) and code < 0:
                with contextlib.suppress(ValueError):
                    return signal.Signals(-code)
    return None


class Interrupts:
    """The signals of a training run: the first interruption -- Ctrl-C, SIGTERM, or the data
    loader's report (on SIGCHLD) of a worker killed by a signal -- is raised as
    ``KeyboardInterrupt``; after it, further ones are ignored, so that the run's state is
    saved in full and the workers are stopped without more errors. Only handlers that are
    Python functions are wrapped (a SIGTERM left to its default still ends the process);
    :meth:`restore` puts them back. Off the main thread nothing is installed."""

    def __init__(self) -> None:
        self.signum: "int | None" = None  # the signal of the interruption, once there is one
        self.batches = None  # the data loader's iterator, once watched
        self._previous: Dict = {}

    def watch(self, batches) -> None:
        """Watch the data loader's iterator ``batches``: the loader's SIGCHLD handler, set as
        its workers start, is wrapped too, and its workers' exit codes tell the signal that
        ended one when the loader's report does not."""
        self.batches = batches
        self.install(getattr(signal, "SIGCHLD", None))

    def install(self, signum: "int | None") -> None:
        try:
            previous = signal.getsignal(signum) if signum is not None else None
        except ValueError:
            return
        if not callable(previous) or signum in self._previous:
            return

        def handler(num, frame):
            if self.signum is not None:
                return  # already stopping: a second signal, or the workers ending, must not cut the save short
            try:
                previous(num, frame)
            except BaseException as exc:
                caught = self.caught(exc)
                if caught is None or isinstance(exc, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt(caught) from None

        try:
            signal.signal(signum, handler)
        except ValueError:  # not the main thread
            return
        self._previous[signum] = previous

    def caught(self, exc: BaseException) -> "int | None":
        """The signal ``exc`` stands for (Ctrl-C: SIGINT), recorded as the interruption; None
        when ``exc`` is no interruption."""
        if isinstance(exc, KeyboardInterrupt):
            signum = interrupt_signal(exc)
        else:
            signum = worker_signal(exc, getattr(self.batches, "_workers", ()))
        if self.signum is None:
            self.signum = signum
        return signum

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def stop_workers(batches) -> None:
    """End the data loader's worker processes now, as the loader does when its iterator is
    collected, while :class:`Interrupts` still holds the signals: the loader reports workers
    that end by a signal as errors, which would otherwise be printed then."""
    stop = getattr(batches, "_shutdown_workers", None)
    if stop is not None:
        stop()


@contextlib.contextmanager
def interruptible(loader: Iterable, on_interrupt: Callable[[], None]) -> Iterator[Iterator]:
    """The batches of data ``loader`` for the block, under :class:`Interrupts` of SIGINT,
    SIGTERM and the loader's SIGCHLD. An interruption in the block calls ``on_interrupt``
    (which saves the run) and is raised again, a worker killed by a signal as
    ``KeyboardInterrupt`` of that signal; any other error passes through. When the block ends
    the loader's workers are stopped, then the handlers put back."""
    interrupts = Interrupts()
    interrupts.install(signal.SIGINT)
    interrupts.install(signal.SIGTERM)
    try:
        batches = iter(loader)
        interrupts.watch(batches)
        yield batches
    except (KeyboardInterrupt, RuntimeError) as exc:
        signum = interrupts.caught(exc)
        if signum is None:
            raise
        on_interrupt()
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt(signum) from None  # a worker killed by a signal: stopped as by that signal
    finally:
        try:
            stop_workers(interrupts.batches)
        finally:
            interrupts.restore()
