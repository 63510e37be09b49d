"""The ``hmdiff`` command line: one sub-command per job, heavy imports only when used."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import List

from hmdiff_ros import defaults
from hmdiff_ros.errors import interrupt_signal, one_line


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the option (exit 2), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _OptionError(Exception):
    """An option's value out of its range: one line, exit 2 (raised through argparse, which
    only turns conversion errors into its own usage errors)."""


class _InRange(argparse.Action):
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
            raise _OptionError(
                f"{parser.prog}: error: {option_string} must be {span}, got {value!r} (see '{parser.prog} --help')"
            )
        setattr(namespace, self.dest, value)


def _number(kind, lo=None, hi=None, exclusive=False) -> dict:
    """``add_argument`` keywords for a ``kind`` value within bounds (checked, named when not)."""
    return {"type": kind, "action": _InRange, "bounds": (lo, hi, exclusive)}


POSITIVE = _number(int, 1)
STEPS = _number(int, *defaults.STEPS_RANGE)
HYPOTHESES = _number(int, *defaults.HYPOTHESES_RANGE)  # people x hypotheses beyond MAX_BATCH run in chunks


def _add_common_args(p: argparse.ArgumentParser, default) -> None:
    """``-v`` and ``--debug``, before or after the command name."""
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logging, and third-party libraries' own log lines",
    )
    p.add_argument("--debug", action="store_true", default=default, help="show Python tracebacks of errors")


def _with_common_args(add_parser):
    def add(*args, **kwargs):
        p = add_parser(*args, **kwargs)
        _add_common_args(p, argparse.SUPPRESS)  # given after the command name, without resetting the global
        return p

    return add


def _cmd_info(args: argparse.Namespace) -> int:
    from hmdiff_ros.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _cmd_assets_build(args: argparse.Namespace) -> int:
    from hmdiff_ros.body.build_topology import TopologyBuildConfig, build_topology

    cfg = TopologyBuildConfig(
        coarse_vertices=args.coarse_vertices,
        neighbours=args.neighbours,
        fit_samples=args.fit_samples,
        eval_samples=args.eval_samples,
        seed=args.seed,
    )
    from hmdiff_ros.body.topology import DEFAULT_ASSET

    args.out = args.out or DEFAULT_ASSET
    _refuse_existing([Path(args.out), Path(args.out).with_suffix(".json")], "--out", args.force)
    topology, report = build_topology(cfg)
    topology.save(args.out)
    print(json.dumps({"out": str(args.out), "num_coarse": topology.num_coarse, **report}, indent=2))
    return 0


def _cmd_assets_check(args: argparse.Namespace) -> int:
    from hmdiff_ros.body.anny_body import AnnyBody
    from hmdiff_ros.body.build_topology import joint_error_mm, random_posed_bodies
    from hmdiff_ros.body.topology import Topology, roundtrip_error_mm

    topology = Topology.load(args.asset)
    body = AnnyBody()
    bodies = random_posed_bodies(body, args.samples, seed=args.seed)
    result = {
        "asset": str(args.asset or "default"),
        "num_bodies": args.samples,
        "seed": args.seed,
        "num_coarse": topology.num_coarse,
        "roundtrip_mm": roundtrip_error_mm(topology, bodies),
        "joints_mm": joint_error_mm(topology, bodies, body.joint_regressor.numpy()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        r, j = result["roundtrip_mm"], result["joints_mm"]
        print(
            f"full -> coarse ({topology.num_coarse}) -> full on {args.samples} posed Anny bodies (seed {args.seed}): "
            f"mean {r['mean_mm']:.2f} mm, p99 {r['p99_mm']:.2f} mm, max {r['max_mm']:.2f} mm; "
            f"joints from the coarse mesh: mean {j['mean_mm']:.2f} mm, max {j['max_mm']:.2f} mm"
        )
    return 0


def _cmd_data_make(args: argparse.Namespace) -> int:
    from hmdiff_ros.data.engine import SyntheticConfig, SyntheticEngine
    from hmdiff_ros.data.shapes import BankConfig
    from hmdiff_ros.data.store import write_split

    engine = SyntheticEngine(SyntheticConfig(bank=BankConfig(full=args.full), full=args.full))
    out = write_split(engine, args.out, args.num, args.seed, args.split, batch=args.batch, force=args.force)
    print(json.dumps({"out": str(out), "split": args.split, "num": args.num, "seed": args.seed}))
    return 0


def _cmd_data_bench(args: argparse.Namespace) -> int:
    from hmdiff_ros.data.bench import bench

    result = bench(batch_size=args.batch, batches=args.batches, workers=args.workers)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['samples_per_s']:.0f} samples/s ({result['workers']} workers, batch {result['batch_size']}, "
            f"{result['channels']}x{result['crop_size']}x{result['crop_size']} proxy)"
        )
    return 0


def _cmd_data_sheet(args: argparse.Namespace) -> int:
    from hmdiff_ros.data.engine import SyntheticEngine
    from hmdiff_ros.data.sheet import check_sheet_args, contact_sheet

    check_sheet_args(args.num, args.out, tile=args.tile)  # before the engine is built
    _refuse_existing([Path(args.out)], "--out", args.force)
    print(contact_sheet(SyntheticEngine(), args.num, args.seed, args.out, tile=args.tile))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from hmdiff_ros.model.train import load_train_config, train

    overrides = {
        k: v
        for k, v in {
            "out": args.out,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "max_minutes": args.max_minutes,
            "device": args.device,
            "workers": args.workers,
            "val_every": args.val_every,
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "init": args.init,
            "seed": args.seed,
            "force": args.force or None,
        }.items()
        if v is not None
    }
    config = args.config
    if config is None:
        config = Path(__file__).resolve().parent / "model" / "configs" / "default.yaml"
    print(json.dumps(train(load_train_config(config, overrides))))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from hmdiff_ros.model.evaluate import evaluate

    result = evaluate(args.checkpoint, args.data, steps=args.steps, dat=args.dat, hypotheses=args.hypotheses)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['num_samples']} samples, {args.steps} steps, DAT {args.dat}: MPJPE {result['mpjpe_mm']:.1f} mm, "
            f"PA-MPJPE {result['pa_mpjpe_mm']:.1f} mm, MPVPE {result['mpvpe_mm']:.1f} mm, PA-MPVPE {result['pa_mpvpe_mm']:.1f} mm"
        )
    return 0


def _cmd_eval_real(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.config import build_pipeline
    from hmdiff_ros.pipeline.eval_real import evaluate_real

    pipe = build_pipeline(_pipeline_config(args), args.checkpoint)
    try:
        result = evaluate_real(pipe, args.data, out=args.out, progress=not args.json, force=args.force)
    finally:
        pipe.prior.close()
    if args.json:
        print(json.dumps(result))
    else:
        fmt = lambda v, unit="": "n/a" if v is None else f"{v}{unit}"  # noqa: E731
        print(
            f"3D frames {result['num_frames_3d']}: MPJPE {fmt(result['mpjpe_mm'], ' mm')}, "
            f"PA-MPJPE {fmt(result['pa_mpjpe_mm'], ' mm')}; 2D people {result['num_people_2d']}: "
            f"PCK@0.1 {fmt(result['pck_at_0.1'])}"
        )
        for name, row in result["per_dataset"].items():
            print(f"  {name}: {json.dumps(row)}")
    skipped = result.get("skipped") or []
    if skipped:  # frames that could not be read: listed, and the run is not "all done"
        print(f"hmdiff eval-real: {len(skipped)} frames skipped (unreadable), not in the figures:", file=sys.stderr)
        for path in skipped:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from hmdiff_ros.model.ablate import ablate

    _refuse_existing([Path(args.out) / f"ablation.{ext}" for ext in ("md", "png", "json")], "--out", args.force)
    print(json.dumps(ablate(args.checkpoint, args.data, out=args.out, limit=args.limit or None)))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from hmdiff_ros.runtime.bench import bench, check_report

    if args.report:  # refused before the benchmark runs, not after
        check_report(args.report, force=args.force)
    rows = bench(
        [b.strip() for b in args.backend.split(",") if b.strip()],
        steps=args.steps,
        people=args.people,
        dat=args.dat,
        repeats=args.repeats,
        checkpoint=args.checkpoint,
        engines=args.engines,
        device=args.device,
    )
    if args.report:
        from hmdiff_ros.runtime.bench import write_report

        write_report(rows, args.report, {"steps": args.steps, "people": args.people, "dat": args.dat}, force=args.force)
    if args.json:  # the contract: exactly these keys per row
        keys = ("backend", "stage", "p50_ms", "p90_ms", "p99_ms")
        print(json.dumps([{k: r[k] for k in keys} for r in rows]))
    else:
        for r in rows:
            extra = f"  {r['fps']:6.1f} FPS  peak {r['peak_mb']:.0f} MB" if "fps" in r else ""
            print(
                f"{r['backend']:<12} {r['stage']:<8} p50 {r['p50_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms{extra}"
            )
    return 0


def _cmd_bag(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.config import build_pipeline
    from hmdiff_ros.pipeline.tracking import Tracker, TrackerConfig
    from hmdiff_ros.ros.bag import process_bag

    pipe = build_pipeline(_pipeline_config(args), args.checkpoint, video=True)  # a bag is one stream
    try:
        summary = process_bag(
            args.input,
            args.output,
            pipe,
            image_topic=args.image_topic,
            camera_info_topic=args.camera_info_topic,
            distro=args.distro,
            storage=args.storage,
            namespace=args.namespace,
            mesh=args.mesh,
            tracking=None if args.no_track else Tracker(TrackerConfig()),
            max_frames=args.max_frames,
            progress=not args.json,
            tf=not args.no_tf,
            tf_prefix=args.tf_prefix,
            hri=args.hri,
            force=args.force,
        )
    finally:
        pipe.prior.close()
    print(
        json.dumps(summary)
        if args.json
        else f"{summary['frames']} frames, {summary['people']} people, {summary['dropped']} dropped -> {summary['out']}"
    )
    if summary["error"]:
        print(f"hmdiff bag: error: {summary['error']}", file=sys.stderr)
        if summary.get("interrupted"):  # the bag is closed and marked partial; 128 + the signal, as a shell reports it
            return 128 + getattr(signal, summary.get("signal") or "SIGINT", signal.SIGINT)
        return 1
    if summary["dropped"]:  # some frames failed: listed with their reasons, the others are in the bag
        print(
            f"hmdiff bag: {summary['dropped']} of {summary['dropped'] + summary['frames']} frames failed:",
            file=sys.stderr,
        )
        for reason, count in summary["dropped_reasons"].items():
            print(f"  {reason} ({count})", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from hmdiff_ros.runtime.export import export_onnx

    try:
        steps = [int(k) for k in str(args.steps).split(",")]
    except ValueError:
        raise _UsageError(f"--steps must be comma-separated step counts such as 2,4, got {args.steps!r}") from None
    for k in steps:
        why = defaults.range_error("--steps", k, defaults.STEPS_RANGE, integer=True)
        if why:
            raise _UsageError(why)
    manifest = export_onnx(args.checkpoint, args.out, steps=steps, dat=args.dat, opset=args.opset, force=args.force)
    print(
        json.dumps(
            {
                "out": args.out,
                "files": sorted(manifest["files"]),
                "opset": manifest["opset"],
                "checkpoint_sha256": manifest["checkpoint_sha256"],
            }
        )
    )
    return 0


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from hmdiff_ros.runtime.tensorrt_backend import build_engines

    paths = build_engines(args.engines, fp16=not args.fp32, max_batch=args.max_batch)
    print(json.dumps({"engines": [str(p) for p in paths]}))
    return 0


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.config import build_pipeline
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.runtime.bench import bench_pipeline

    image = read_image(args.image or DEMO_IMAGE)
    pipe = build_pipeline(_pipeline_config(args), args.checkpoint)
    try:
        result = bench_pipeline(pipe, image, repeats=args.repeats)
    finally:
        pipe.prior.close()
    if args.json:
        print(json.dumps(result))
    else:
        for r in result["stages"]:
            print(f"{r['stage']:<9} p50 {r['p50_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms")
        print(
            f"end to end: {result['fps']} FPS ({result['people']} person, {result['steps']} steps, DAT {result['dat']}, "
            f"{result['hypotheses']} hypotheses, {result['threads']} threads)"
        )
    return 0


_OPTION_NAMES = {
    "steps": "--steps",
    "hypotheses": "--hypotheses",
    "hfov_deg": "--hfov",
    "backend": "--backend",
    "dat": "--dat",
}


def _pipeline_config(args: argparse.Namespace):
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
            names=_OPTION_NAMES,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


class _UsageError(ValueError):
    """A bad combination of options (exit 2)."""


def _refuse_existing(paths, option: str, force: bool) -> None:
    """Before any work: the files a command would write must be new, unless ``--force``."""
    for path in paths:
        if path.parent.exists() and not path.parent.is_dir():
            raise _UsageError(f"{option} '{path.parent}' is a file; expected a folder")
        if path.is_dir():
            raise _UsageError(f"{option}: '{path}' is a folder; expected a file path")
        if path.exists() and not force:
            raise _UsageError(
                f"{option}: '{path}' already exists; use --force to replace it or choose another {option}"
            )


def _report(records) -> int:
    failed = [r for r in records if r["error"]]
    if failed:
        print(f"hmdiff: {len(failed)} of {len(records)} inputs failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.run import load_boxes, run
    from hmdiff_ros.pipeline.tracking import TrackerConfig

    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else None
    boxes = load_boxes(args.boxes) if args.boxes else None
    tracking = None if args.no_track else TrackerConfig(smooth=not args.no_smooth)
    records = run(
        args.paths,
        args.out,
        _pipeline_config(args),
        checkpoint=args.checkpoint,
        max_frames=args.max_frames,
        progress=not args.json,
        emit=emit,
        tracking=tracking,
        boxes=boxes,
        force=args.force,
    )
    if not args.json:
        done = [r for r in records if not r["error"]]
        people = sum(len(r["people"]) for r in done)
        where = f"results in {args.out}/" if done else "no results written"
        print(f"{len(done)} of {len(records)} images/frames processed, {people} people; {where}")
    return _report(records)


def _cmd_demo(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.run import DEMO_IMAGE, run

    records = run([str(DEMO_IMAGE)], args.out, _pipeline_config(args), progress=False, force=args.force)
    for r in records:
        print(json.dumps({"path": r["path"], "backend": r["backend"], "people": len(r["people"]), "error": r["error"]}))
    if not any(r["error"] for r in records):
        names = sorted(p.name for p in Path(args.out).iterdir() if not p.name.startswith("."))
        print(f"demo outputs written to {args.out}/: {', '.join(names)}")
    return _report(records)


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", **STEPS, default=defaults.STEPS, help="DDIM steps")
    p.add_argument("--dat", choices=defaults.DAT_MODES, default=defaults.DAT_MODE, help="DAT gradient mode")
    p.add_argument("--hypotheses", **HYPOTHESES, default=defaults.HYPOTHESES, help="samples per person (uncertainty)")
    p.add_argument(
        "--hfov",
        **_number(float, *defaults.HFOV_RANGE, exclusive=True),
        default=defaults.HFOV_DEG,
        help="horizontal field of view in degrees (no intrinsics known)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=defaults.BACKENDS,
        help="model backend (onnxruntime/tensorrt need 'hmdiff export' first)",
    )
    p.add_argument("--engines", default=defaults.ENGINES, help="folder of the ONNX export / TensorRT engines")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hmdiff", description="HMDiff human mesh recovery for ROS 2.")
    _add_common_args(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = _with_common_args(sub.add_parser)

    p = sub.add_parser("info", help="versions, backends, body models and GPUs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    assets = sub.add_parser("assets", help="build or check the coarse topology asset").add_subparsers(
        dest="assets_command", required=True
    )
    assets.add_parser = _with_common_args(assets.add_parser)
    p = assets.add_parser("build", help="build the topology asset from Anny (needs the [anny] extra)")
    p.add_argument("--out", default=None, help="output .npz (default: the packaged asset)")
    p.add_argument("--force", action="store_true", help="replace an existing asset (the packaged one too)")
    p.add_argument("--coarse-vertices", **POSITIVE, default=600)
    p.add_argument("--neighbours", **POSITIVE, default=8)
    p.add_argument("--fit-samples", **POSITIVE, default=768)
    p.add_argument("--eval-samples", **POSITIVE, default=128)
    p.add_argument("--seed", **_number(int, 0), default=0)
    p.set_defaults(func=_cmd_assets_build)

    p = assets.add_parser("check", help="round-trip error full->coarse->full on posed Anny bodies, in mm")
    p.add_argument("--asset", default=None, help="asset .npz (default: the packaged one)")
    p.add_argument("--samples", **POSITIVE, default=256)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_assets_check)

    data = sub.add_parser("data", help="synthetic training data").add_subparsers(dest="data_command", required=True)
    data.add_parser = _with_common_args(data.add_parser)
    p = data.add_parser("make", help="write a fixed synthetic split to a folder")
    p.add_argument("--split", default="test", help="name recorded in the split (e.g. test, val)")
    p.add_argument("--num", **POSITIVE, required=True, help="number of samples")
    p.add_argument("--seed", **_number(int, 0), default=0)
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--force", action="store_true", help="replace the split in an existing --out folder")
    p.add_argument("--batch", **POSITIVE, default=256, help="samples generated at once")
    p.add_argument("--full", action="store_true", help="also store full-resolution meshes (13,718 vertices)")
    p.set_defaults(func=_cmd_data_make)
    p = data.add_parser("bench", help="samples/second of the data engine at the training resolution")
    p.add_argument("--batch", **POSITIVE, default=256)
    p.add_argument("--batches", **POSITIVE, default=12, help="timed batches (after warm-up)")
    p.add_argument("--workers", **_number(int, 0, 64), default=2, help="data-loader processes (0: in process)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_data_bench)
    p = data.add_parser("sheet", help="contact sheet PNG of random synthetic bodies")
    p.add_argument("--out", default="docs/images/pose_contact_sheet.png")
    p.add_argument("--force", action="store_true", help="replace an existing image")
    p.add_argument("--num", **_number(int, 1, 1024), default=64)
    p.add_argument("--seed", **_number(int, 0), default=0)
    p.add_argument("--tile", **_number(int, 32, 2000), default=200, help="tile size in pixels")
    p.set_defaults(func=_cmd_data_sheet)

    p = sub.add_parser("train", help="train HMDiff on streamed synthetic data (resumes from --out)")
    p.add_argument(
        "--config", default=None, help="YAML training config (default: hmdiff_ros/model/configs/default.yaml)"
    )
    p.add_argument("--out", default=None, help="run folder (checkpoint, metrics.jsonl); a run there is resumed")
    p.add_argument(
        "--force",
        action="store_true",
        help="train afresh in an --out that holds anything but a resumable run (replaces its checkpoint)",
    )
    p.add_argument("--steps", **POSITIVE, default=None)
    p.add_argument("--batch-size", **POSITIVE, default=None)
    p.add_argument("--max-minutes", **_number(float, 0), default=None, help="stop and checkpoint after this wall time")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--workers", **_number(int, 0, 64), default=None, help="data-loader processes")
    p.add_argument("--val-every", **POSITIVE, default=None)
    p.add_argument("--lr", **_number(float, 0, 1, exclusive=True), default=None, help="peak learning rate")
    p.add_argument("--warmup-steps", **_number(int, 0), default=None)
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--seed", **_number(int, 0), default=None, help="seed of the training stream")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="accuracy on a synthetic split (default: the fixed test split)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    p.add_argument("--data", default=None, help="folder written by 'hmdiff data make'")
    p.add_argument("--steps", **STEPS, required=True, help="DDIM steps")
    p.add_argument("--dat", choices=defaults.DAT_MODES, required=True, help="DAT gradient mode")
    p.add_argument("--hypotheses", **HYPOTHESES, default=1, help="samples per input, averaged")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("ablate", help="DAT off/fast/full x DDIM steps and a tau/lambda sweep -> markdown + PNG")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--out", default="docs/ablation")
    p.add_argument("--force", action="store_true", help="replace the ablation files in --out")
    p.add_argument("--limit", **_number(int, 0), default=256, help="samples of the split to use (0: all)")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("bench", help="per-stage model latency per backend (p50/p90/p99)")
    p.add_argument("--backend", default="torch", help="comma-separated: torch, onnxruntime, tensorrt")
    p.add_argument("--engines", default=defaults.ENGINES, help="folder of the ONNX export / TensorRT engines")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the torch backend runs")
    p.add_argument("--report", default=None, help="also write bench.md and bench.png (model p50 per backend) here")
    p.add_argument("--force", action="store_true", help="replace bench.md and bench.png in --report")
    p.add_argument("--steps", **STEPS, default=defaults.STEPS, help="DDIM steps")
    p.add_argument("--people", **_number(int, 1, 64), default=1, help="batch size (people)")
    p.add_argument("--dat", choices=defaults.DAT_MODES, default=defaults.DAT_MODE)
    p.add_argument("--repeats", **POSITIVE, default=50)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("bag", help="run the pipeline over a rosbag2 (sqlite3 or MCAP) into a new bag, without ROS")
    p.add_argument("input", help="input bag folder (or .mcap / .db3 file)")
    p.add_argument("output", help="output bag folder (must not exist, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output bag (a rosbag2 folder only)")
    p.add_argument("--image-topic", default=None, help="default: the bag's only Image/CompressedImage topic")
    p.add_argument("--camera-info-topic", default=None, help="default: the bag's only CameraInfo topic, if any")
    p.add_argument("--distro", choices=("humble", "jazzy"), default="humble", help="message definitions to use")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--namespace", default="/hmdiff", help="prefix of the output topics")
    p.add_argument("--mesh", choices=("none", "coarse", "full"), default="coarse", help="mesh in the markers")
    p.add_argument("--max-frames", **POSITIVE, default=None)
    p.add_argument("--no-track", action="store_true", help="no track ids or smoothing")
    p.add_argument("--no-tf", action="store_true", help="no /tf frames per person")
    p.add_argument("--tf-prefix", default="hmdiff_body", help="TF frames <prefix>_<id> ('body': REP-155 names)")
    p.add_argument("--hri", action="store_true", help="also write /humans/bodies/tracked (hri_msgs/IdsList, REP-155)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_pipeline_args(p)
    p.set_defaults(func=_cmd_bag)

    p = sub.add_parser("export", help="export the encoder, denoiser and unrolled samplers to ONNX")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=defaults.ENGINES, help="output folder (ONNX files and manifest.json)")
    p.add_argument("--force", action="store_true", help="replace the export in an existing, non-empty --out")
    p.add_argument("--steps", default="4", help="comma-separated step counts of the unrolled samplers, e.g. 2,4")
    p.add_argument("--dat", choices=("off", "fast"), default="fast", help="DAT mode inside the unrolled samplers")
    p.add_argument("--opset", **_number(int, 13, 30), default=17)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("build-engine", help="build TensorRT engines from the ONNX export, on this GPU")
    p.add_argument("--engines", default=defaults.ENGINES, help="folder written by 'hmdiff export'")
    p.add_argument("--fp32", action="store_true", help="no FP16 even where the GPU has it")
    p.add_argument(
        "--max-batch", **_number(int, 1, defaults.MAX_BATCH), default=16, help="largest batch (people x hypotheses)"
    )
    p.set_defaults(func=_cmd_build_engine)

    p = sub.add_parser("bench-pipeline", help="per-stage latency of the whole frame pipeline and end-to-end FPS")
    p.add_argument("--image", default=None, help="image with one person (default: the demo photo)")
    p.add_argument("--repeats", **POSITIVE, default=20)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_pipeline_args(p)
    p.set_defaults(func=_cmd_bench_pipeline)

    p = sub.add_parser("run", help="recover meshes from images, folders, videos or a camera index")
    p.add_argument("paths", nargs="+", help="image files, folders, video files or a camera index (0, 1, ...)")
    p.add_argument("--out", default="hmdiff_out", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out that hmdiff did not write")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--max-frames", **POSITIVE, default=None, help="stop videos/cameras after this many frames")
    p.add_argument("--json", action="store_true", help="print one JSON record per image/frame")
    p.add_argument(
        "--boxes",
        default=None,
        help="JSON file {image path or name: [[u0, v0, u1, v1], ...]}: people boxes from a detector",
    )
    p.add_argument("--no-track", action="store_true", help="videos: no track ids across frames, no smoothing")
    p.add_argument("--no-smooth", action="store_true", help="videos: track ids but no One-Euro smoothing")
    _add_pipeline_args(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("eval-real", help="accuracy on real frames with ground truth (3D joints, 2D keypoints)")
    p.add_argument("--data", required=True, help="folder of real evaluation data (layout: docs/eval_real.md)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=None, help="also write overlay images here, to look at (a new or empty folder)")
    p.add_argument("--force", action="store_true", help="write the overlays into a non-empty --out")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_pipeline_args(p)
    p.set_defaults(func=_cmd_eval_real)

    p = sub.add_parser("demo", help="run the whole pipeline on the shipped public-domain photo")
    p.add_argument("--out", default="hmdiff_demo", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out that hmdiff did not write")
    _add_pipeline_args(p)
    p.set_defaults(func=_cmd_demo)
    return parser


# errors a user can act on (a bad file, option or input): one line and exit 2
USER_ERRORS = (ValueError, OSError, ImportError)


def main(argv: List[str] | None = None) -> int:
    """Exit codes: 0 all done, 1 some inputs failed (listed at the end), 2 a usage or
    configuration error, 130 interrupted. Errors are one line; ``--debug`` adds the traceback."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _OptionError as exc:  # a value out of range (argparse's own errors exit 2 themselves)
        print(exc, file=sys.stderr)
        return 2
    # our own INFO lines; other libraries only from WARNING (all of it with -v)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("hmdiff_ros").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from hmdiff_ros.quiet import quiet_third_party

    quiet_third_party(verbose=True if args.verbose else None)  # None: HMDIFF_VERBOSE decides
    previous = _terminate_as_interrupt()
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


def _terminate_as_interrupt():
    """SIGTERM (``kill``, a process manager) unwinds like Ctrl-C, so that every command closes
    what it is writing; returns the previous handler (None off the main thread)."""

    def handler(signum, frame):
        raise KeyboardInterrupt(signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a library)
        return None


if __name__ == "__main__":
    sys.exit(main())
