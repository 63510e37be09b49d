"""``hmdiff run``, ``demo``, ``eval-real`` and ``bench-pipeline``: the frame pipeline on images, videos and cameras."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from hmdiff_ros.cli.common import (
    POSITIVE,
    UsageError,
    add_pipeline_args,
    check_model_paths,
    lifter_from,
    pipeline_config_from,
    report_failures,
)


def add_parsers(sub) -> None:
    p = sub.add_parser("bench-pipeline", help="per-stage latency of the whole frame pipeline and end-to-end FPS")
    p.add_argument("--image", default=None, help="image with one person (default: the demo photo)")
    p.add_argument("--repeats", **POSITIVE, default=20)
    p.add_argument(
        "--people",
        type=int,
        nargs="+",
        default=[1],
        choices=range(1, 9),
        metavar="N",
        help="people per frame, each count its own run (N > 1: the image repeated N times side by side, "
        "one box per copy, as a detector gives them; default 1)",
    )
    p.add_argument("--checkpoint", default=None)
    p.add_argument(
        "--json",
        action="store_true",
        help='print JSON rows: {"backend", "stage", "people", "p50_ms", "p90_ms", "p99_ms"} per stage, '
        '{"backend", "stage": "frame", "people", "fps", "latency_p50_ms"} (one frame at a time) and the same '
        'with "stage": "stream" (overlapped stages)',
    )
    p.add_argument("--report", default=None, help="also write bench.md and bench.png (p50 per stage) in this folder")
    p.add_argument("--force", action="store_true", help="replace bench.md and bench.png in --report")
    p.add_argument(
        "--compare",
        default="torch",
        help="comma-separated backends also run, for comparison, where --backend loaded another one "
        "(default: torch, PyTorch eager; '' for none)",
    )
    add_pipeline_args(p)
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
    add_pipeline_args(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("eval-real", help="accuracy on real frames with ground truth (3D joints, 2D keypoints)")
    p.add_argument("--data", required=True, help="folder of real evaluation data (layout: docs/eval_real.md)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=None, help="also write overlay images here, to look at (a new or empty folder)")
    p.add_argument("--force", action="store_true", help="write the overlays into a non-empty --out")
    p.add_argument(
        "--lifter", default=None, help="lifter checkpoint for the 3D yardstick (default: the shipped one, if any)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_pipeline_args(p)
    p.set_defaults(func=_cmd_eval_real)

    p = sub.add_parser("demo", help="run the whole pipeline on the shipped public-domain photo")
    p.add_argument("--out", default="hmdiff_demo", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out that hmdiff did not write")
    add_pipeline_args(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from hmdiff_ros.errors import one_line
    from hmdiff_ros.image import MAX_SIDE, check_image
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.pipeline import build_pipeline
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.pipeline.stream import stream_figures
    from hmdiff_ros.runtime.backends import CONCRETE_BACKENDS
    from hmdiff_ros.runtime.bench import (
        bench_pipeline,
        check_report,
        pipeline_rows,
        tiled_people,
        write_pipeline_report,
    )

    if args.report:  # refused before the benchmark runs, not after
        check_report(args.report, force=args.force)
    compare = [b.strip() for b in args.compare.split(",") if b.strip()]
    unknown = [b for b in compare if b not in CONCRETE_BACKENDS]
    if unknown:
        raise UsageError(f"--compare: unknown backends {unknown}; choose from {', '.join(CONCRETE_BACKENDS)}")
    image = check_image(read_image(args.image or DEMO_IMAGE), f"--image '{args.image or DEMO_IMAGE}'")
    widest = max(args.people) * image.shape[1]  # N people: the image N times side by side
    if widest > MAX_SIDE:
        raise UsageError(
            f"--people {max(args.people)}: the image '{args.image or DEMO_IMAGE}' repeated side by side is {widest} "
            f"pixels wide, more than the pipeline takes ({MAX_SIDE}); use fewer --people or a smaller --image"
        )
    cfg = pipeline_config_from(args)
    check_model_paths(args)  # the last check before the models load (seconds)
    results, ran = [], []
    for backend in [cfg.backend, *compare]:
        if backend in ran:
            continue
        # a comparison backend must not fall back: its rows would carry another's figures
        pipe = build_pipeline(replace(cfg, backend=backend), args.checkpoint, fallback=backend == cfg.backend)
        try:
            ran.append(pipe.model.backend)
            if backend != cfg.backend and pipe.model.backend in ran[:-1]:
                continue  # --backend already ran it
            for people in dict.fromkeys(args.people):
                frame, boxes = tiled_people(image, people)
                try:
                    result = bench_pipeline(pipe, frame, repeats=args.repeats, boxes=boxes)
                except ValueError as exc:  # no person found: name the image
                    raise ValueError(f"--image '{args.image or DEMO_IMAGE}': {one_line(exc)}") from None
                result["stream"] = stream_figures(pipe, frame, boxes, repeats=args.repeats)
                results.append(result)
        finally:
            pipe.prior.close()
    rows = [row for result in results for row in pipeline_rows(result)]
    if args.report:
        settings = {
            "image": args.image or "the demo photo",
            "steps": cfg.steps,
            "hypotheses": cfg.hypotheses,
            "dat": cfg.dat.mode,
        }
        write_pipeline_report(rows, args.report, settings, force=args.force)
    if args.json:
        print(json.dumps(rows))
        return 0
    for result in results:
        print(f"{result['people']} person(s):")
        for r in result["stages"]:
            print(f"  {r['stage']:<9} p50 {r['p50_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms")
        print(
            f"  end to end: {result['fps']} FPS ({result['people']} person(s), {result['steps']} steps, DAT "
            f"{result['dat']}, {result['hypotheses']} hypotheses, {result['backend']}, {result['threads']} threads)"
        )
        print(
            f"  stream (prior of the next frame beside the model): {result['stream']['fps']} FPS, latency p50 "
            f"{result['stream']['p50_ms']:.1f} ms"
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.run import load_boxes, run
    from hmdiff_ros.pipeline.tracking import TrackerConfig

    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else None
    boxes = load_boxes(args.boxes) if args.boxes else None
    tracking = None if args.no_track else TrackerConfig(smooth=not args.no_smooth)
    records = run(
        args.paths,
        args.out,
        pipeline_config_from(args),
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
    return report_failures(records)


def _cmd_eval_real(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.pipeline import build_pipeline
    from hmdiff_ros.study.eval_real import check_out, evaluate_real
    from hmdiff_ros.study.real_data import read_real

    # every input is checked before the models load (seconds): a bad file or option is named at once
    cfg = pipeline_config_from(args)
    check_model_paths(args)
    if args.out is not None:
        check_out(args.out, args.force)
    data = read_real(args.data)
    lifter = lifter_from(args)
    pipe = build_pipeline(cfg, args.checkpoint)
    try:
        result = evaluate_real(pipe, data, out=args.out, progress=not args.json, force=args.force, lifter=lifter)
    finally:
        pipe.prior.close()
    if args.json:
        print(json.dumps(result))
    else:
        fmt = lambda v, unit="": "n/a" if v is None else f"{v}{unit}"  # noqa: E731
        both = lambda k, unit="": f"{fmt(result[k], unit)} (prior {fmt(result['prior_' + k])})"  # noqa: E731
        print(
            f"3D frames {result['num_frames_3d']}: MPJPE {both('mpjpe_mm', ' mm')}, "
            f"PA-MPJPE {both('pa_mpjpe_mm', ' mm')}; 2D people {result['num_people_2d']}: "
            f"PCK@0.1 {both('pck_at_0.1')}"
        )
        if result["lifter_mpjpe_mm"] is not None:
            print(
                f"  lifter (3D yardstick): MPJPE {fmt(result['lifter_mpjpe_mm'], ' mm')}, "
                f"PA-MPJPE {fmt(result['lifter_pa_mpjpe_mm'], ' mm')}"
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.run import DEMO_IMAGE, run

    records = run([str(DEMO_IMAGE)], args.out, pipeline_config_from(args), progress=False, force=args.force)
    for r in records:
        print(json.dumps({"path": r["path"], "backend": r["backend"], "people": len(r["people"]), "error": r["error"]}))
    if not any(r["error"] for r in records):
        names = sorted(p.name for p in Path(args.out).iterdir() if not p.name.startswith("."))
        print(f"demo outputs written to {args.out}/: {', '.join(names)}")
    return report_failures(records)
