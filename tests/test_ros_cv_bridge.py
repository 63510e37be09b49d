"""The node's two image paths: cv_bridge (where it is built: ``.ci/ros_workspace.sh``) and the
numpy fallback give the same RGB image for every supported encoding, odd widths and row padding
included; an exception of any type from cv_bridge becomes a one-line ``ValueError`` naming the
input (the frame is then converted with numpy, or dropped and counted, never a crash); and on a
real ROS 2 core the node reads its images through cv_bridge and reports it in /diagnostics."""

from __future__ import annotations

import importlib.util
import re
import sys
import threading

import cv2
import numpy as np
import pytest

from hmdiff_ros.image import ImageError
from hmdiff_ros.ros import bridge as B
from hmdiff_ros.ros.health import FrameHealth
from hmdiff_ros.ros.worker import NewestFrameWorker

pytestmark = pytest.mark.ros

try:
    from cv_bridge import CvBridge, CvBridgeError
    from sensor_msgs.msg import Image

    CvBridge()  # imports cv2 and cv_bridge's extension: fails where it was built for another NumPy
    NO_CV_BRIDGE = ""
except Exception as exc:  # not built here, or not loadable
    CvBridge = CvBridgeError = Image = None
    NO_CV_BRIDGE = f"cv_bridge is not usable here ({type(exc).__name__}: {exc}); .ci/ros_workspace.sh builds it"
needs_cv_bridge = pytest.mark.skipif(bool(NO_CV_BRIDGE), reason=NO_CV_BRIDGE or "-")
HAVE_NODE = not NO_CV_BRIDGE and all(importlib.util.find_spec(m) for m in ("rclpy", "hmdiff_msgs", "mediapipe"))


def _msg(encoding, width, height, step, data, bigendian=0):
    """A ``sensor_msgs/Image`` (rclpy's where cv_bridge is there, else a plain object)."""
    fields = dict(encoding=encoding, width=width, height=height, step=step, is_bigendian=bigendian, data=data)
    if Image is not None:
        return Image(**fields)
    return type("Image", (), fields)()


def _random_msg(encoding, width, height, pad_bytes=0, bigendian=0, seed=0):
    channels, depth, _ = B.RAW_LAYOUTS[encoding]
    step = width * channels * depth + pad_bytes
    data = np.random.default_rng(seed).integers(0, 256, step * height, dtype=np.uint8)
    return _msg(encoding, width, height, step, data.tobytes(), bigendian)


def _cases():
    """(encoding, width, padding bytes, big-endian) for every encoding: an odd width (even for
    the YUV 4:2:2 ones, which need it), without and with padding of whole pixels, and with
    padding that is not a whole number of pixels; 16-bit ones in both byte orders."""
    for enc, (channels, depth, order) in B.RAW_LAYOUTS.items():
        width = 6 if order in ("uyvy", "yuyv") else 7
        pixel = channels * depth
        for pad in sorted({0, 2 * pixel, pixel + 1 if pixel > 1 else 0}):
            for big in (0, 1) if depth == 2 else (0,):
                yield pytest.param(enc, width, pad, big, id=f"{enc}-w{width}-pad{pad}{'-big' if big else ''}")


def test_every_encoding_of_the_numpy_path_has_a_cv_bridge_request():
    assert set(B.CV_BRIDGE_REQUESTS) == set(B.RAW_LAYOUTS) == set(B.ENCODINGS)
    assert {"rgb8", "bgr8", "mono8", "mono16", "rgba8", "bgra8", "16UC1", "yuv422", "yuv422_yuy2"} <= set(B.ENCODINGS)


@needs_cv_bridge
@pytest.mark.parametrize("encoding, width, pad, big", list(_cases()))
def test_cv_bridge_and_numpy_paths_give_the_same_image(encoding, width, pad, big):
    msg = _random_msg(encoding, width, 5, pad, big, seed=width + pad + big)
    expected = B.image_to_rgb(msg)  # the numpy path
    assert expected.shape == (5, width, 3) and expected.dtype == np.uint8
    reader = B.ImageReader.create()
    assert reader.path == "cv_bridge", reader.why
    got = reader(msg)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    assert reader.counts["cv_bridge_errors"] == 0
    channels, depth, _ = B.RAW_LAYOUTS[encoding]
    skipped = B._cv_bridge_skip(B._checked_raw(msg))
    if pad % (channels * depth) == 0 and not (big and depth == 2 and not hasattr(np.ndarray, "newbyteorder")):
        # cv_bridge itself converted it, to the same image
        assert skipped is None and reader.counts == {"cv_bridge": 1, "numpy": 0, "cv_bridge_errors": 0}
        np.testing.assert_array_equal(B.cv_bridge_to_rgb(reader.bridge, msg), expected)
    else:  # what cv_bridge would misread or fail on goes to the numpy path
        assert skipped and reader.counts == {"cv_bridge": 0, "numpy": 1, "cv_bridge_errors": 0}


