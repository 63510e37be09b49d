"""The ``hmdiff`` command line: one sub-command per job, each parser beside its command
(:mod:`.data`, :mod:`.study`, :mod:`.model`, :mod:`.runtime`, :mod:`.bag`, :mod:`.pipeline`);
heavy imports only when a command runs."""

from __future__ import annotations

import argparse
import contextlib
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
    configuration error, 130 interrupted. Errors are one line; ``--debug`` adds the traceback."""
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
    previous = terminate_as_interrupt()
    name = " ".join(
        filter(None, [args.command, getattr(args, "assets_command", None), getattr(args, "data_command", None)])
    )
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader of our output went away (``| head``): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as exc:  # files being written are closed by the commands' own clean-up
        signum = interrupt_signal(exc)
        print(f"hmdiff {name}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"hmdiff {name}: error: {one_line(exc, 600)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not the user's doing: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"hmdiff {name}: internal error: {type(exc).__name__}: {one_line(exc, 600)} "
            f"(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def terminate_as_interrupt():
    """SIGTERM (``kill``, a process manager) unwinds like Ctrl-C, so that every command closes
    what it is writing; returns the previous handler (None off the main thread)."""

    def handler(signum, frame):
        raise KeyboardInterrupt(signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a library)
        return None
