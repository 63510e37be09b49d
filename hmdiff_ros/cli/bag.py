"""``hmdiff bag``: the pipeline over a rosbag2, without ROS; ``hmdiff bench-node``: the ROS 2
node under a camera-rate stream (needs a sourced ROS 2 workspace)."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from hmdiff_ros import defaults
from hmdiff_ros.cli.common import (
    POSITIVE,
    add_pipeline_args,
    check_model_paths,
    pipeline_config_from,
)


def add_parsers(sub) -> None:
    p = sub.add_parser("bag", help="run the pipeline over a rosbag2 (sqlite3 or MCAP) into a new bag, without ROS")
    p.add_argument("input", help="input bag folder (or .mcap / .db3 file)")
    p.add_argument("output", help="output bag folder (must not exist, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output bag (a rosbag2 folder only)")
    p.add_argument("--image-topic", default=None, help="default: the bag's only Image/CompressedImage topic")
    p.add_argument("--camera-info-topic", default=None, help="default: the bag's only CameraInfo topic, if any")
    p.add_argument("--distro", choices=("humble", "jazzy"), default="humble", help="message definitions to use")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--namespace", default="/hmdiff", help="prefix of the output topics")
    p.add_argument(
        "--mesh", choices=defaults.MESH_RESOLUTIONS, default=defaults.MESH_RESOLUTION, help="mesh in the markers"
    )
    p.add_argument("--max-frames", **POSITIVE, default=None)
    p.add_argument("--no-track", action="store_true", help="no track ids or smoothing")
    p.add_argument("--no-tf", action="store_true", help="no /tf frames per person")
    p.add_argument("--tf-prefix", default=defaults.TF_PREFIX, help="TF frames <prefix>_<id> ('body': REP-155 names)")
    p.add_argument("--hri", action="store_true", help="also write /humans/bodies/tracked (hri_msgs/IdsList, REP-155)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_pipeline_args(p)
    p.set_defaults(func=_cmd_bag)

    p = sub.add_parser(
        "bench-node",
        help="the ROS 2 node under a camera-rate stream: results/s, dropped frames, latency, memory (needs ROS 2)",
    )
    p.add_argument(
        "--source", default="demo", help="'demo' (the shipped photo), an image, or a video file (its frames, looped)"
    )
    p.add_argument("--fps", type=float, default=30.0, help="frames published per second")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the measured window")
    p.add_argument("--max-side", type=int, default=960, help="scale frames down to this many pixels (0: as they are)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="a node parameter, as after ros2 run's -p (repeatable; e.g. backend:=onnxruntime)",
    )
    p.add_argument(
        "--faults",
        action="store_true",
        help="a soak: the camera stops, changes resolution and CameraInfo, restarts, sends frames out of order "
        "and in bursts, in cycles for --minutes; per phase and a pass/fail verdict (exit code 1 on fail)",
    )
    p.add_argument("--minutes", type=float, default=60.0, help="with --faults: length of the run (whole cycles)")
    p.add_argument(
        "--save", default=None, metavar="PATH.json", help="with --faults: write the JSON there and a .md beside it"
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_cmd_bench_node)


def _cmd_bag(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.pipeline import build_pipeline
    from hmdiff_ros.pipeline.tracking import Tracker, TrackerConfig
    from hmdiff_ros.ros.bag import check_bag, process_bag

    # every input is checked before the model loads (seconds): a bad bag or option is named at once
    cfg = pipeline_config_from(args)
    check_model_paths(args)
    check_bag(
        args.input,
        args.output,
        image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic,
        distro=args.distro,
        storage=args.storage,
        namespace=args.namespace,
        tf_prefix=args.tf_prefix,
        max_frames=args.max_frames,
        force=args.force,
    )
    pipe = build_pipeline(cfg, args.checkpoint, video=True)  # a bag is one stream
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


def _cmd_bench_node(args: argparse.Namespace) -> int:
    import importlib.util

    from hmdiff_ros.ros.params import PARAMETERS

    if importlib.util.find_spec("rclpy") is None or importlib.util.find_spec("hmdiff_msgs") is None:
        raise ValueError(
            "bench-node needs ROS 2 (rclpy) and the built hmdiff_msgs: source your ROS 2 setup and the workspace "
            '(README, "With a camera in ROS 2")'
        )
    if not (0 < args.fps <= 240) or not (0 < args.seconds <= 3600) or args.max_side < 0:
        raise ValueError(
            f"--fps must be in (0, 240], --seconds in (0, 3600] and --max-side >= 0, got "
            f"{args.fps:g}, {args.seconds:g}, {args.max_side}"
        )
    if args.faults and (not (2 <= args.minutes <= 600) or args.fps > 80):
        raise ValueError(
            f"with --faults, --minutes must be in [2, 600] and --fps at most 80 (its burst is 3x), got "
            f"{args.minutes:g} and {args.fps:g}"
        )
    if (args.minutes != 60.0 or args.save) and not args.faults:
        raise ValueError("--minutes and --save go with --faults (--seconds sets the length without faults)")
    params = {}
    for item in args.param:
        name, sep, value = item.partition(":=")
        if not sep or name not in PARAMETERS:
            raise ValueError(
                f"--param must be NAME:=VALUE with a parameter of the node (README, Parameters), got {item!r}"
            )
        params[name] = value
    from hmdiff_ros.ros.load import format_load, run_load

    log = (lambda text: None) if args.json else (lambda text: print(text, file=sys.stderr, flush=True))
    if args.faults:
        return _soak(args, params, log)
    result = run_load(args.source, args.fps, args.seconds, params, args.max_side, log)
    figures = result.figures()
    print(json.dumps(figures) if args.json else format_load(figures))
    return 0 if figures["node_exit_code"] == 0 else 1


def _soak(args: argparse.Namespace, params: dict, log) -> int:
    from pathlib import Path

    from hmdiff_ros.ros.soak import run_soak
    from hmdiff_ros.ros.soak_report import format_soak, soak_markdown

    figures = run_soak(args.source, args.fps, args.minutes, params, log=log).figures()
    print(json.dumps(figures) if args.json else format_soak(figures))
    if args.save:
        path = Path(args.save)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=1) + "\n")
        command = f"hmdiff bench-node --faults --source {args.source} --fps {args.fps:g} --minutes {args.minutes:g}"
        command += "".join(f" --param {item}" for item in args.param) + f" --save {args.save}"
        path.with_suffix(".md").write_text(soak_markdown(figures, command))
        log(f"written: {path} and {path.with_suffix('.md')}")
    return 0 if figures["verdict"]["passed"] else 1
