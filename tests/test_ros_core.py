"""The node on the real ROS 2 core (rclpy, cyclonedds, tf2, diagnostic_updater), driven by probe
nodes: image QoS, every output with the image's header, parameters through the parameter
services, ``target_frame`` through a static transform, and the full mesh, markers and overlay
made only for subscribers. The launch file, the lifecycle services and README's ros2 CLI
checks: tests/test_ros_launch.py; ``publish_hri``: tests/test_ros_hri.py. Skipped where ROS 2
is not sourced (``.ci/ros_workspace.sh`` builds it; docs/ros.md, Build)."""

import numpy as np
import pytest
from ros_helpers import FRAME, HAVE_ROS, ROOT, Camera, Outputs, call, spin_until, stamp_of

from hmdiff_ros import defaults

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(
        not HAVE_ROS, reason="rclpy and the built hmdiff_msgs are not available (needs a ROS 2 workspace)"
    ),
]


# ---- image QoS, every output with the image's header -----------------------------------------


@pytest.mark.parametrize("image_qos", ["sensor_data", "reliable"])
def test_every_output_carries_the_image_header_for_both_image_qos(running, image_qos):
    """A camera publishing with sensor-data QoS (best effort) and with reliable QoS: HumanArray,
    MarkerArray (mesh and skeleton), a TF frame per person, the debug image and diagnostics all
    come, with the image's stamp and frame. A node asked for reliable images does not receive
    a best-effort publisher's (ROS's QoS rule), and its diagnostics say so."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from hmdiff_ros.ros.convert import LINE_LIST, SPHERE_LIST, TRIANGLE_LIST

    node, probe, executor = running("qos_probe", image_qos=image_qos)
    out = Outputs(probe)
    if image_qos == "reliable":
        best_effort = Camera(probe, 33)
        spin_until(executor, lambda: False, 3.0, best_effort)
        assert node.stats["received"] == 0, "a reliable subscription took a best-effort publisher's images"
        assert spin_until(executor, lambda: out.status()[0] is not None, 5)
        status, _ = out.status()
        assert status.level == DiagnosticStatus.WARN and "no images received" in status.message
        best_effort.close()
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    camera = Camera(probe, 33, qos=reliable if image_qos == "reliable" else None)

    def complete() -> bool:
        return bool(
            out.humans and out.markers and out.debug and out.tf and out.status()[1].get("processed", "0") != "0"
        )

    assert spin_until(executor, complete, 90, camera)
    stamp = (33, 5000)
    humans = out.humans[-1]
    assert stamp_of(humans.header) == stamp and humans.header.frame_id == FRAME and len(humans.humans) == 1
    kinds = set()
    for array in out.markers:
        for m in array.markers:
            if m.action == 0:  # ADD (the first marker of each array is a DELETEALL)
                assert stamp_of(m.header) == stamp and m.header.frame_id == FRAME
                kinds.add(m.type)
    assert {TRIANGLE_LIST, LINE_LIST, SPHERE_LIST} <= kinds, "mesh, skeleton and joint markers"
    debug = out.debug[-1]
    assert stamp_of(debug.header) == stamp and debug.header.frame_id == FRAME
    assert (debug.height, debug.width) == (256, 256) and debug.encoding in ("rgb8", "bgr8")
    bodies = [t for msg in out.tf for t in msg.transforms if t.child_frame_id.startswith(defaults.TF_PREFIX)]
    assert bodies, "no TF frame per person"
    assert all(stamp_of(t.header) == stamp and t.header.frame_id == FRAME for t in bodies)
    assert bodies[-1].child_frame_id == f"{defaults.TF_PREFIX}_{humans.humans[0].id}"
    # the shipped RViz config shows topics the node really publishes, with their types
    import yaml

    topics = dict(probe.get_topic_names_and_types())
    kinds = {
        "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
        "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    }
    displays = yaml.safe_load((ROOT / "launch" / "hmdiff.rviz").read_text())["Visualization Manager"]["Displays"]
    shown = [(d["Topic"]["Value"], kinds[d["Class"]]) for d in displays if d["Class"] in kinds]
    assert len(shown) == 2 and all(kind in topics.get(topic, []) for topic, kind in shown), (shown, topics)
    status, values = out.status()
    assert int(values["processed"]) >= 1 and int(values["failed"]) == 0
    # images come faster than the model here: OK, or WARN for the dropped frames, never ERROR
    assert status.level == DiagnosticStatus.OK or (
        status.level == DiagnosticStatus.WARN and "dropped" in status.message
    ), status.message
    # the default backend, auto: ONNX Runtime on this CPU (on its export made once in the cache)
    assert status.hardware_id == "hmdiff_onnxruntime" and values["backend"] == "onnxruntime"
    assert values["backend_asked"] == "auto"


# ---- run-time parameters through the parameter services -------------------------------------


def test_parameters_change_at_run_time_through_the_parameter_services(running):
    """``ros2 param set``'s services: valid values take effect on the next frame (markers off,
    fewer steps); out-of-range values, unknown choices, read-only parameters and wrong types are
    refused with a reason, leave the values as they were, and the node keeps processing."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters

    node, probe, executor = running("param_probe")
    out = Outputs(probe)
    setter = probe.create_client(SetParameters, "/hmdiff/set_parameters")
    getter = probe.create_client(GetParameters, "/hmdiff/get_parameters")

    def value(kind: str, v) -> ParameterValue:
        field = {"int": "integer_value", "str": "string_value", "bool": "bool_value", "float": "double_value"}[kind]
        code = {"int": ParameterType.PARAMETER_INTEGER, "str": ParameterType.PARAMETER_STRING}.get(kind)
        code = code or {"bool": ParameterType.PARAMETER_BOOL, "float": ParameterType.PARAMETER_DOUBLE}[kind]
        return ParameterValue(type=code, **{field: v})

    def set_one(name: str, kind: str, v):
        request = SetParameters.Request(parameters=[Parameter(name=name, value=value(kind, v))])
        return call(executor, setter, request).results[0]

    def get(*names):
        values = call(executor, getter, GetParameters.Request(names=list(names))).values
        return [
            getattr(v, {1: "bool_value", 2: "integer_value", 3: "double_value", 4: "string_value"}[v.type])
            for v in values
        ]

    feed = Camera(probe, 40)
    assert spin_until(executor, lambda: out.humans and out.markers, 60, feed)
    refused = {
        ("ddim_steps", "int", 99): "",  # out of the declared range
        ("dat_mode", "str", "sideways"): "dat_mode must be one of",
        ("backend", "str", "onnxruntime"): "read-only",
        ("ddim_steps", "str", "two"): "",  # wrong type
        ("tf_prefix", "str", "/body"): "tf_prefix",
    }
    for (name, kind, v), why in refused.items():
        result = set_one(name, kind, v)
        assert not result.successful, (name, v)
        assert why.lower() in result.reason.lower() and result.reason, (name, result.reason)
    assert get("ddim_steps", "dat_mode", "backend", "tf_prefix") == [
        defaults.STEPS,
        defaults.DAT_MODE,
        defaults.BACKEND,
        defaults.TF_PREFIX,
    ]
    for name, kind, v in [
        ("publish_markers", "bool", False),
        ("ddim_steps", "int", 1),
        ("dat_lambda", "float", 0.25),
    ]:
        assert set_one(name, kind, v).successful, name
    assert get("publish_markers", "ddim_steps", "dat_lambda") == [False, 1, 0.25]
    # frames sent after the change (stamped 41; one in flight before it may still carry markers)
    feed.stamp(41)

    def after() -> list:
        return [m for m in out.humans if m.header.stamp.sec == 41]

    assert spin_until(executor, lambda: len(after()) >= 3, 120, feed), "the node stopped"
    later = [m for a in out.markers for m in a.markers if m.header.stamp.sec == 41]
    assert not later, "markers published after publish_markers was set to false"
    assert node.pipe.cfg.steps == 1 and node.pipe.cfg.dat.scale == 0.25
    assert node.stats["failed"] == 0