@needs_cv_bridge
def test_cv_bridge_would_shift_rows_whose_padding_is_not_whole_pixels():
    """Why such images skip cv_bridge: its imgmsg_to_cv2 reads step // pixel size pixels a row."""
    msg = _random_msg("bgr8", 7, 5, pad_bytes=4)
    shifted = CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    assert not np.array_equal(shifted, B.image_to_rgb(msg))
    np.testing.assert_array_equal(B.ImageReader.create()(msg), B.image_to_rgb(msg))


class RaisingBridge:
    """A CvBridge whose imgmsg_to_cv2 raises ``exc`` (or returns ``exc`` when it is an array)."""

    def __init__(self, exc):
        self.exc, self.calls = exc, 0

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        self.calls += 1
        if isinstance(self.exc, np.ndarray):
            return self.exc
        raise self.exc


def _errors():
    errors = [
        KeyError(16),  # cv_bridge's cvtype tables under OpenCV 5
        TypeError("buffer is too small for requested array"),
        ValueError("first line\nsecond line"),
        RuntimeError("boost::python error"),
        AttributeError("'numpy.ndarray' object has no attribute 'newbyteorder'"),
        cv2.error("OpenCV(4.6.0) color.cpp:182: error: (-215:Assertion failed)\n"),
    ]
    if CvBridgeError is not None:
        errors.append(CvBridgeError("[bgr8] is not a color format. but [rgb8] is. The conversion does not make sense"))
    return [pytest.param(e, id=type(e).__name__) for e in errors]


@pytest.mark.parametrize("exc", _errors())
def test_any_cv_bridge_error_becomes_a_one_line_value_error_naming_the_input(exc):
    msg = _random_msg("bgr8", 7, 5, pad_bytes=6)
    with pytest.raises(ValueError) as info:
        B.cv_bridge_to_rgb(RaisingBridge(exc), msg)
    text = str(info.value)
    assert isinstance(info.value, ImageError) and "\n" not in text
    assert "bgr8 image 7x5 (step 27)" in text and "expected an RGB uint8 image of 7x5 pixels" in text
    assert f": {type(exc).__name__}" in text


def test_an_image_of_the_wrong_shape_from_cv_bridge_is_an_error_saying_what_was_expected():
    msg = _random_msg("mono8", 7, 5)
    with pytest.raises(ImageError, match=r"gave ndarray \(5, 7\) uint8 for the mono8 image 7x5 .*expected an RGB"):
        B.cv_bridge_to_rgb(RaisingBridge(np.zeros((5, 7), np.uint8)), msg)


@pytest.mark.parametrize("exc", _errors())
def test_a_frame_cv_bridge_cannot_convert_is_converted_with_numpy_and_counted(exc):
    msg = _random_msg("rgba16", 7, 5, pad_bytes=8)
    warned = []
    reader = B.ImageReader(RaisingBridge(exc), warn=warned.append)
    np.testing.assert_array_equal(reader(msg), B.image_to_rgb(msg))
    assert reader.counts == {"cv_bridge": 0, "numpy": 1, "cv_bridge_errors": 1}
    assert len(warned) == 1 and "\n" not in warned[0] and "converted with numpy instead" in warned[0]
    values = dict(reader.values())
    assert values["image_path"] == "cv_bridge" and values["cv_bridge_errors"] == "1"
    assert type(exc).__name__ in values["last_cv_bridge_error"] and "rgba16 image 7x5" in values["last_cv_bridge_error"]


