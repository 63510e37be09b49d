"""The node under load on the real ROS 2 core: a publisher at 30 FPS for 60 s (the demo photo,
and a real video where ``../shared/data/eval-real`` is present) against ``hmdiff_node`` in its
own process, measured with ``hmdiff bench-node``'s code. The bounds catch a queue (latency
growing over the run), lost accounting, failures and a leak; they are not timings (the figures
are printed, and docs/ros.md quotes ``hmdiff bench-node``)."""

import importlib.util
import json
from pathlib import Path

import pytest

HAVE_ROS = importlib.util.find_spec("rclpy") is not None and importlib.util.find_spec("hmdiff_msgs") is not None
needs_ros = pytest.mark.skipif(
    not HAVE_ROS, reason="rclpy and the built hmdiff_msgs are not available (needs a ROS 2 workspace)"
)

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "eval-real" / "videos" / "mmhuman3d" / "single_person_demo.mp4"
FPS, SECONDS = 30.0, 60.0


def test_bench_node_refuses_bad_options_in_one_line(capsys):
    from hmdiff_ros.cli import main

    assert main(["bench-node", "--param", "hypothesis:=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert ("needs ROS 2" in err) if not HAVE_ROS else ("NAME:=VALUE" in err and "hypothesis:=3" in err)
    if HAVE_ROS:
        assert main(["bench-node", "--fps", "0"]) == 2
        assert "--fps" in capsys.readouterr().err


@needs_ros
@pytest.mark.parametrize("source", ["demo", "video"])
def test_the_node_keeps_up_with_a_30_fps_stream_without_a_queue_or_a_leak(source):
    if source == "video" and not VIDEO.is_file():
        pytest.skip(f"the real video is not here ({VIDEO}: the eval-real data sits beside the checkout)")
    from hmdiff_ros.ros.load import format_load, run_load

    result = run_load("demo" if source == "demo" else str(VIDEO), FPS, SECONDS, max_side=960)
    fig = result.figures()
    print(format_load(fig))
    print(json.dumps(fig))
    assert fig["node_exit_code"] == 0, "the node did not end cleanly on SIGINT"
    # the publisher held its rate, so the figures below are about the node
    assert fig["published"] >= 0.95 * FPS * SECONDS
    # every frame the node received is accounted for: processed, dropped (newest wins) or failed;
    # at most the frames in flight at the window's two ends differ
    assert fig["received"] >= 0.8 * fig["published"], "frames lost between the publisher and the node"
    assert abs(fig["received"] - (fig["processed"] + fig["dropped"] + fig["failed"])) <= 2
    assert fig["failed"] == 0, fig["failed_reasons"]
    assert fig["results"] >= fig["processed"] - 2 and fig["results"] > 0
    assert fig["people_per_result"] >= 0.9  # one person in every frame of both sources
    if fig["results_per_s"] < 0.9 * FPS:  # slower than the camera: the newest frame wins, counted
        assert fig["dropped"] >= 0.5 * (fig["received"] - fig["processed"])
    # no queue: a queue at 30 FPS in front of a slower model adds most of a second per second,
    # tens of seconds by the end; newest-frame processing keeps the age flat
    assert fig["latency_p99_ms"] < 3000, fig
    assert fig["latency_last_p50_ms"] < fig["latency_first_p50_ms"] + 500, fig
    # memory flat once running (a leak of one 512 x 512 frame per frame would be ~1 GB here)
    assert fig["rss_growth_mib"] < 50, fig
