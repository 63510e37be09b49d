"""The node under faults (``hmdiff bench-node --faults``): how a soak judges what it recorded
(ROS-free, on made-up records), and a 2-minute soak on the real ROS 2 core against
``hmdiff_node`` in its own process: two cycles of the fault schedule (the camera stops, changes
resolution and CameraInfo, its publishers restart, frames come out of order and twice, a burst
at 3x), asserting the soak's criteria: recovery within 1 s of each fault's end, no crash and
exit code 0 on SIGINT, no result that is not of its stamp's frame, memory flat after the
warm-up. The hour's run is the same command with ``--minutes 60`` (docs/ros.md, docs/bench)."""

import importlib.util
import json

import numpy as np
import pytest

from hmdiff_ros.ros.faults import CYCLE_S, HD, RECOVERY_S, SOAK_CYCLE, VGA, fit_intrinsics, soak_intrinsics
from hmdiff_ros.ros.soak_report import SoakResult, format_soak, soak_markdown

pytestmark = pytest.mark.ros

HAVE_RCLPY = importlib.util.find_spec("rclpy") is not None
HAVE_ROS = HAVE_RCLPY and importlib.util.find_spec("hmdiff_msgs") is not None
needs_ros = pytest.mark.skipif(
    not HAVE_ROS, reason="rclpy and the built hmdiff_msgs are not available (needs a ROS 2 workspace)"
)


def test_the_schedule_has_every_fault_and_a_minute_per_cycle():
    names = [name for name, _, _ in SOAK_CYCLE]
    faults = {"camera_stop", "resolution", "camera_info", "publisher_restart", "disorder", "burst"}
    assert faults <= set(names) and "normal" in names
    for a, b in zip(names, names[1:], strict=False):  # a normal phase between any two faults
        assert "normal" in (a, b), (a, b)
    for name, _, steps in SOAK_CYCLE:
        assert (name == "normal") != any(step[0] == "end" for step in steps), name  # every fault has an end
    assert CYCLE_S == 60.0


def test_fitted_intrinsics_tell_the_camera_keys_apart():
    keys = soak_intrinsics()
    rng = np.random.default_rng(0)
    joints = rng.uniform([-0.4, -0.9, 2.5], [0.4, 0.9, 3.5], (25, 3))
    for *_, fx, fy, cx, cy in keys.values():
        uv = np.stack([fx * joints[:, 0] / joints[:, 2] + cx, fy * joints[:, 1] / joints[:, 2] + cy], 1)
        fit = fit_intrinsics(joints, uv.astype(np.float32))  # keypoints_2d are float32
        assert np.allclose(fit, (fx, fy, cx, cy), atol=0.1)
    flat = np.array(list(keys.values()))[:, 2:]
    gaps = np.abs(flat[:, None] - flat[None]).max(-1) + np.eye(len(flat)) * 1e9
    assert gaps.min() > 5.0  # far beyond the 1-pixel match
    assert fit_intrinsics(joints[:2], uv[:2]) is None


def _soak(events_at=0.5, exit_code=0, rss=(700.0, 700.0)) -> SoakResult:
    """Two cycles of one normal and one camera_stop run (10 s each, from t=1000 s): frames at
    10 FPS, stamped when sent; a fault ends ``events_at`` s into each camera_stop run."""
    keys = soak_intrinsics()
    r = SoakResult("test", 10.0, 2, keys, rss_limit_mib=50.0, warmup_cycles=1, exit_code=exit_code)
    r.node = {"received": 400, "processed": 400, "dropped": 0, "failed": 0}
    t = 1000.0
    for cycle in range(2):
        for name in ("normal", "camera_stop"):
            events = [t + events_at] if name == "camera_stop" else []
            r.phases.append({"name": name, "what": "", "cycle": cycle, "start": t, "end": t + 10, "events": events})
            r.phases[-1]["published"] = 100
            for i in range(100):
                r.published[int((t + i / 10) * 1e9)] = (len(r.phases) - 1, "camera 640x480")
            r.memory += [(t + i, rss[cycle]) for i in range(10)]
            t += 10
    r.diagnostics = [(1000.0 + i, 0, "running", {"received": 10 * i, "processed": 10 * i}) for i in range(41)]
    return r