def test_a_bad_message_fails_alike_on_both_paths_without_reaching_cv_bridge():
    fake = RaisingBridge(KeyError("never called"))
    reader = B.ImageReader(fake)
    short = _msg("bgr8", 7, 5, 21, bytes(21 * 5 - 1))
    for bad in (short, _msg("bayer_rggb8", 4, 4, 4, bytes(16)), _msg("yuv422", 7, 2, 14, bytes(28))):
        with pytest.raises(ImageError) as numpy_error:
            B.image_to_rgb(bad)
        with pytest.raises(ImageError) as reader_error:
            reader(bad)
        assert str(reader_error.value) == str(numpy_error.value)
    assert fake.calls == 0


def test_a_frame_neither_path_converts_fails_with_both_reasons_on_one_line(monkeypatch):
    def numpy_fails(raw):
        raise cv2.error("OpenCV(5.0) error:\n(-215) something")

    monkeypatch.setattr(B, "_raw_to_rgb", numpy_fails)
    reader = B.ImageReader(RaisingBridge(KeyError(16)))
    with pytest.raises(ImageError) as info:
        reader(_random_msg("bgr8", 7, 5))
    text = str(info.value)
    assert "\n" not in text and text.startswith("cannot convert the bgr8 image 7x5 (step 21): error: OpenCV(5.0)")
    assert "cv_bridge could not convert the bgr8 image 7x5 (step 21) to rgb8" in text and "KeyError: 16" in text


def test_compressed_images_take_the_numpy_path_with_16_bit_pngs():
    """cv_bridge's compressed_imgmsg_to_cv2 is only cv2.imdecode without 16-bit depth: not used."""
    gray16 = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000).astype(np.uint16)
    msg = type("CompressedImage", (), {"format": "png", "data": cv2.imencode(".png", gray16)[1].tobytes()})()
    fake = RaisingBridge(KeyError("never called"))
    reader = B.ImageReader(fake)
    got = reader(msg)
    np.testing.assert_array_equal(got, B.image_to_rgb(msg))
    np.testing.assert_array_equal(got[..., 0], (gray16 / 257.0).round().astype(np.uint8))
    assert fake.calls == 0 and reader.counts == {"cv_bridge": 0, "numpy": 1, "cv_bridge_errors": 0}


@pytest.mark.parametrize("exc", _errors())
def test_the_worker_counts_a_cv_bridge_failure_and_goes_on(exc):
    """cv_bridge without fallback (cv_bridge_to_rgb) in the node's worker: the frame is counted
    as failed with its one-line reason, and the next frame is processed."""
    stats = FrameHealth()
    fake, got, failures = RaisingBridge(exc), [], []
    done = threading.Event()

    def process(msg, received):
        got.append(B.cv_bridge_to_rgb(fake, msg))
        stats.count("processed")
        done.set()

    worker = NewestFrameWorker(process, stats, lambda: 0.0, lambda e: (failures.append(e), done.set()))
    worker.start()
    try:
        worker.put(_random_msg("bgr8", 7, 5))
        assert done.wait(10) and stats["failed"] == 1 and not got
        assert isinstance(failures[0], ValueError)
        assert "\n" not in stats.last_error and "cv_bridge could not convert the bgr8 image 7x5" in stats.last_error
        assert "cv_bridge could not convert the bgr8 image" in stats.reasons_text()
        done.clear()
        fake.exc = np.zeros((5, 7, 3), np.uint8)  # cv_bridge works again
        worker.put(_random_msg("bgr8", 7, 5))
        assert done.wait(10) and stats["processed"] == 1 and len(got) == 1
    finally:
        worker.stop()


def test_without_cv_bridge_the_reader_says_why_and_uses_numpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv_bridge", None)  # as where it is not installed
    reader = B.ImageReader.create()
    assert reader.path == "numpy" and reader.bridge is None
    assert re.match(r"numpy \(cv_bridge not usable: (ModuleNotFound|Import)Error: ", reader.describe())
    msg = _random_msg("mono16", 7, 5, pad_bytes=2)
    np.testing.assert_array_equal(reader(msg), B.image_to_rgb(msg))
    assert dict(reader.values())["images_by_numpy"] == "1"


