"""The ``hmdiff`` command line: one sub-command per job, each parser beside its command
(:mod:`.data`, :mod:`.study`, :mod:`.model`, :mod:`.runtime`, :mod:`.bag`, :mod:`.pipeline`);
heavy imports only when a command runs."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import traceback
from typing import List

from hmdiff_ros.cli import bag, data, model, pipeline, runtime
from hmdiff_ros.cli.common import OptionError, Parser, add_common_args, with_common_args
from hmdiff_ros.errors import interrupt_signal, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hmdiff", description="HMDiff human mesh recovery for ROS 2.")
    add_common_args(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = with_common_args(sub.add_parser)

    p = sub.add_parser("info", help="versions, backends, body models and GPUs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    for domain in (data, model, runtime, bag, pipeline):
        domain.add_parsers(sub)
    return parser


def _cmd_info(args: argparse.Namespace) -> int:
    from hmdiff_ros.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


USER_ERRORS = (ValueError, OSError, ImportError)


def main(argv: List[str] | None = None) -> int:
    """Exit codes: 0 all done, 1 some inputs failed (listed at the end), 2 a usage or
    configuration error, 128 + the signal when interrupted (130 Ctrl-C, 143 SIGTERM), start-up
    included. Errors are one line; ``--debug`` adds the traceback."""
    # first of all: a signal while the parser's imports load torch (seconds) unwinds as one line
    previous = terminate_as_interrupt()
    name = ["hmdiff " + " ".join(_subcommand(sys.argv[1:] if argv is None else argv))]
    program = argv is None  # the program itself, not a call from Python code
    try:
        code = _main(argv, name)
    except KeyboardInterrupt as exc:  # files being written are closed by the commands' own clean-up
        signum = interrupt_signal(exc)
        print(f"{name[0].strip()}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        code = 128 + signum
    finally:
        if program:  # the work is done or stopped: a signal now changes nothing, and is not a death
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        elif previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if program and code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        _exit_now(code)
    return code


PRIOR_COMMANDS = ("run", "demo", "bag", "eval-real", "bench-pipeline")  # the commands that run MediaPipe


def _import_native() -> None:
    """Import torch and ONNX Runtime (seconds; pybind11 extensions) with SIGINT and SIGTERM held
    until they are done: an interrupt raised while their C++ ran Python code was seen to abort
    the process ("terminate called after throwing an instance of 'pybind11::error_already_set'",
    status -6) instead of ending it with one line and 130."""
    with signals_held():
        for module in ("torch", "onnxruntime"):
            with contextlib.suppress(ImportError):  # a missing one is named where it is used
                importlib.import_module(module)


def _import_prior() -> None:
    """Import MediaPipe (about 1 s: protobuf, its C++ graph) with SIGINT and SIGTERM held until
    it is done: an interrupt raised inside it was seen turned into an ImportError ("needs
    mediapipe") or printed by it and lost, the run going on."""
    with signals_held(), contextlib.suppress(ImportError):  # a missing MediaPipe is named where it is used
        import mediapipe.python.solutions.pose  # noqa: F401


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM noted, not raised, within the block; the first one noted is raised as
    ``KeyboardInterrupt(signum)`` when it ends (as :func:`terminate_as_interrupt` raises it)."""
    got: List[int] = []
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) not in (signal.SIG_IGN, None):  # ignored, or set outside Python: kept
                previous[sig] = signal.signal(sig, lambda signum, frame: got.append(signum))
    except ValueError:  # not the main thread: nothing to hold
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if got:
        raise KeyboardInterrupt(got[0])


def _exit_now(code: int) -> None:
    """Exit with ``code`` at once, output flushed. CPython kills itself with SIGINT at exit
    (status -2) once a KeyboardInterrupt has passed through code an extension ran with
    ``PyRun_*`` (torch's import does), even when the interrupt was handled: seen as exit -2
    instead of 143 after a SIGTERM during start-up. Exiting here keeps the status the message
    gives; the commands have closed their files while the interrupt unwound."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _subcommand(argv: List[str]) -> List[str]:
    """The sub-command words of ``argv`` (before its first option or argument of another kind),
    for messages given before the parser has run."""
    words = []
    for word in argv[:2]:
        if word.startswith("-") or not word.replace("-", "").isalpha():
            break
        words.append(word)
    return words[:1] if words[:1] not in (["data"], ["assets"]) else words


def _main(argv: List[str] | None, name: List[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except OptionError as exc:  # a value out of range (argparse's own errors exit 2 themselves)
        print(exc, file=sys.stderr)
        return 2
    # our own INFO lines; other libraries only from WARNING (all of it with -v)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("hmdiff_ros").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from hmdiff_ros.quiet import quiet_third_party

    quiet_third_party(verbose=True if args.verbose else None)  # None: HMDIFF_VERBOSE decides
    name[0] = "hmdiff " + " ".join(
        filter(None, [args.command, getattr(args, "assets_command", None), getattr(args, "data_command", None)])
    )
    try:
        _import_native()
        if args.command in PRIOR_COMMANDS:
            _import_prior()
        return args.func(args)
    except BrokenPipeError:  # the reader of our output went away (``| head``): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{name[0]}: error: {one_line(exc, 600)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not the user's doing: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"{name[0]}: internal error: {type(exc).__name__}: {one_line(exc, 600)} "
            f"(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def terminate_as_interrupt():
    """SIGTERM (``kill``, a process manager) unwinds like Ctrl-C, so that every command closes
    what it is writing; returns the previous handler (None off the main thread)."""

    def handler(signum, frame):
        raise KeyboardInterrupt(signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a library)
        return None
