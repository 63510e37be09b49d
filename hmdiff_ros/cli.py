"""The ``hmdiff`` command line: one sub-command per job, heavy imports only when used."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List


def _cmd_info(args: argparse.Namespace) -> int:
    from hmdiff_ros.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _cmd_assets_build(args: argparse.Namespace) -> int:
    from hmdiff_ros.body.build_topology import TopologyBuildConfig, build_topology

    cfg = TopologyBuildConfig(
        coarse_vertices=args.coarse_vertices, neighbours=args.neighbours,
        fit_samples=args.fit_samples, eval_samples=args.eval_samples, seed=args.seed,
    )  # fmt: skip
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hmdiff", description="HMDiff human mesh recovery for ROS 2.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, backends, body models and GPUs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    assets = sub.add_parser("assets", help="build or check the coarse topology asset").add_subparsers(
        dest="assets_command", required=True
    )
    p = assets.add_parser("build", help="build the topology asset from Anny (needs the [anny] extra)")
    p.add_argument("--out", default=None, help="output .npz (default: the packaged asset)")
    p.add_argument("--coarse-vertices", type=int, default=600)
    p.add_argument("--neighbours", type=int, default=8)
    p.add_argument("--fit-samples", type=int, default=768)
    p.add_argument("--eval-samples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_assets_build)

    p = assets.add_parser("check", help="round-trip error full->coarse->full on posed Anny bodies, in mm")
    p.add_argument("--asset", default=None, help="asset .npz (default: the packaged one)")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_assets_check)
    return parser


def main(argv: List[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if getattr(args, "out", "unset") is None:
        from hmdiff_ros.body.topology import DEFAULT_ASSET

        args.out = DEFAULT_ASSET
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"hmdiff {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
