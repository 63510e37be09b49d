"""The node's own logic without ROS 2: lifecycle, newest frame wins with drops counted, a bad
frame dropped and counted, outputs with the image's header, ``target_frame`` through TF,
parameters checked, diagnostics. ROS is replaced by tests/ros_standin.py; where rclpy exists
the real node runs in tests/test_ros_package.py instead."""

import importlib.util
import threading

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")
pytest.importorskip("mediapipe", reason="mediapipe is not installed")
if importlib.util.find_spec("rclpy") is not None:
    pytest.skip("rclpy is installed: the node runs on ROS 2 in test_ros_package.py", allow_module_level=True)

from ros_standin import Buffer, Parameter, StatusWrapper, ros_standin, wait_for  # noqa: E402

from hmdiff_ros.pipeline.io import read_image  # noqa: E402
from hmdiff_ros.pipeline.run import DEMO_IMAGE  # noqa: E402
from hmdiff_ros.ros import bridge, frames  # noqa: E402
from hmdiff_ros.ros import convert as C  # noqa: E402

FRAME = "camera_optical_frame"


@pytest.fixture(scope="module")
def standin():
    with ros_standin() as node_module:
        yield node_module


@pytest.fixture(scope="module")
def rgb():
    return read_image(DEMO_IMAGE)[::2, ::2].copy()


def _image(rgb, sec, encoding="rgb8"):
    f = C.MessageFactory.for_rosbags(C.typestore_for("humble"))
    msg = bridge.image_msg(f, C.header(f, sec, 0, FRAME), rgb)
    msg.encoding = encoding
    return msg


