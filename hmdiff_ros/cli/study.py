"""``hmdiff data prior-study``, ``prior-study-report``, ``fit-prior`` and ``pose-coverage``:
how MediaPipe fails on rendered people, the prior simulator fitted to it, and the pose
families against real frames."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hmdiff_ros.cli.common import POSITIVE, number, refuse_existing

SHEET = "docs/images/prior_study_renders.png"  # the prior study's contact sheet, shown in its report


def add_parsers(data) -> None:
    """The study's commands under ``hmdiff data`` (``data``: its sub-parsers)."""
    p = data.add_parser(
        "pose-coverage",
        help="which synthetic pose family each real frame's person resembles, and which no family covers",
    )
    p.add_argument("--data", required=True, help="folder of real frames with ground truth (as for 'hmdiff eval-real')")
    p.add_argument("--per-family", **number(int, 16, 8192), default=512, help="synthetic reference samples per family")
    p.add_argument("--families", default=None, help="comma-separated pose families to compare with (default: all)")
    p.add_argument("--seed", **number(int, 0), default=0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_data_pose_coverage)
    p = data.add_parser(
        "prior-study",
        help="render synthetic people, run MediaPipe on them as the pipeline does, and record its output beside "
        "the ground truth and the simulated prior (resumable)",
    )
    p.add_argument("--num", **POSITIVE, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output folder; the same command again resumes it")
    p.add_argument("--seed", **number(int, 0), default=0)
    p.add_argument("--workers", **POSITIVE, default=None, help="worker processes (default: all cores)")
    p.add_argument("--chunk", **POSITIVE, default=None, help="samples per chunk file (default: study_config.CHUNK)")
    p.add_argument("--force", action="store_true", help="replace another study in --out")
    p.add_argument("--json", action="store_true", help="print JSON (and no progress)")
    p.add_argument(
        "--sheet", default=None, help="also write a PNG contact sheet of the first 12 samples as MediaPipe saw them"
    )
    p.add_argument(
        "--bodies",
        choices=("test", "train"),
        default="test",
        help="test: held-out bodies (the selection and test sets; default); train: training bodies and a stream "
        "of their own, training data for 'hmdiff train --study'",
    )
    p.add_argument(
        "--held-out-only",
        action="store_true",
        help="make only the chunks of the held-out part (the last 20 %%: what eval-study reads); "
        "the same command without it makes the rest later",
    )
    p.set_defaults(func=_cmd_data_prior_study)
    p = data.add_parser(
        "prior-study-report",
        help="analyse a prior study: MediaPipe beside the simulated prior (markdown, figures, JSON)",
    )
    p.add_argument("--study", required=True, help="folder of a study made by 'hmdiff data prior-study'")
    p.add_argument(
        "--out",
        default="docs/prior_study.md",
        help="markdown report; the figures and the JSON go to the folder of the same name beside it",
    )
    p.add_argument("--sheet", default=SHEET, help="contact sheet to show, if it exists")
    p.add_argument("--partial", action="store_true", help="report on the chunks there of an unfinished study")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_data_prior_study_report)
    p = data.add_parser(
        "fit-prior",
        help="fit the prior simulator (PriorNoiseConfig(kind='fitted')) to a prior study's MediaPipe errors",
    )
    p.add_argument("--study", required=True, help="folder of a study made by 'hmdiff data prior-study'")
    p.add_argument("--out", default=None, help="parameter .npz (default: the packaged one)")
    p.add_argument("--train-fraction", **number(float, 0.01, 0.99), default=0.8, help="first part, by index, fitted on")
    p.add_argument("--extract", default=None, help="also write the held-out extract of the agreement test here")
    p.add_argument("--extract-num", **POSITIVE, default=1500, help="held-out samples in --extract")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_data_fit_prior)