def _result(r: SoakResult, stamp_s: float, key="camera 640x480", people=1, delay=0.05):
    K = r.intrinsics[key][2:]
    r.results.append((stamp_s + delay, int(round(stamp_s * 1e9)), people, K, (320.0, 240.0)))


def test_a_soak_whose_node_did_everything_right_passes():
    r = _soak()
    for stamp in sorted(r.published):
        _result(r, stamp * 1e-9)
    fig = r.figures()
    assert fig["verdict"]["passed"], fig["verdict"]
    stop = next(p for p in fig["phases"] if p["phase"] == "camera_stop")
    assert stop["events"] == 2 and stop["recovery_max_s"] < 0.2 and stop["correct"] == 200
    assert stop["received"] == 200 and stop["latency_p50_ms"] == pytest.approx(50.0)
    assert fig["memory"]["rss_growth_mib"] == 0.0
    json.dumps(fig)  # machine-readable as it is
    assert "PASS" in format_soak(fig) and "**Verdict: pass**" in soak_markdown(fig)


@pytest.mark.parametrize(
    "fault, check",
    [
        ("late", "recovered"),  # the first correct result 1.5 s after the fault's end
        ("never", "recovered"),  # none after it
        ("unpublished", "stamps"),  # a result stamped with a time no image had
        ("other_size", "stamps"),  # a 640x480 stamp on a result made from a 1280x720 image
        ("exit", "exit_code_0"),
        ("leak", "memory_flat"),
        ("crash", "alive"),
    ],
)
def test_each_criterion_fails_the_verdict(fault, check):
    r = _soak(exit_code=1 if fault == "exit" else 0, rss=(700.0, 760.0) if fault == "leak" else (700.0, 700.0))
    for stamp in sorted(r.published):
        run, _ = r.published[stamp]
        phase, t = r.phases[run], stamp * 1e-9
        after_fault = phase["events"] and t >= phase["events"][0]
        if fault == "late" and after_fault and t < phase["events"][0] + 1.5:
            continue  # the node gave nothing (or nothing correct) for 1.5 s
        if fault == "never" and after_fault and phase["cycle"] == 1:
            _result(r, t, people=0)  # results with nobody in them
            continue
        _result(r, t)
    if fault == "unpublished":
        _result(r, 1012.345)
    if fault == "other_size":
        _result(r, sorted(r.published)[5] * 1e-9, key=f"camera {HD[0]}x{HD[1]}")
    if fault == "crash":
        r.crashed = "in camera_stop of cycle 2: exit code -11"
    fig = r.figures()
    verdict = fig["verdict"]
    assert not verdict["passed"] and not verdict["checks"][check], verdict
    assert [k for k, ok in verdict["checks"].items() if not ok] == [check]
    assert verdict["failures"] and "FAIL" in format_soak(fig)
    if fault == "late":
        stop = next(p for p in fig["phases"] if p["phase"] == "camera_stop")
        assert stop["recovery_max_s"] > RECOVERY_S
    if fault == "never":
        stop = next(p for p in fig["phases"] if p["phase"] == "camera_stop")
        assert stop["recovery_missing"] == 1 and stop["not_correct"] == {"no person": 95}
    if fault == "other_size":
        assert fig["phases"][0]["violations"] == 1 and fig["unpublished_stamps"] == 0


def test_a_result_with_the_previous_camera_info_is_not_correct_but_no_violation():
    r = _soak()
    for i, stamp in enumerate(sorted(r.published)):
        _result(r, stamp * 1e-9, key=f"other {VGA[0]}x{VGA[1]}" if i == 3 else "camera 640x480")
    fig = r.figures()
    assert fig["phases"][0]["not_correct"] == {"stale intrinsics (other 640x480 for camera 640x480)": 1}
    assert fig["phases"][0]["violations"] == 0 and fig["verdict"]["passed"]


