"""What every command shares: one-line usage errors, ranged options, the pipeline options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hmdiff_ros import defaults


class Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the option (exit 2), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class OptionError(Exception):
    """An option's value out of its range: one line, exit 2 (raised through argparse, which
    only turns conversion errors into its own usage errors)."""


class InRange(argparse.Action):
    def __init__(self, *args, bounds=(None, None, False), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = bounds

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        lo, hi, exclusive = self.bounds
        if lo is not None and hi is not None:
            span = f"between {lo} and {hi} (exclusive)" if exclusive else f"in {lo}..{hi}"
        else:
            span = f">= {lo}" if lo is not None else ""
        below = lo is not None and (value <= lo if exclusive else value < lo)
        above = hi is not None and (value >= hi if exclusive else value > hi)
        if value != value or below or above:
            raise OptionError(
                f"{parser.prog}: error: {option_string} must be {span}, got {value!r} (see '{parser.prog} --help')"
            )
        setattr(namespace, self.dest, value)


def number(kind, lo=None, hi=None, exclusive=False) -> dict:
    """``add_argument`` keywords for a ``kind`` value within bounds (checked, named when not)."""
    return {"type": kind, "action": InRange, "bounds": (lo, hi, exclusive)}


POSITIVE = number(int, 1)

STEPS = number(int, *defaults.STEPS_RANGE)

HYPOTHESES = number(int, *defaults.HYPOTHESES_RANGE)  # people x hypotheses beyond MAX_BATCH run in chunks


def add_common_args(p: argparse.ArgumentParser, default) -> None:
    """``-v`` and ``--debug``, before or after the command name."""
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logging, and third-party libraries' own log lines",
    )
    p.add_argument("--debug", action="store_true", default=default, help="show Python tracebacks of errors")


def with_common_args(add_parser):
    def add(*args, **kwargs):
        p = add_parser(*args, **kwargs)
        add_common_args(p, argparse.SUPPRESS)  # given after the command name, without resetting the global
        return p

    return add


class UsageError(ValueError):
    """A bad combination of options (exit 2)."""


def refuse_existing(paths, option: str, force: bool) -> None:
    """Before any work: the files a command would write must be new, unless ``--force``."""
    for path in paths:
        if path.parent.exists() and not path.parent.is_dir():
            raise UsageError(f"{option} '{path.parent}' is a file; expected a folder")
        if path.is_dir():
            raise UsageError(f"{option}: '{path}' is a folder; expected a file path")
        if path.exists() and not force:
            raise UsageError(f"{option}: '{path}' already exists; use --force to replace it or choose another {option}")


def check_model_paths(args: argparse.Namespace) -> None:
    """Before any model loads (seconds): ``--checkpoint`` and ``--lifter``, where given, are
    folders holding a checkpoint's files (the loaders name what is wrong inside them)."""
    from hmdiff_ros.model.checkpoint import CONFIG, WEIGHTS

    for option in ("--checkpoint", "--lifter"):
        value = getattr(args, option[2:], None)
        if value is None:
            continue
        folder, holds = Path(value), f"a checkpoint folder holds {WEIGHTS} and {CONFIG}"
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{option} '{folder}' is a file; expected a checkpoint folder ({holds})")
        missing = [name for name in (WEIGHTS, CONFIG) if not (folder / name).is_file()]
        if missing:
            why = f"lacks {' and '.join(missing)}" if folder.is_dir() else "does not exist"
            raise FileNotFoundError(f"{option} '{folder}' not found or incomplete: it {why} ({holds})")


def lifter_from(args: argparse.Namespace):
    """The learned yardstick: the lifter at ``--lifter``, else the shipped one when there is
    one, else None."""
    from hmdiff_ros.model.lifter import DEFAULT_LIFTER, load_lifter

    return load_lifter(args.lifter)[0] if args.lifter or (DEFAULT_LIFTER / "config.json").is_file() else None


def report_failures(records) -> int:
    failed = [r for r in records if r["error"]]
    if failed:
        print(f"hmdiff: {len(failed)} of {len(records)} inputs failed:", file=sys.stderr)
        for r in failed:  # one line each: a file name with a newline in it is shown escaped
            print("  " + "".join(c if c.isprintable() else repr(c)[1:-1] for c in r["error"]), file=sys.stderr)
    return 1 if failed else 0


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", **STEPS, default=defaults.STEPS, help="DDIM steps")
    p.add_argument("--dat", choices=defaults.DAT_MODES, default=defaults.DAT_MODE, help="DAT gradient mode")
    p.add_argument("--hypotheses", **HYPOTHESES, default=defaults.HYPOTHESES, help="samples per person (uncertainty)")
    p.add_argument(
        "--hfov",
        **number(float, *defaults.HFOV_RANGE, exclusive=True),
        default=defaults.HFOV_DEG,
        help="horizontal field of view in degrees (no intrinsics known)",
    )
    p.add_argument(
        "--backend",
        default=defaults.BACKEND,
        choices=defaults.BACKENDS,
        help="model backend (auto: tensorrt with built engines, then onnxruntime, then torch; onnxruntime makes its ONNX export once, in the cache)",
    )
    p.add_argument("--engines", default=defaults.ENGINES, help="folder of the ONNX export / TensorRT engines")


OPTION_NAMES = {
    "steps": "--steps",
    "hypotheses": "--hypotheses",
    "hfov_deg": "--hfov",
    "backend": "--backend",
    "dat": "--dat",
}


def pipeline_config_from(args: argparse.Namespace):
    """The pipeline's configuration from the options, checked once with the options' names."""
    from hmdiff_ros.pipeline.config import pipeline_config

    try:
        return pipeline_config(
            steps=args.steps,
            dat_mode=args.dat,
            hypotheses=args.hypotheses,
            hfov_deg=args.hfov,
            backend=args.backend,
            engines=args.engines,
            names=OPTION_NAMES,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
