"""``hmdiff bag`` on a recorded bag and the live node on the same frames give the same people.

Frames of a real video (``../shared/data/eval-real/videos/mmhuman3d/single_person_demo.mp4``,
where present) and, always, shifted crops of the demo photo are written to a bag with their
CameraInfo; ``hmdiff bag`` (its defaults) processes the bag, and the node (its defaults, on the
real ROS 2 core; :class:`HMDiffNode` in this process, and ``ros2 run hmdiff_ros hmdiff_node`` in
its own) receives the same Image + CameraInfo messages one at a time:
each frame is published only after the node answered the previous one, so no frame is lost to
its newest-frame policy. Per frame, both must give the same stamp, frame id, people, track ids
and joints: the sampler's noise is seeded per frame (``PipelineConfig.seed``), the prior
follows the person through the same frames in both, and the tracker smooths with the same
image stamps, so the results agree to float32 rounding (the message type), far below 1 mm;
measured: identical. (Another seed moves the joints by 5-13 cm on average.) Without
ROS, a test checks that the node's parameters and the bag tool's options default to the same
pipeline.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

HAVE_ROS = importlib.util.find_spec("rclpy") is not None and importlib.util.find_spec("hmdiff_msgs") is not None
MISSING = [
    why
    for absent, why in (
        (not HAVE_ROS, "rclpy and the built hmdiff_msgs are not available (needs a ROS 2 workspace)"),
        (importlib.util.find_spec("rosbags") is None, "rosbags is not installed (pip install 'hmdiff_ros[bag]')"),
        (importlib.util.find_spec("mediapipe") is None, "mediapipe is not installed"),
    )
    if absent
]
needs_live = pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval-real" / "videos" / "mmhuman3d"
VIDEO = VIDEO / "single_person_demo.mp4"
FRAMES = 10
START = (200, 0)  # stamp of the first frame (sec, nanosec)
PERIOD_NS = 83_333_333  # 12 frames a second, the video's rate
FRAME_ID = "camera_optical_frame"
TOLERANCE_M = 1e-4  # 0.1 mm: both run the same computation; what remains is float32 rounding
RESULT_TIMEOUT_S = 60.0  # per frame (the model loads before, at configure; a frame takes well under a second)


def video_frames():
    if not VIDEO.exists():
        pytest.skip(f"no real video at {VIDEO} (the demo-photo case runs everywhere)")
    pytest.importorskip("cv2", reason="OpenCV reads the video")
    from hmdiff_ros.ros.load import load_frames

    frames = load_frames(str(VIDEO), max_side=480, max_frames=4 * FRAMES)  # 1080x1920 -> 270x480
    assert len(frames) >= 2 * FRAMES, f"{VIDEO}: only {len(frames)} frames"
    return frames[:: len(frames) // FRAMES][:FRAMES]  # spread over the clip: the person moves


def photo_frames():
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    rgb = read_image(DEMO_IMAGE)[::2, ::2]  # 256 x 256
    return [np.ascontiguousarray(rgb[3 * k : 3 * k + 224, 2 * k : 2 * k + 224]) for k in range(FRAMES)]  # a pan


def stamps(n):
    t0 = START[0] * 10**9 + START[1]
    return [divmod(t0 + k * PERIOD_NS, 10**9) for k in range(n)]


def intrinsics(w, h):
    """A plausible pinhole camera, away from the node's default field of view: the results
    depend on which intrinsics were used, so a side that ignored the CameraInfo would differ."""
    f = 1.2 * max(w, h)
    return np.array([[f, 0.0, w / 2 - 3.0], [0.0, f, h / 2 + 2.0], [0.0, 0.0, 1.0]])


def write_bag(path, frames):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from hmdiff_ros.ros import bridge
    from hmdiff_ros.ros import convert as C

    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    h, w = frames[0].shape[:2]
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        img_c = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        info_c = writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for rgb, (sec, ns) in zip(frames, stamps(len(frames)), strict=True):
            hdr, t = C.header(f, sec, ns, FRAME_ID), sec * 10**9 + ns
            info = bridge.camera_info_msg(f, hdr, intrinsics(w, h), w, h)
            writer.write(info_c, t, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            writer.write(img_c, t, store.serialize_cdr(bridge.image_msg(f, hdr, rgb), "sensor_msgs/msg/Image"))


def bag_humans(src, dst):
    """``hmdiff bag`` with its defaults; the HumanArray messages of the output, in order."""
    import contextlib
    import io

    from rosbags.highlevel import AnyReader

    from hmdiff_ros.cli import main
    from hmdiff_ros.ros import convert as C

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["bag", str(src), str(dst), "--json"])
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert rc == 0, summary
    assert summary["dropped"] == 0 and summary["camera_info_mismatch"] == 0, summary
    with AnyReader([dst], default_typestore=C.typestore_for("humble")) as reader:
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/hmdiff/humans"]


class Probe:
    """The other end of the node on the real core: publishes Image + CameraInfo (reliable) to
    ``<namespace>/image`` and ``<namespace>/camera_info`` and collects HumanArray messages
    from ``<namespace>/hmdiff/humans`` and the node's ``/diagnostics`` values."""

    def __init__(self, namespace: str = "") -> None:
        import rclpy
        import rclpy.executors
        from diagnostic_msgs.msg import DiagnosticArray
        from hmdiff_msgs.msg import HumanArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from hmdiff_ros.ros.convert import MessageFactory

        self.node = rclpy.create_node("hmdiff_bag_live_probe")
        self.humans_topic = f"{namespace}/hmdiff/humans"
        self.got, self.diagnostics = [], {}
        self.node.create_subscription(HumanArray, self.humans_topic, self.got.append, 20)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, f"{namespace}/image", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, f"{namespace}/camera_info", qos)
        self.executor = rclpy.executors.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.f = MessageFactory.for_rclpy()
        self.alive = lambda: None  # why the node cannot answer any more, or None

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if "hmdiff pipeline" in status.name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def spin_until(self, cond, seconds: float, what: str) -> None:
        end = time.monotonic() + seconds
        while not cond():
            why = self.alive()
            assert why is None, f"waiting for {what}: {why}"
            assert time.monotonic() < end, f"{what} within {seconds:g} s"
            self.executor.spin_once(timeout_sec=0.05)

    def connected(self, seconds: float) -> None:
        self.spin_until(
            lambda: (
                self.pub.get_subscription_count()
                and self.info_pub.get_subscription_count()
                and self.node.count_publishers(self.humans_topic)
            ),
            seconds,
            "the node and the probe discover each other",
        )

    def feed(self, frames, info_received) -> list:
        """Each frame after its CameraInfo, the next only once the node answered it (lockstep:
        the newest-frame policy drops nothing). ``info_received(stamp)``: whether the node has
        the CameraInfo of that stamp (None: not observable; then the first one gets a second)."""
        from hmdiff_ros.ros.bridge import camera_info_msg, image_msg
        from hmdiff_ros.ros.convert import header

        h, w = frames[0].shape[:2]
        for k, (rgb, (sec, ns)) in enumerate(zip(frames, stamps(len(frames)), strict=True)):
            hdr = header(self.f, sec, ns, FRAME_ID)
            self.info_pub.publish(camera_info_msg(self.f, hdr, intrinsics(w, h), w, h))
            # the CameraInfo before the image, as in the bag (the node uses the newest it has; K is the same for all)
            if info_received is not None:
                self.spin_until(lambda t=hdr.stamp: info_received(t), 30, "the camera_info")
            elif k == 0:
                self.spin_until(lambda end=time.monotonic() + 1.0: time.monotonic() > end, 2.0, "a second")
            self.pub.publish(image_msg(self.f, hdr, rgb))
            self.spin_until(
                lambda t=hdr.stamp: any(m.header.stamp == t for m in self.got),
                RESULT_TIMEOUT_S,
                f"a HumanArray for the frame at {sec}.{ns:09d}",
            )
        return list(self.got)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


