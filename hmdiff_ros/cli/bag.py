"""``hmdiff bag``: the pipeline over a rosbag2, without ROS."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from hmdiff_ros import defaults
from hmdiff_ros.cli.common import (
    POSITIVE,
    add_pipeline_args,
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


def _cmd_bag(args: argparse.Namespace) -> int:
    from hmdiff_ros.pipeline.pipeline import build_pipeline
    from hmdiff_ros.pipeline.tracking import Tracker, TrackerConfig
    from hmdiff_ros.ros.bag import process_bag

    pipe = build_pipeline(pipeline_config_from(args), args.checkpoint, video=True)  # a bag is one stream
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
