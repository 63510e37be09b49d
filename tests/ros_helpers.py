"""What the tests on the real ROS 2 core share (tests/test_ros_core.py and test_ros_launch.py;
test_ros_package.py, test_ros_cv_bridge.py and test_ros_bag_live.py use ``spin_until`` and
``interrupt``): the demo photo as an Image and its CameraInfo, spinning an executor until a
condition holds, Ctrl-C to a process group, service calls, an HMDiffNode with test parameters,
a probe's camera and its subscriptions to everything the node publishes. The ``ros`` and
``running`` fixtures are in conftest.py. ROS is imported inside the functions only, so that
this module imports where ROS 2 is not sourced."""

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

HAVE_ROS = importlib.util.find_spec("rclpy") is not None and importlib.util.find_spec("hmdiff_msgs") is not None


ROOT = Path(__file__).resolve().parents[1]


FRAME = "camera_optical_frame"


def frame_msgs(sec: int, frame: str = FRAME):
    """The demo photo at 256 x 256 as an Image and its CameraInfo, stamped ``sec``."""
    from hmdiff_ros.camera import intrinsics_from_fov
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.ros.bridge import camera_info_msg, image_msg
    from hmdiff_ros.ros.convert import MessageFactory, header

    f = MessageFactory.for_rclpy()
    rgb = read_image(DEMO_IMAGE)[::2, ::2].copy()
    K = intrinsics_from_fov(256, 256, 60.0)
    hdr = header(f, sec, 5000, frame)
    return image_msg(f, hdr, rgb), camera_info_msg(f, hdr, K, 256, 256), K


def spin_until(executor, cond, seconds: float, each=None, rate_hz: float = 30.0) -> bool:
    """Spin until ``cond()`` (at most ``seconds``), calling ``each()`` (a camera publishing)
    at most ``rate_hz`` times a second: a publisher in a tight loop would starve the node."""
    end, last = time.monotonic() + seconds, 0.0
    while not cond() and time.monotonic() < end:
        if each is not None and time.monotonic() - last >= 1.0 / rate_hz:
            last = time.monotonic()
            each()
        executor.spin_once(timeout_sec=0.01)
    return bool(cond())


def interrupt(proc, timeout: float = 60.0) -> None:
    """Ctrl-C to ``proc``'s process group, as a terminal sends it; SIGKILL if it has not ended
    within ``timeout`` seconds (the test then fails on its exit code)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def call(executor, client, request, seconds: float = 120.0):
    assert client.wait_for_service(timeout_sec=seconds), f"no service {client.srv_name}"
    future = client.call_async(request)
    assert spin_until(executor, future.done, seconds), f"{client.srv_name} did not answer"
    return future.result()


def make_node(**params):
    from rclpy.parameter import Parameter

    from hmdiff_ros.ros.node import HMDiffNode

    params = {"autostart": False, "hypotheses": 2, **params}
    return HMDiffNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def activate(node) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    ok = TransitionCallbackReturn.SUCCESS
    assert node.trigger_configure() == ok and node.trigger_activate() == ok


class Camera:
    """A probe's camera: each call publishes the demo photo stamped ``sec`` (:func:`frame_msgs`)
    on ``image`` with ``qos`` (default sensor data) and its CameraInfo on ``info``."""

    def __init__(self, probe, sec: int, image: str = "/image", info: str = "/camera_info", qos=None) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        self.probe = probe
        self.pub = probe.create_publisher(Image, image, qos or qos_profile_sensor_data)
        self.info_pub = probe.create_publisher(CameraInfo, info, qos_profile_sensor_data)
        self.stamp(sec)

    def stamp(self, sec: int) -> None:
        """Stamp the frames published from now on ``sec``."""
        self.image, self.info, self.K = frame_msgs(sec)

    def __call__(self) -> None:
        self.info_pub.publish(self.info)
        self.pub.publish(self.image)

    def close(self) -> None:
        self.probe.destroy_publisher(self.pub)
        self.probe.destroy_publisher(self.info_pub)


class Outputs:
    """A probe node's subscriptions to everything the node at ``prefix`` publishes."""

    def __init__(self, probe, prefix: str = "/hmdiff") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from hmdiff_msgs.msg import HumanArray
        from sensor_msgs.msg import Image
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        self.humans, self.markers, self.debug, self.tf, self.diagnostics = [], [], [], [], []
        probe.create_subscription(HumanArray, f"{prefix}/humans", self.humans.append, 10)
        probe.create_subscription(MarkerArray, f"{prefix}/markers", self.markers.append, 10)
        probe.create_subscription(Image, f"{prefix}/debug_image", self.debug.append, 10)
        probe.create_subscription(TFMessage, "/tf", self.tf.append, 100)
        probe.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def status(self, name: str = "hmdiff"):
        """The node's latest diagnostics status and its values."""
        for msg in reversed(self.diagnostics):
            for s in msg.status:
                if s.name.startswith(f"{name}:"):
                    return s, {kv.key: kv.value for kv in s.values}
        return None, {}


def stamp_of(hdr) -> tuple:
    return hdr.stamp.sec, hdr.stamp.nanosec