def _cmd_data_pose_coverage(args: argparse.Namespace) -> int:
    from hmdiff_ros.data.engine import SyntheticEngine
    from hmdiff_ros.data.poses import FAMILY_NAMES, family_weights
    from hmdiff_ros.study.pose_coverage import pose_coverage

    if not Path(args.data).is_dir():
        raise ValueError(f"--data '{args.data}' is not a folder")
    names = FAMILY_NAMES if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
    family_weights(names)  # a ValueError naming the families, before the engine is built
    result = pose_coverage(args.data, SyntheticEngine(), per_family=args.per_family, seed=args.seed, names=names)
    if args.json:
        print(json.dumps(result))
        return 0
    for kind in ("3d", "2d"):
        if kind not in result:
            continue
        r = result[kind]
        print(f"{kind.upper()}: {r['covered']} of {r['num']} poses covered; nearest families: {r['nearest']}")
        for p in r["poses"]:
            mark = "" if p["covered"] else "  NOT COVERED"
            print(
                f"  {p['image']}: {p['family']} {p['distance_deg']:.1f} deg (its own 95 %: {p['family_p95_deg']:.1f})"
                f"{mark}"
            )
    return 0


def _cmd_data_prior_study(args: argparse.Namespace) -> int:
    import os
    import sys
    import time

    from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior
    from hmdiff_ros.study.prior_study import run_prior_study
    from hmdiff_ros.study.study_config import CHUNK, StudyConfig
    from hmdiff_ros.study.study_sheet import study_sheet

    if args.sheet is not None and not args.sheet.lower().endswith(".png"):
        raise ValueError(f"--sheet '{args.sheet}' must end in .png")
    cfg = StudyConfig.of_bodies(args.bodies, num=args.num, seed=args.seed, chunk=args.chunk or CHUNK)
    if args.held_out_only and cfg.bodies == "train":
        raise ValueError(
            "--held-out-only is for a study of held-out bodies; a study of training bodies has no held-out part"
        )
    workers = args.workers or os.cpu_count() or 1
    progress = "none" if args.json else "bar" if sys.stderr.isatty() else "lines"
    start = time.perf_counter()
    still = {"static_image_mode": True}  # as the pipeline runs MediaPipe on single frames (default thresholds)
    summary = run_prior_study(
        args.out,
        cfg,
        MediaPipePrior,
        still,
        workers=workers,
        force=args.force,
        progress=progress,
        held_out_only=args.held_out_only,
    )
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    if args.sheet is not None:
        summary["sheet"] = str(study_sheet(args.sheet, cfg, MediaPipePrior, still))
    if args.json:
        print(json.dumps(summary))
    else:
        made = summary["made"]
        per = (
            f"; per sample and worker: engine {summary['generate_ms']:.0f} ms, render {summary['render_ms']:.0f} ms, "
            f"MediaPipe {summary['prior_ms']:.0f} ms"
            if made
            else ""
        )
        print(
            f"prior study '{summary['out']}': {summary['num']} samples in {summary['chunks']} chunks "
            f"({summary['chunks_made']} made now with {workers} workers in {summary['wall_s']:.0f} s, "
            f"{summary['chunks_skipped']} already done); MediaPipe detected the person in "
            f"{summary['detection_rate']:.1%} of the samples{per}"
        )
        if args.sheet is not None:
            print(f"contact sheet: {summary['sheet']}")
    return 0


def _cmd_data_prior_study_report(args: argparse.Namespace) -> int:
    from hmdiff_ros.study.prior_report import report_paths, write_prior_study_report

    refuse_existing(report_paths(args.out), "--out", args.force)
    command = f"hmdiff data prior-study-report --study {args.study} --out {args.out}"
    command += f" --sheet {args.sheet}" if args.sheet != SHEET else ""
    command += " --partial" if args.partial else ""
    summary = write_prior_study_report(
        args.study, args.out, partial=args.partial, report_command=command, sheet=args.sheet
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"prior study report '{summary['report']}' ({len(summary['figures'])} figures, numbers in "
            f"'{summary['json']}'): {summary['num']:,} of {summary['num_asked']:,} samples, MediaPipe detected "
            f"{summary['detected_share']:.1%}"
        )
    return 0


def _cmd_data_fit_prior(args: argparse.Namespace) -> int:
    from hmdiff_ros.data.prior_model import DEFAULT_PRIOR_MODEL
    from hmdiff_ros.data.study_reader import load_prior_study
    from hmdiff_ros.study.prior_fit import fit_study

    out = Path(args.out) if args.out else DEFAULT_PRIOR_MODEL
    refuse_existing([out], "--out", args.force)
    if args.extract:
        refuse_existing([Path(args.extract)], "--extract", args.force)
    summary = fit_study(load_prior_study(args.study), out, args.train_fraction, args.extract, args.extract_num)
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0