@pytest.mark.skipif(not HAVE_NODE, reason=NO_CV_BRIDGE or "rclpy, the built hmdiff_msgs or mediapipe is missing")
def test_node_on_ros2_reads_images_through_cv_bridge_and_drops_bad_ones_with_the_reason():
    """On the real core with cv_bridge: the node converts a bgr8 image of odd width with padded
    rows through cv_bridge, converts one whose cv_bridge call raises with numpy (counted), drops
    a bad one with the reason, and /diagnostics says so."""
    import rclpy
    import rclpy.executors
    import ros_helpers  # its spin_until (tests/ is on sys.path under pytest)
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data

    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.ros.convert import MessageFactory, header
    from hmdiff_ros.ros.node import HMDiffNode

    rgb = read_image(DEMO_IMAGE)[::2, ::2][:, :255]  # 255 wide
    h, w = rgb.shape[:2]
    step = w * 3 + 6
    rows = np.zeros((h, step), np.uint8)
    rows[:, : w * 3] = rgb[..., ::-1].reshape(h, w * 3)  # BGR, then 2 pixels of padding

    rclpy.init()
    try:
        params = {"autostart": False, "hypotheses": 1, "ddim_steps": 1, "publish_debug_image": False}
        node = HMDiffNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        assert node.images.path == "cv_bridge", node.images.why
        seen = []
        reader = node.images

        class Recording:  # the node's reader, keeping what it gave the pipeline and how it converted it
            def __call__(self, msg):
                seen.append((reader(msg), dict(reader.counts)))
                return seen[-1][0]

            def __getattr__(self, name):
                return getattr(reader, name)

        node.images = Recording()
        ok = TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == ok and node.trigger_activate() == ok
        probe = rclpy.create_node("hmdiff_cv_bridge_probe")
        statuses = []
        probe.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: statuses.extend(s for s in m.status if "hmdiff" in s.name), 10
        )
        pub = probe.create_publisher(Image, "/image", qos_profile_sensor_data)
        f = MessageFactory.for_rclpy()
        hdr = header(f, 3, 0, "camera_optical_frame")
        good = Image(header=hdr, height=h, width=w, encoding="bgr8", is_bigendian=0, step=step, data=rows.tobytes())
        bad = Image(header=hdr, height=h, width=w, encoding="bgr8", is_bigendian=0, step=step, data=rows.tobytes()[:-1])
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(probe)

        def spin_until(cond, publish, seconds=60):  # publishing at most 30 times a second, as a camera
            return ros_helpers.spin_until(executor, cond, seconds, publish)

        assert spin_until(lambda: node.stats["processed"] >= 1, lambda: pub.publish(good))
        assert seen[0][1] == {"cv_bridge": 1, "numpy": 0, "cv_bridge_errors": 0}
        np.testing.assert_array_equal(seen[0][0], rgb)

        reader.bridge = RaisingBridge(KeyError(16))  # as cv_bridge's cv2_to_imgmsg does under OpenCV 5
        processed = node.stats["processed"]
        # frames read before cv_bridge started failing may still be in the node's two stages (two at
        # most): of three more published, one at least was read by numpy after cv_bridge failed on it
        assert spin_until(lambda: node.stats["processed"] >= processed + 3, lambda: pub.publish(good))
        counts = node.stats.counts
        settled = lambda: counts["processed"] + counts["failed"] + counts["dropped"] == counts["received"]  # noqa: E731
        assert spin_until(settled, lambda: None)
        image, counts = next((im, c) for im, c in seen if c["numpy"] == 1)
        assert counts["cv_bridge_errors"] == 1 and node.stats["failed"] == 0
        np.testing.assert_array_equal(image, rgb)
        reader.bridge = CvBridge()

        assert spin_until(lambda: node.stats["failed"] >= 1, lambda: pub.publish(bad))
        statuses.clear()
        assert spin_until(lambda: any(s.values for s in statuses), lambda: None, 10)
        values = {kv.key: kv.value for kv in statuses[-1].values}
        assert values["image_path"] == "cv_bridge" and int(values["images_by_cv_bridge"]) >= 1
        assert int(values["cv_bridge_errors"]) >= 1 and "KeyError: 16" in values["last_cv_bridge_error"]
        assert "cannot decode the bgr8 image" in values["failed_reasons"]
        assert f"needs {step * h} bytes of data, got {step * h - 1}" in values["last_error"]
        assert node.trigger_deactivate() == ok and node.trigger_cleanup() == ok
        executor.shutdown()
        probe.destroy_node()
        node.destroy_node()
    finally:
        rclpy.shutdown()
