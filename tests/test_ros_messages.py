"""ROS 2 messages without ROS: our .msg files parse with rosbags, every published message
round-trips through CDR (Humble and Jazzy definitions), marker geometry, TF, image encodings."""

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")

from hmdiff_ros.body.joints import JOINT_INDEX, JOINT_NAMES  # noqa: E402
from hmdiff_ros.body.topology import Topology  # noqa: E402
from hmdiff_ros.ros import bridge, frames  # noqa: E402
from hmdiff_ros.ros import convert as C  # noqa: E402

pytestmark = pytest.mark.ros

DISTROS = ("humble", "jazzy")


def person(track_id=3, seed=0, full=False):
    rng = np.random.default_rng(seed)
    topo = Topology.load()
    joints = rng.normal(0, 0.3, (25, 3)) + [0, 0, 3]
    joints[JOINT_INDEX["left_hip"]] = joints[JOINT_INDEX["pelvis"]] + [0.1, 0, 0]
    joints[JOINT_INDEX["right_hip"]] = joints[JOINT_INDEX["pelvis"]] - [0.1, 0, 0]
    joints[JOINT_INDEX["neck"]] = joints[JOINT_INDEX["pelvis"]] + [0, -0.5, 0]  # up is -y in the optical frame
    return SimpleNamespace(
        box=np.array([10.0, 20.0, 110.0, 120.0]),
        score=0.87,
        track_id=track_id,
        joint_names=JOINT_NAMES,
        joints=joints,
        visibility=rng.random(25),
        joint_std=rng.random(25) * 0.02,
        joints_uv=rng.random((25, 2)) * 100,
        coarse_vertices=rng.normal(0, 0.3, (topo.num_coarse, 3)) + [0, 0, 3],
        vertices=rng.normal(0, 0.3, (topo.num_full, 3)) + [0, 0, 3] if full else None,
    )


@pytest.mark.parametrize("distro", DISTROS)
def test_msg_files_parse_and_human_array_round_trips(distro):
    store = C.typestore_for(distro)
    assert {C.HUMAN, C.HUMAN_ARRAY} <= set(store.types)
    f = C.MessageFactory.for_rosbags(store)
    hdr = C.header(f, 12, 345, "camera_color_optical_frame")
    msg = C.human_array_msg(f, hdr, [person(), person(track_id=-1, seed=1)], with_vertices=True)
    back = store.deserialize_cdr(store.serialize_cdr(msg, C.HUMAN_ARRAY), C.HUMAN_ARRAY)
    assert back.header.frame_id == "camera_color_optical_frame" and back.header.stamp.nanosec == 345
    h = back.humans[0]
    assert h.id == 3 and h.joint_names == list(JOINT_NAMES) and len(h.joints) == 25
    np.testing.assert_allclose([h.joints[5].x, h.joints[5].y, h.joints[5].z], person().joints[5], atol=1e-9)
    assert h.keypoints_2d.shape == (50,) and h.joint_std.shape == (25,) and len(h.coarse_vertices) == 600
    assert h.mesh_topology == "anny_coarse_600" and back.humans[1].id == -1
    q = h.root_pose.orientation
    assert abs(q.x**2 + q.y**2 + q.z**2 + q.w**2 - 1) < 1e-9