COUNTERS = ("received", "processed", "dropped", "failed", "camera_info_unused")


def live_in_process(frames):
    """:class:`HMDiffNode` in this process with its defaults (only the image QoS reliable, so
    that a lockstep frame cannot be lost on the way)."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from hmdiff_ros.ros.node import HMDiffNode

    rclpy.init()
    try:
        node = HMDiffNode(
            parameter_overrides=[Parameter("autostart", value=False), Parameter("image_qos", value="reliable")]
        )
        ok = TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == ok and node.trigger_activate() == ok
        probe = Probe()
        probe.executor.add_node(node)
        probe.connected(30)
        got = probe.feed(frames, lambda t: node._info is not None and node._info.header.stamp == t)
        # the worker counts a frame after publishing its results
        probe.spin_until(lambda: node.stats["processed"] + node.stats["failed"] >= len(frames), 10, "the counts")
        stats = {k: node.stats[k] for k in COUNTERS}
        assert stats == dict(zip(COUNTERS, (len(frames), len(frames), 0, 0, 0), strict=True)), stats
        assert node.trigger_deactivate() == ok and node.trigger_cleanup() == ok
        probe.close()
        node.destroy_node()
        return got
    finally:
        rclpy.shutdown()


def live_ros2_run(frames):
    """``ros2 run hmdiff_ros hmdiff_node`` in its own process, in a namespace of its own, with
    its defaults (only the image QoS reliable); its counts from ``/diagnostics``."""
    import rclpy

    if shutil.which("ros2") is None:
        pytest.skip("no ros2 CLI on PATH")
    namespace = f"/bag_live_{os.getpid()}"
    cmd = ["ros2", "run", "hmdiff_ros", "hmdiff_node", "--ros-args", "-r", f"__ns:={namespace}"]
    proc = subprocess.Popen(
        [*cmd, "-p", "image_qos:=reliable"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    rclpy.init()
    try:
        probe = Probe(namespace)
        probe.alive = lambda: (
            None if proc.poll() is None else f"the node exited with {proc.returncode}: {''.join(lines)[-2000:]}"
        )
        probe.connected(180)  # the node loads the model first
        got = probe.feed(frames, None)
        n = len(frames)
        probe.spin_until(
            lambda: int(probe.diagnostics.get("processed", 0)) + int(probe.diagnostics.get("failed", 0)) >= n,
            10,
            "diagnostics with every frame counted",
        )
        stats = {k: int(probe.diagnostics[k]) for k in COUNTERS}
        assert stats == dict(zip(COUNTERS, (n, n, 0, 0, 0), strict=True)), stats
        probe.close()
    finally:
        rclpy.shutdown()
        import ros_helpers  # its interrupt (tests/ is on sys.path under pytest)

        ros_helpers.interrupt(proc, timeout=30)
    assert proc.returncode == 0, "".join(lines)[-3000:]
    return got


def joints(human):
    return np.array([(p.x, p.y, p.z) for p in human.joints], dtype=np.float64)


def test_the_node_and_the_bag_tool_default_to_the_same_pipeline():
    """What decides the joints (steps, DAT, hypotheses, field of view, backend, seed) has the
    same defaults in the node's parameters and in ``hmdiff bag``'s options; the node asks for
    the full mesh only for its debug overlay, which the bag tool draws too."""
    from dataclasses import replace

    from hmdiff_ros.cli import build_parser
    from hmdiff_ros.cli.common import pipeline_config_from
    from hmdiff_ros.ros.params import PARAMETERS, pipeline_config_of

    node = pipeline_config_of({name: spec[0] for name, spec in PARAMETERS.items()})
    args = build_parser().parse_args(["bag", "in", "out"])
    bag = pipeline_config_from(args)
    assert replace(node, full_mesh=bag.full_mesh) == bag
    assert node.full_mesh == bag.full_mesh, "both draw the debug image with the full mesh"
    assert PARAMETERS["tracking"][0] and not args.no_track, "both track and smooth by default"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """``source`` -> (its frames, the HumanArray messages of ``hmdiff bag`` on their bag)."""
    cache = {}

    def get(source):
        if source not in cache:
            frames = video_frames() if source == "video" else photo_frames()
            folder = tmp_path_factory.mktemp(f"bag_{source}")
            write_bag(folder / "in", frames)
            cache[source] = frames, bag_humans(folder / "in", folder / "out")
        return cache[source]

    return get


@pytest.mark.parametrize("node", ["in_process", "ros2_run"])
@pytest.mark.parametrize("source", ["photo", "video"])
@needs_live
def test_bag_and_live_node_give_the_same_joints(recorded, source, node):
    frames, offline = recorded(source)
    live = live_in_process(frames) if node == "in_process" else live_ros2_run(frames)
    assert len(offline) == len(live) == len(frames), "one HumanArray per frame on both sides"
    diffs = []
    for k, (a, b) in enumerate(zip(offline, live, strict=True)):
        sec, ns = stamps(len(frames))[k]
        assert (a.header.stamp.sec, a.header.stamp.nanosec, a.header.frame_id) == (sec, ns, FRAME_ID)
        assert (b.header.stamp.sec, b.header.stamp.nanosec, b.header.frame_id) == (sec, ns, FRAME_ID)
        assert len(a.humans) == len(b.humans), f"frame {k}: {len(a.humans)} people in the bag, {len(b.humans)} live"
        for ha, hb in zip(a.humans, b.humans, strict=True):
            assert ha.id == hb.id and list(ha.joint_names) == list(hb.joint_names)
            ja, jb = joints(ha), joints(hb)
            assert ja.shape == (25, 3) and np.isfinite(ja).all() and (ja[:, 2] > 0.3).all()
            diffs.append(np.linalg.norm(ja - jb, axis=1))
            for field, atol in (("joint_std", TOLERANCE_M), ("joint_confidence", 1e-6), ("keypoints_2d", 0.01)):
                np.testing.assert_allclose(getattr(ha, field), getattr(hb, field), atol=atol, err_msg=field)
            np.testing.assert_allclose(ha.box, hb.box, atol=0.01, err_msg="box")
            assert ha.score == pytest.approx(hb.score, abs=1e-6)
            root = [(h.root_pose.position.x, h.root_pose.position.y, h.root_pose.position.z) for h in (ha, hb)]
            np.testing.assert_allclose(root[0], root[1], atol=TOLERANCE_M, err_msg="root position")
    people = sum(len(a.humans) for a in offline)
    assert people >= len(frames) - 2, f"the person is found in most frames ({people} of {len(frames)})"
    d = np.concatenate(diffs) * 1000.0
    print(
        f"{source}, node {node}: {len(frames)} frames, {people} people, joint difference max {d.max():.6f} mm, mean {d.mean():.6f} mm"
    )
    assert d.max() < TOLERANCE_M * 1000.0, f"joints differ by up to {d.max():.3f} mm (mean {d.mean():.3f} mm)"