@pytest.mark.skipif(HAVE_RCLPY, reason="rclpy is installed: the real core's soak below changes the image size")
def test_the_node_follows_a_change_of_image_size():
    """MediaPipe's video graph fails on a new image size and then on every frame (its
    segmentation smoothing); the node starts a new stream of the prior when the size changes."""
    pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    from ros_standin import Parameter, ros_standin, wait_for

    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.ros import bridge
    from hmdiff_ros.ros import convert as C
    from hmdiff_ros.ros.faults import letterbox

    rgb = read_image(DEMO_IMAGE)
    f = C.MessageFactory.for_rosbags(C.typestore_for("humble"))
    with ros_standin() as standin:
        params = {"hypotheses": 2, "ddim_steps": 2, "backend": "torch"}
        node = standin.HMDiffNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        try:
            ok = standin.TransitionCallbackReturn.SUCCESS
            assert node.trigger_configure() == ok and node.trigger_activate() == ok
            on_image, _ = node.subscriptions["image"]
            humans = node.publishers["~/humans"].messages
            for sec, size in enumerate((VGA, VGA, HD, HD, VGA), start=1):
                on_image(bridge.image_msg(f, C.header(f, sec, 0, "camera"), letterbox(rgb, size)))
                assert wait_for(lambda sec=sec: node.stats["processed"] + node.stats["failed"] == sec)
                assert node.stats["failed"] == 0, node.stats["last_error"]
                box = humans[-1].humans[0].box
                assert humans[-1].header.stamp.sec == sec and (box[0] + box[2]) / 2 < size[0]
        finally:
            node.on_shutdown(None)


def test_bench_node_refuses_fault_options_in_one_line(capsys):
    from hmdiff_ros.cli import main

    for argv, words in (
        (["bench-node", "--minutes", "5"], "--faults"),
        (["bench-node", "--faults", "--minutes", "1"], "--minutes"),
        (["bench-node", "--faults", "--fps", "90"], "--fps"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert (words in err) if HAVE_ROS else ("needs ROS 2" in err)


@needs_ros
def test_two_minutes_of_faults_on_the_real_core():
    """Memory: two cycles cannot show the hour's bound (50 MiB after 10 minutes); in its first
    cycles the node's RSS still settles, so the bound here is that noise with a margin
    (SOAK_RSS_SHORT_MIB: growth from the first cycle to the second up to 66 MiB without a leak):
    a leak of 100 MiB a minute fails it."""
    from hmdiff_ros.ros.faults import SOAK_RSS_SHORT_MIB
    from hmdiff_ros.ros.soak import run_soak

    result = run_soak("demo", 30.0, 2.0)
    fig = result.figures()
    print(format_soak(fig))
    print(json.dumps({k: v for k, v in fig.items() if k != "memory"}))
    verdict = fig["verdict"]
    assert fig["cycles"] == 2 and fig["crashed"] == "", fig["crashed"]
    assert fig["node"]["exit_code"] == 0, "the node did not end cleanly on SIGINT"
    rows = {r["phase"]: r for r in fig["phases"]}
    assert set(rows) == {name for name, _, _ in SOAK_CYCLE}
    for name, row in rows.items():
        # every phase ran and the node gave correct results in it; its counts are whole
        assert row["runs"] == (12 if name == "normal" else 2) and row["correct"] > 0, row
        assert row["violations"] == 0, row
        if row["events"]:
            assert row["recovery_missing"] == 0 and row["recovery_max_s"] <= RECOVERY_S, row
    assert rows["burst"]["dropped"] > 0  # 3x the rate: the newest frame wins, counted
    assert fig["unpublished_stamps"] == 0
    assert fig["node"]["failed"] == 0, rows
    assert fig["node"]["received"] == fig["node"]["processed"] + fig["node"]["dropped"]
    assert verdict["criteria"]["rss_growth_limit_mib"] == SOAK_RSS_SHORT_MIB
    assert fig["memory"]["rss_growth_mib"] <= SOAK_RSS_SHORT_MIB, fig["memory"]
    assert verdict["passed"], verdict["failures"]