def test_body_frame_points_forward_left_up():
    p = person()
    rot = frames.body_rotation(p.joints)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rot[:, 1], [1, 0, 0], atol=1e-9)  # left: from the right hip to the left one
    np.testing.assert_allclose(rot[:, 2], [0, -1, 0], atol=1e-9)  # up: towards the neck (-y, optical frame)
    assert np.linalg.det(rot) > 0.999
    for r in (rot, np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        x, y, z, w = frames.quaternion(r)
        back = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        np.testing.assert_allclose(back, r, atol=1e-9)


@pytest.mark.parametrize("distro", DISTROS)
def test_markers_geometry_colours_and_deletion(distro):
    store = C.typestore_for(distro)
    f = C.MessageFactory.for_rosbags(store)
    topo = Topology.load()
    hdr = C.header(f, 1, 0, "cam")
    people = [person(track_id=0), person(track_id=5, seed=2, full=True)]
    msg = C.marker_array_msg(f, hdr, people, topo.coarse_faces, topo.full_faces, mesh="full")
    back = store.deserialize_cdr(
        store.serialize_cdr(msg, "visualization_msgs/msg/MarkerArray"), "visualization_msgs/msg/MarkerArray"
    )
    m = back.markers
    assert m[0].action == C.DELETEALL and len(m) == 1 + 4 * 2
    mesh0, mesh1 = m[1], m[5]
    assert mesh0.type == C.TRIANGLE_LIST and len(mesh0.points) == 3 * len(topo.coarse_faces)  # no full mesh: coarse
    assert len(mesh1.points) == 3 * len(topo.full_faces)
    assert all(x.header.frame_id == "cam" for x in m[1:])
    assert (mesh0.id, mesh1.id) == (0, 20) and (mesh0.color.r, mesh0.color.g) != (mesh1.color.r, mesh1.color.g)
    skel = m[2]
    assert skel.type == C.LINE_LIST and len(skel.points) % 2 == 0 and skel.scale.x > 0
    assert m[3].type == C.SPHERE_LIST and len(m[3].points) == 25
    assert m[4].type == C.TEXT_VIEW_FACING and m[4].text == "person_0"
    assert " " not in m[8].text  # RViz 2 draws a space as wide as its default 1 m characters
    assert m[1].lifetime.nanosec > 0  # markers of people who leave expire even without a new frame
    none = C.marker_array_msg(f, hdr, people, topo.coarse_faces, mesh="none")
    assert len(none.markers) == 1 + 3 * 2
    with pytest.raises(ValueError, match="mesh must be one of"):
        C.marker_array_msg(f, hdr, people, topo.coarse_faces, mesh="dense")


def test_tf_frames_for_bodies_and_joints():
    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    hdr = C.header(f, 3, 5, "cam")
    p = person(track_id=7)
    tfs = frames.transforms(f, hdr, [p], joints=True)
    assert len(tfs) == 1 + 25
    body = tfs[0]
    assert (body.header.frame_id, body.child_frame_id) == ("cam", "hmdiff_body_7")
    assert body.header.stamp.sec == 3
    t = body.transform.translation
    np.testing.assert_allclose([t.x, t.y, t.z], p.joints[JOINT_INDEX["pelvis"]])
    # a joint frame, composed with its body frame, lands on the joint
    rot = frames.body_rotation(p.joints)
    k = 1 + JOINT_INDEX["left_wrist"]
    assert tfs[k].header.frame_id == "hmdiff_body_7" and tfs[k].child_frame_id == "hmdiff_body_7/left_wrist"
    local = tfs[k].transform.translation
    np.testing.assert_allclose(
        rot @ [local.x, local.y, local.z] + p.joints[JOINT_INDEX["pelvis"]],
        p.joints[JOINT_INDEX["left_wrist"]],
        atol=1e-9,
    )
    for tf in tfs[:2]:
        store.deserialize_cdr(
            store.serialize_cdr(tf, "geometry_msgs/msg/TransformStamped"), "geometry_msgs/msg/TransformStamped"
        )


def test_people_move_into_a_target_frame():
    from scipy.spatial.transform import Rotation

    from hmdiff_ros.pipeline.pipeline import PersonResult

    ns = person(full=True)
    p = PersonResult(
        box=ns.box,
        score=ns.score,
        joints=ns.joints,
        joints_uv=ns.joints_uv,
        prior_uv=ns.joints_uv,
        visibility=ns.visibility,
        joint_std=ns.joint_std,
        coarse_vertices=ns.coarse_vertices,
        vertices=ns.vertices,
        translation=ns.joints[JOINT_INDEX["pelvis"]],
        track_id=ns.track_id,
    )
    R = Rotation.from_euler("xyz", [0.3, -1.2, 2.0]).as_matrix()
    t = np.array([1.0, -2.0, 0.5])
    # TF hands over a Transform: quaternion and translation
    f = C.MessageFactory.for_rosbags(C.typestore_for("humble"))
    tr = frames.transform_stamped(f, C.header(f, 1, 0, "base_link"), "base_link", "cam", t, R).transform
    R2, t2 = frames.rigid_from_transform(tr)
    np.testing.assert_allclose(R2, R, atol=1e-12)
    np.testing.assert_allclose(t2, t)
    (q,) = frames.people_in_frame([p], R2, t2)
    np.testing.assert_allclose(q.joints, p.joints @ R.T + t, atol=1e-9)
    np.testing.assert_allclose(q.vertices, p.vertices @ R.T + t, atol=1e-9)
    np.testing.assert_allclose(q.coarse_vertices, p.coarse_vertices @ R.T + t, atol=1e-9)
    np.testing.assert_allclose(q.translation, R @ p.translation + t, atol=1e-9)
    np.testing.assert_allclose(q.joint_std, p.joint_std)  # distances do not change
    np.testing.assert_allclose(q.box, p.box)  # pixels do not change
    np.testing.assert_allclose(frames.body_rotation(q.joints), R @ frames.body_rotation(p.joints), atol=1e-9)
    assert p.joints is ns.joints, "the input is not modified"
    with pytest.raises(ValueError, match="not a rotation"):
        frames.rotation_from_quaternion(0, 0, 0, 0)


def test_camera_info_round_trips():
    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    info = bridge.camera_info_msg(f, C.header(f, 0, 0, "cam"), K, 640, 480)
    info = store.deserialize_cdr(store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"), "sensor_msgs/msg/CameraInfo")
    np.testing.assert_allclose(bridge.intrinsics_from_camera_info(info), K)
    assert (info.width, info.height) == (640, 480) and info.p[2] == 320
    info = SimpleNamespace(k=np.zeros(9))
    assert bridge.intrinsics_from_camera_info(info) is None
    info = SimpleNamespace(k=np.array([500.0, 0, 320, 0, 500, 240, 0, 0, 1]))
    np.testing.assert_allclose(bridge.intrinsics_from_camera_info(info)[0], [500, 0, 320])


@pytest.mark.parametrize("fmt", ["jpeg", "png", "rgb8; jpeg compressed bgr8"])
def test_compressed_images_decode_and_bad_ones_are_named(fmt):
    import cv2

    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    rng = np.random.default_rng(1)
    rgb = np.kron(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    ext = ".png" if "png" in fmt else ".jpg"
    ok, buf = cv2.imencode(ext, rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    msg = f.make("sensor_msgs/msg/CompressedImage", header=C.header(f, 0, 0, "cam"), format=fmt, data=buf.ravel())
    out = bridge.image_to_rgb(msg)
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - rgb).mean() < (1 if ext == ".png" else 8), "colours kept (not BGR)"
    broken = f.make("sensor_msgs/msg/CompressedImage", header=msg.header, format=fmt, data=buf.ravel()[:20])
    with pytest.raises(ValueError, match="cannot decode the .* image"):
        bridge.image_to_rgb(broken)


def _info(K, width, height, binning=(0, 0), roi=(0, 0, 0, 0)):
    """A CameraInfo as rclpy gives it (``k`` an ``array.array``), without ROS."""
    import array

    x, y, w, h = roi
    return SimpleNamespace(
        k=array.array("d", np.asarray(K, float).ravel()),
        width=width,
        height=height,
        binning_x=binning[0],
        binning_y=binning[1],
        roi=SimpleNamespace(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False),
    )


def test_intrinsics_for_image_uses_k_only_for_its_image_size():
    K = np.array([[500.0, 0, 320], [0, 505, 240], [0, 0, 1]])
    assert bridge.intrinsics_for_image(None, 640, 480) == (None, None)
    got, why = bridge.intrinsics_for_image(_info(K, 640, 480), 640, 480)
    np.testing.assert_allclose(got, K)
    assert why is None
    got, why = bridge.intrinsics_for_image(_info(K, 640, 480), 320, 240)
    assert got is None and why == "CameraInfo is for 640x480 images but the image is 320x240"
    # a rosbags message, through CDR
    store = C.typestore_for("jazzy")
    f = C.MessageFactory.for_rosbags(store)
    msg = bridge.camera_info_msg(f, C.header(f, 0, 0, "cam"), K, 640, 480)
    msg = store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo"), "sensor_msgs/msg/CameraInfo")
    np.testing.assert_allclose(bridge.intrinsics_for_image(msg, 640, 480)[0], K)
    assert bridge.intrinsics_for_image(msg, 641, 480)[0] is None


def test_intrinsics_for_image_follows_binning_and_roi_as_image_geometry_does():
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    got, why = bridge.intrinsics_for_image(_info(K, 640, 480, binning=(2, 2)), 320, 240)
    np.testing.assert_allclose(got, [[250, 0, 160], [0, 250, 120], [0, 0, 1]])
    got, why = bridge.intrinsics_for_image(_info(K, 640, 480, roi=(100, 50, 400, 300)), 400, 300)
    np.testing.assert_allclose(got, [[500, 0, 220], [0, 500, 190], [0, 0, 1]])
    got, why = bridge.intrinsics_for_image(_info(K, 640, 480, binning=(2, 2), roi=(100, 50, 400, 300)), 400, 300)
    assert got is None and why == "CameraInfo is for 200x150 images (ROI 400x300, binning 2x2) but the image is 400x300"


def test_intrinsics_for_image_refuses_uncalibrated_and_implausible_k():
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    assert bridge.intrinsics_for_image(_info(np.zeros(9), 640, 480), 640, 480) == (
        None,
        "CameraInfo K is all zeros (uncalibrated camera)",
    )
    # width and height 0: the size is unknown, a plausible K is used
    np.testing.assert_allclose(bridge.intrinsics_for_image(_info(K, 0, 0), 640, 480)[0], K)
    got, why = bridge.intrinsics_for_image(_info(K, 0, 0), 64, 48)  # principal point far outside a 64x48 image
    assert got is None and why.startswith("CameraInfo K ") and "principal point" in why and "64x48" in why
    for bad, what in [
        (np.diag([-500.0, 500, 1]), "focal lengths must be positive"),
        (np.where(np.eye(3) > 0, np.nan, 0.0), "finite"),
        (np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 0]]), "last two rows"),
    ]:
        got, why = bridge.intrinsics_for_image(_info(bad, 640, 480), 640, 480)
        assert got is None and why.startswith("CameraInfo K ") and what in why, why
    got, why = bridge.intrinsics_for_image(SimpleNamespace(k=[1.0, 2.0], width=640, height=480), 640, 480)
    assert got is None and why == "CameraInfo K has 2 values, not 9"