# ---- target_frame through TF -----------------------------------------------------------------


def test_target_frame_through_a_static_transform(running):
    """With ``target_frame`` and no transform yet, frames are dropped with the reason; once a
    static transform broadcaster gives ``base_link -> camera_optical_frame``, humans, markers
    and the people's TF frames come in ``base_link``, moved by that transform: mapped back
    into the camera, the joints stand in front of it and project onto their 2D keypoints."""
    from geometry_msgs.msg import TransformStamped
    from scipy.spatial.transform import Rotation
    from tf2_ros import StaticTransformBroadcaster

    node, probe, executor = running("tf_probe", target_frame="base_link", publish_debug_image=False)
    out = Outputs(probe)
    feed = Camera(probe, 50)
    K = feed.K
    assert spin_until(executor, lambda: node.stats["failed"] >= 2, 60, feed)
    assert not out.humans
    assert "no transform from 'camera_optical_frame' to target_frame 'base_link'" in node.stats["last_error"]

    R = Rotation.from_euler("xyz", [-90, 0, -90], degrees=True).as_matrix()  # optical (z ahead) -> x ahead
    t = np.array([0.3, -0.2, 1.2])
    tf = TransformStamped()
    tf.header.frame_id, tf.child_frame_id = "base_link", FRAME
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = map(float, t)
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z, tf.transform.rotation.w = x, y, z, w
    static = StaticTransformBroadcaster(probe)
    static.sendTransform(tf)

    def bodies():
        return [tr for msg in out.tf for tr in msg.transforms if tr.child_frame_id.startswith(defaults.TF_PREFIX)]

    assert spin_until(executor, lambda: out.humans and out.markers and bodies(), 60, feed)
    humans = out.humans[-1]
    assert humans.header.frame_id == "base_link" and stamp_of(humans.header) == (50, 5000)
    assert all(m.header.frame_id == "base_link" for a in out.markers[-1:] for m in a.markers if m.action == 0)
    assert all(tr.header.frame_id == "base_link" for tr in bodies())
    joints = np.array([[j.x, j.y, j.z] for j in humans.humans[0].joints])
    in_camera = (joints - t) @ R  # R^T (q - t), row-wise
    assert np.all(in_camera[:, 2] > 0.3), "the person is not in front of the camera"
    uv = in_camera @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    # keypoints_2d are the joints projected in the camera, before the move to base_link
    assert np.abs(uv - np.reshape(humans.humans[0].keypoints_2d, (-1, 2))).max() < 0.5
    # in base_link the camera looks along +x: the person is ahead of the robot, not beside it
    assert np.median(joints[:, 0]) > t[0] + 0.3