@pytest.fixture
def make_node(standin):
    nodes = []

    def make(**params):
        params = {"hypotheses": 2, "ddim_steps": 2, "backend": "torch", **params}  # the node's logic, on eager PyTorch
        nodes.append(standin.HMDiffNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
        return nodes[-1]

    yield make
    for node in nodes:  # stop the worker threads whatever happened
        node.on_shutdown(None)


def test_newest_frame_wins_bad_frames_are_counted(standin, make_node, rgb):
    node = make_node()
    ok = standin.TransitionCallbackReturn.SUCCESS
    assert node.trigger_configure() == ok and node.trigger_activate() == ok
    on_image, qos = node.subscriptions["image"]
    assert qos.reliability.name == "BEST_EFFORT" and qos.depth == 1
    # hold the worker inside the first frame, send two more: the middle one is replaced
    gate, inside, prepare = threading.Event(), threading.Event(), node._prepare

    def held(*args):
        inside.set()
        gate.wait(30)
        return prepare(*args)

    node._prepare = held
    on_image(_image(rgb, 1))
    assert inside.wait(30)
    on_image(_image(rgb, 2))
    on_image(_image(rgb, 3))
    gate.set()
    humans = node.publishers["~/humans"].messages
    assert wait_for(lambda: node.stats["processed"] == 2)
    assert [m.header.stamp.sec for m in humans] == [1, 3], "frame 2 was dropped for the newer frame 3"
    assert node.stats["received"] == 3 and node.stats["dropped"] == 1 and node.stats["processed"] == 2
    h = humans[-1]
    assert h.header.frame_id == FRAME and len(h.humans) == 1 and len(h.humans[0].joints) == 25
    assert h.humans[0].id == 0 and min(p.z for p in h.humans[0].joints) > 0.3
    markers = node.publishers["~/markers"].messages[-1]
    assert markers.markers[0].action == C.DELETEALL and all(m.header.stamp.sec == 3 for m in markers.markers)
    (tf,) = node.tf.sent[-1]
    assert (tf.header.frame_id, tf.child_frame_id, tf.header.stamp.sec) == (FRAME, "hmdiff_body_0", 3)
    debug = node.publishers["~/debug_image"].messages[-1]
    assert (debug.header.stamp.sec, debug.encoding, debug.height, debug.width) == (3, "rgb8", *rgb.shape[:2])

    # a frame in an encoding we do not accept: dropped, counted, named; the next one works
    on_image(_image(rgb, 4, encoding="bayer_rggb8"))
    assert wait_for(lambda: node.stats["failed"] == 1)
    assert "bayer_rggb8" in node.stats["last_error"]
    on_image(_image(rgb, 5))
    assert wait_for(lambda: node.stats["processed"] == 3) and humans[-1].header.stamp.sec == 5

    stat = node.updater.tasks["hmdiff pipeline"](StatusWrapper())
    # one of the last four frames failed: WARN (DiagnosticStatus), with the reason
    assert stat.level == 1 and stat.message.startswith("1 of the last 4 frames failed") and "bayer" in stat.message
    assert stat.values["received"] == "5" and stat.values["processed"] == "3" and stat.values["failed"] == "1"
    assert "bayer_rggb8" in stat.values["failed_reasons"]
    assert float(stat.values["processing_ms"]) > 0 and stat.values["backend"] == "torch"
    assert node.updater.hardware_id == "hmdiff_torch"
    # without cv_bridge the numpy path reads the images, and says why
    assert stat.values["image_path"].startswith("numpy (cv_bridge not usable") and stat.values["images_by_numpy"] == "3"

    # run-time parameters: checked, then applied before the next frame
    assert not node.set_parameters([Parameter("mesh_resolution", value="dense")])[0].successful
    assert node.set_parameters([Parameter("ddim_steps", value=1)])[0].successful
    on_image(_image(rgb, 6))
    assert wait_for(lambda: node.stats["processed"] == 4) and node.pipe.cfg.steps == 1

    assert node.trigger_deactivate() == ok
    assert node._worker is None and not node.subscriptions
    assert node.trigger_cleanup() == ok and node.pipe is None and not node.publishers
    # configure again after cleanup (the TF broadcaster and diagnostics are made once)
    updater = node.updater
    assert node.trigger_configure() == ok and node.updater is updater and "~/humans" in node.publishers
    assert node.trigger_shutdown() == ok and node.pipe is None


def test_target_frame_goes_through_tf_at_the_image_stamp(standin, make_node, rgb):
    from scipy.spatial.transform import Rotation

    node = make_node(target_frame="base_link", publish_debug_image=False, publish_hri=True, tf_prefix="body")
    assert node.trigger_configure() == standin.TransitionCallbackReturn.SUCCESS
    node.trigger_activate()
    f = C.MessageFactory.for_rosbags(C.typestore_for("humble"))
    # base_link: x forward, z up; the optical frame 1.2 m up, looking forward
    R = Rotation.from_euler("xyz", [-np.pi / 2, 0, -np.pi / 2]).as_matrix()
    t = np.array([0.1, 0.0, 1.2])
    Buffer.table = {
        ("base_link", FRAME): frames.transform_stamped(f, C.header(f, 1, 0, "base_link"), "base_link", FRAME, t, R)
    }
    on_image = node.subscriptions["image"][0]
    on_image(_image(rgb, 1))
    humans = node.publishers["~/humans"].messages
    assert wait_for(lambda: node.stats["processed"] == 1), node.stats["last_error"]
    msg = humans[0]
    assert msg.header.frame_id == "base_link" and msg.header.stamp.sec == 1
    joints = np.array([[p.x, p.y, p.z] for p in msg.humans[0].joints])
    in_camera = (joints - t) @ R  # back into the optical frame
    assert (in_camera[:, 2] > 0.3).all(), "in front of the camera"
    assert (joints[:, 0] > 0.3).all(), "in front of the robot (x forward)"
    head, pelvis = joints[C.JOINT_INDEX["head_top"]], joints[C.JOINT_INDEX["pelvis"]]
    assert head[2] > pelvis[2], "z is up in base_link"
    assert (node.tf.sent[-1][0].header.frame_id, node.tf.sent[-1][0].child_frame_id) == ("base_link", "body_b0")
    (tracked,) = node.publishers["/humans/bodies/tracked"].messages  # REP-155
    assert list(tracked.ids) == ["b0"] and tracked.header.frame_id == "base_link"
    assert all(m.header.frame_id == "base_link" for m in node.publishers["~/markers"].messages[-1].markers)

    Buffer.table = {}  # the transform does not arrive: the frame is dropped and counted
    on_image(_image(rgb, 2))
    assert wait_for(lambda: node.stats["failed"] == 1)
    assert f"no transform from '{FRAME}' to target_frame 'base_link'" in node.stats["last_error"]
    assert len(humans) == 1


def test_bad_parameters_at_start_fail_configure(standin, make_node):
    node = make_node(dat_mode="sideways")
    assert node.trigger_configure() == standin.TransitionCallbackReturn.FAILURE
    assert any("dat_mode must be one of" in text for level, text in node.logger.lines if level == "error")
    assert node.pipe is None


def test_the_backend_that_runs_is_reported_not_the_one_asked_for(standin, make_node, rgb, tmp_path):
    # onnxruntime asked for, but 'engines' holds a broken export: the node falls back to torch and says so
    engines = tmp_path / "broken_export"
    engines.mkdir()
    (engines / "manifest.json").write_text("{ not json")
    node = make_node(backend="onnxruntime", engines=str(engines), publish_debug_image=False)
    assert node.trigger_configure() == standin.TransitionCallbackReturn.SUCCESS
    assert node.pipe.model.backend == "torch" and node.updater.hardware_id == "hmdiff_torch"
    assert any("backend onnxruntime asked for, torch runs" in t for level, t in node.logger.lines if level == "warn")
    node.trigger_activate()
    on_image = node.subscriptions["image"][0]
    on_image(_image(rgb, 1))
    assert wait_for(lambda: node.stats["processed"] == 1)
    for k in range(2, 6):  # then every frame fails: the status goes to ERROR, not OK
        on_image(_image(rgb, k, encoding="bayer_rggb8"))
        assert wait_for(lambda k=k: node.stats["failed"] == k - 1)
    stat = node.updater.tasks["hmdiff pipeline"](StatusWrapper())
    assert stat.level == 2 and "4 of the last 5 frames failed" in stat.message
    assert (stat.values["backend"], stat.values["backend_asked"]) == ("torch", "onnxruntime")


def test_hypotheses_beyond_the_backend_batch_are_refused(standin, make_node):
    node = make_node()
    assert node.trigger_configure() == standin.TransitionCallbackReturn.SUCCESS
    node.pipe.model.max_batch = 8  # e.g. a TensorRT engine built with --max-batch 8
    result = node.set_parameters([Parameter("hypotheses", value=12)])[0]
    assert not result.successful and "largest batch of 8" in result.reason
    assert node.set_parameters([Parameter("hypotheses", value=8)])[0].successful