def test_rclpy_style_arrays_are_what_the_generated_setters_take_as_they_are():
    """rclpy's generated setters keep an ``array.array`` of the field's type code as it is and
    check any other sequence element by element (~50 ms for a VGA image)."""
    import array
    import importlib.util

    f = C.MessageFactory(lambda name: SimpleNamespace, rclpy_style=True)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = bridge.image_msg(f, None, rgb)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B" and msg.data.tobytes() == rgb.tobytes()
    np.testing.assert_array_equal(bridge.image_to_rgb(msg), rgb)
    assert f.floats([0.5, 2.0]).typecode == "f" and f.floats([0.5], "float64").typecode == "d"
    if importlib.util.find_spec("sensor_msgs") is not None:  # a ROS 2 workspace: its generated class
        ros = C.MessageFactory.for_rclpy()
        image = bridge.image_msg(ros, C.header(ros, 1, 2, "c"), rgb)
        image.data = msg.data  # through the setter
        assert image.data.tobytes() == rgb.tobytes()
        np.testing.assert_array_equal(bridge.image_to_rgb(image), rgb)


def test_markers_outlive_the_frame_interval_of_a_slow_node():
    """A node publishing frames further apart than 0.5 s (the full mesh beside RViz on 2 cores)
    gave markers that lived 0.5 s: RViz showed the person only part of the time. They now live
    2.5 frame intervals when that is longer than ``marker_lifetime_s`` (at most 10 s)."""
    from hmdiff_ros.ros.params import PARAMETERS, frame_options

    values = {name: default for name, (default, *_rest) in PARAMETERS.items()}
    assert frame_options(values, 1, False, True).marker_lifetime_s == 0.5
    assert frame_options(values, 1, False, True, frame_interval_s=0.1).marker_lifetime_s == 0.5
    assert frame_options(values, 1, False, True, frame_interval_s=1.3).marker_lifetime_s == pytest.approx(3.25)
    assert frame_options(values, 1, False, True, frame_interval_s=60.0).marker_lifetime_s == 10.0
    values["marker_lifetime_s"] = 4.0
    assert frame_options(values, 1, False, True, frame_interval_s=1.3).marker_lifetime_s == 4.0