# ---- nothing drawn or built for nobody --------------------------------------------------------


def test_the_full_mesh_overlay_and_markers_only_for_subscribers(running, ros):
    """With only ``~/humans`` subscribed, the node neither up-samples the full mesh nor builds
    markers or the overlay; once a viewer subscribes to ``~/markers`` and ``~/debug_image``,
    they come (the overlay with the full mesh), and stop being made when it leaves."""
    from hmdiff_msgs.msg import HumanArray
    from sensor_msgs.msg import Image
    from visualization_msgs.msg import MarkerArray

    node, probe, executor = running("consumer_probe")
    humans, markers, debug = [], [], []
    probe.create_subscription(HumanArray, "/hmdiff/humans", humans.append, 10)
    feed = Camera(probe, 80)
    assert spin_until(executor, lambda: len(humans) >= 2, 60, feed)
    assert node.pipe.cfg.full_mesh is False, "the full mesh was up-sampled for nobody"
    viewer = ros.create_node("viewer_probe")
    executor.add_node(viewer)
    subs = [
        viewer.create_subscription(MarkerArray, "/hmdiff/markers", markers.append, 10),
        viewer.create_subscription(Image, "/hmdiff/debug_image", debug.append, 10),
    ]
    assert spin_until(executor, lambda: markers and debug, 60, feed), "no markers or overlay for a viewer"
    assert node.pipe.cfg.full_mesh is True
    for sub in subs:
        viewer.destroy_subscription(sub)
    n = len(humans)
    assert spin_until(executor, lambda: len(humans) >= n + 2, 60, feed)
    assert node.pipe.cfg.full_mesh is False
    executor.remove_node(viewer)
    viewer.destroy_node()
