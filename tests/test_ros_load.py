"""The node under load on the real ROS 2 core: a publisher at 30 FPS for 60 s (the demo photo,
and a real video where ``../shared/data/eval-real`` is present) against ``hmdiff_node`` in its
own process, measured with ``hmdiff bench-node``'s code. The bounds catch a queue (latency
growing over the run), lost accounting, failures, a leak and a node much slower than the work it
does: its latency is bounded by the same frames' time through the pipeline alone, measured in
the same test just before and after the load, not by a wall-clock figure of some machine (the
figures are printed, and docs/ros.md quotes ``hmdiff bench-node``)."""

import contextlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

HAVE_ROS = importlib.util.find_spec("rclpy") is not None and importlib.util.find_spec("hmdiff_msgs") is not None
needs_ros = pytest.mark.skipif(
    not HAVE_ROS, reason="rclpy and the built hmdiff_msgs are not available (needs a ROS 2 workspace)"
)

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "eval-real" / "videos" / "mmhuman3d" / "single_person_demo.mp4"
FPS, SECONDS = 30.0, 60.0
# A result's age (image stamp to arrival) is at most the frame in flight's remaining time plus
# its own, about two frame times; measured here, p99 over the slower of the pipeline's p50 frame
# times alone: 1.95 (demo, 71 ms against 36) and 1.68 (video, 66 against 39) on a quiet machine,
# 2.06 and 2.23 at a load average of 8. The bound allows about 3x that for the two cores the
# node shares with the publisher and with whatever else runs; a node that takes 10x the
# pipeline's time per frame (measured: 14.3), or queues frames, is far beyond it.
LATENCY_P99_OVER_FRAME = 6.0


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

    name = "demo" if source == "demo" else str(VIDEO)
    with _pipeline_alone(name) as frame_ms:
        before = frame_ms()
        result = run_load(name, FPS, SECONDS, max_side=960)
        after = frame_ms()  # the machine's load may have changed over the minute: the slower of the two
    frame = max(before, after)
    fig = result.figures()
    print(format_load(fig))
    print(json.dumps(fig))
    print(
        f"the pipeline alone: {before:.1f} ms per frame before, {after:.1f} after (p50); "
        f"p99 latency / the slower: {fig['latency_p99_ms'] / frame:.2f}"
    )
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
    assert fig["latency_p99_ms"] < LATENCY_P99_OVER_FRAME * frame, (before, after, fig)
    assert fig["latency_last_p50_ms"] < fig["latency_first_p50_ms"] + 500, fig
    # memory flat once running (a leak of one 512 x 512 frame per frame would be ~1 GB here)
    assert fig["rss_growth_mib"] < 50, fig


@contextlib.contextmanager
def _pipeline_alone(source: str, warmup: int = 5, frames: int = 30):
    """A callable giving the p50 time (ms) of one frame of ``source`` through the pipeline alone,
    in this process, as the node builds it (its defaults, the prior following the person) on
    the frames the load publishes: what the node's work per frame costs on this machine now."""
    from hmdiff_ros.pipeline.config import PipelineConfig
    from hmdiff_ros.pipeline.pipeline import build_pipeline
    from hmdiff_ros.ros.load import load_frames

    images = load_frames(source, max_side=960)
    pipe = build_pipeline(PipelineConfig(), video=True)

    def frame_ms() -> float:
        times = []
        for i in range(warmup + frames):
            start = time.perf_counter()
            pipe.run(images[i % len(images)])
            times.append(time.perf_counter() - start)
        return float(np.median(times[warmup:])) * 1000.0

    try:
        yield frame_ms
    finally:
        pipe.prior.close()
