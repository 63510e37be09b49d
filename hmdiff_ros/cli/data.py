"""``hmdiff assets`` (the coarse topology asset) and ``hmdiff data`` (synthetic data)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hmdiff_ros.cli import study
from hmdiff_ros.cli.common import (
    POSITIVE,
    number,
    refuse_existing,
    with_common_args,
)


def add_parsers(sub) -> None:
    from hmdiff_ros.data.observe import PRIOR_KINDS

    assets = sub.add_parser("assets", help="build or check the coarse topology asset").add_subparsers(
        dest="assets_command", required=True
    )
    assets.add_parser = with_common_args(assets.add_parser)
    p = assets.add_parser("build", help="build the topology asset from Anny (needs the [anny] extra)")
    p.add_argument("--out", default=None, help="output .npz (default: the packaged asset)")
    p.add_argument("--force", action="store_true", help="replace an existing asset (the packaged one too)")
    p.add_argument("--coarse-vertices", **POSITIVE, default=600)
    p.add_argument("--neighbours", **POSITIVE, default=8)
    p.add_argument("--fit-samples", **POSITIVE, default=768)
    p.add_argument("--eval-samples", **POSITIVE, default=128)
    p.add_argument("--seed", **number(int, 0), default=0)
    p.set_defaults(func=_cmd_assets_build)

    p = assets.add_parser("check", help="round-trip error full->coarse->full on posed Anny bodies, in mm")
    p.add_argument("--asset", default=None, help="asset .npz (default: the packaged one)")
    p.add_argument("--samples", **POSITIVE, default=256)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_assets_check)

    data = sub.add_parser("data", help="synthetic training data").add_subparsers(dest="data_command", required=True)
    data.add_parser = with_common_args(data.add_parser)
    p = data.add_parser("make", help="write a fixed synthetic split to a folder")
    p.add_argument("--split", default="test", help="name recorded in the split (e.g. test, val)")
    p.add_argument("--num", **POSITIVE, required=True, help="number of samples")
    p.add_argument("--seed", **number(int, 0), default=0)
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--force", action="store_true", help="replace the split in an existing --out folder")
    p.add_argument("--batch", **POSITIVE, default=256, help="samples generated at once")
    p.add_argument("--full", action="store_true", help="also store full-resolution meshes (13,718 vertices)")
    p.add_argument(
        "--bodies",
        choices=("train", "test"),
        default=None,
        help="test: bodies of the held-out test bank and the held-out seed space (poses, cameras); train: the "
        "training bank and training streams (default: test for --split test, train for any other split)",
    )
    p.add_argument(
        "--prior",
        choices=PRIOR_KINDS,
        default="hand",
        help="prior simulator: hand-set (default), fitted to MediaPipe in the prior study, mixed (each person one of "
        "the two), chain (3D errors along the kinematic chain) or graded (any of the three, errors scaled from "
        "nearly right to full; docs/data.md)",
    )
    p.add_argument(
        "--families",
        choices=("default", "robot", "mocap"),
        default="default",
        help="pose-family weights: default, robot (adds picking up, kneeling, floor sitting, desk reaching), "
        "or mocap (robot with 30%% retargeted motion capture)",
    )
    p.set_defaults(func=_cmd_data_make)
    p = data.add_parser(
        "mocap", help="retarget BVH motion capture (the CMU library's iClone re-export) to Anny poses (.npz)"
    )
    p.add_argument("--bvh", required=True, help="folder of .bvh files (searched recursively)")
    p.add_argument("--out", default=None, help="output .npz (default: the packaged asset the mocap family draws)")
    p.add_argument("--force", action="store_true", help="replace an existing --out (the packaged asset too)")
    p.add_argument("--fps", **number(float, 0.1, 120), default=6.0, help="frames kept per second of capture")
    p.add_argument(
        "--max-angle", **number(float, 0.1, 180), default=10.0, help="drop frames fitted worse than this (degrees)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_data_mocap)
    p = data.add_parser("bench", help="samples/second of the data engine at the training resolution")
    p.add_argument("--batch", **POSITIVE, default=256)
    p.add_argument("--batches", **POSITIVE, default=12, help="timed batches (after warm-up)")
    p.add_argument("--workers", **number(int, 0, 64), default=2, help="data-loader processes (0: in process)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_data_bench)
    p = data.add_parser("sheet", help="contact sheet PNG of random synthetic bodies")
    p.add_argument("--out", default="docs/images/pose_contact_sheet.png")
    p.add_argument("--force", action="store_true", help="replace an existing image")
    p.add_argument("--num", **number(int, 1, 1024), default=64)
    p.add_argument("--seed", **number(int, 0), default=0)
    p.add_argument("--tile", **number(int, 32, 2000), default=200, help="tile size in pixels")
    p.add_argument(
        "--families",
        default=None,
        help="comma-separated pose families to show, equally often (default: all, as trained)",
    )
    p.set_defaults(func=_cmd_data_sheet)
    study.add_parsers(data)


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
    refuse_existing([Path(args.out), Path(args.out).with_suffix(".json")], "--out", args.force)
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
    from dataclasses import replace

    from hmdiff_ros.data.engine import SyntheticEngine, stream_config
    from hmdiff_ros.data.shapes import TEST_BANK, BankConfig
    from hmdiff_ros.data.store import write_split

    bodies = args.bodies or ("test" if args.split == "test" else "train")
    bank = replace(TEST_BANK if bodies == "test" else BankConfig(), full=args.full)
    engine = SyntheticEngine(replace(stream_config(args.prior, args.families), bank=bank, full=args.full))
    out = write_split(engine, args.out, args.num, args.seed, args.split, batch=args.batch, force=args.force)
    print(json.dumps({"out": str(out), "split": args.split, "num": args.num, "seed": args.seed}))
    return 0


def _cmd_data_mocap(args: argparse.Namespace) -> int:
    import numpy as np

    from hmdiff_ros.data.engine import SyntheticConfig
    from hmdiff_ros.data.mocap import retarget_clips, save_poses
    from hmdiff_ros.data.poses import MOCAP_POSES
    from hmdiff_ros.data.posing import FastPoser
    from hmdiff_ros.data.shapes import load_or_build_shape_bank

    out = Path(args.out) if args.out else MOCAP_POSES
    refuse_existing([out], "--out", args.force)
    if out.suffix != ".npz":
        raise ValueError(f"--out '{out}' must end in .npz")
    root = Path(args.bvh)
    if not root.is_dir():
        raise ValueError(f"--bvh '{root}' is not a folder of .bvh files")
    paths = sorted(root.rglob("*.bvh"))
    if not paths:
        raise ValueError(f"--bvh '{root}' holds no .bvh files")
    bank = load_or_build_shape_bank(SyntheticConfig().bank)
    result = retarget_clips(paths, FastPoser(bank), list(bank.bone_labels), args.fps, args.max_angle)
    result["clips"] = np.asarray([str(p.relative_to(root)) for p in paths])
    save_poses(out, result)
    summary = {
        "out": str(out),
        "clips": len(paths),
        "poses": int(len(result["pose"])),
        "dropped": int(result["dropped"]),
        "worst_deg_p50_p90": [round(float(v), 2) for v in np.percentile(result["worst_deg"], [50, 90])],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['poses']} poses from {summary['clips']} clips ({summary['dropped']} frames dropped: fitted worse "
            f"than {args.max_angle} degrees) -> {out}"
        )
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
    from hmdiff_ros.data.poses import family_weights
    from hmdiff_ros.data.sheet import check_sheet_args, contact_sheet

    families = None if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
    if families is not None:
        family_weights(families)  # a ValueError naming the families, before the engine is built
    check_sheet_args(args.num, args.out, tile=args.tile)  # before the engine is built
    refuse_existing([Path(args.out)], "--out", args.force)
    print(contact_sheet(SyntheticEngine(), args.num, args.seed, args.out, tile=args.tile, families=families))
    return 0
