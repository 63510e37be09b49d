"""REP-155 per-body messages (hmdiff_ros/ros/hri.py) without ROS: the 18 skeleton points in
OpenPose-COCO order, normalised and clipped, the body's box, and their CDR round trip through
rosbags with hri_msgs' definitions."""

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")

from test_ros_messages import person  # noqa: E402

from hmdiff_ros.body.joints import JOINT_INDEX  # noqa: E402
from hmdiff_ros.ros import convert as C  # noqa: E402
from hmdiff_ros.ros import hri  # noqa: E402


def test_skeleton_points_follow_rep155_order_normalised_and_clipped():
    uv = np.zeros((25, 2))
    for i in JOINT_INDEX.values():
        uv[i] = (10 * i + 5, 4 * i + 1)
    conf = np.linspace(0, 1, 25)
    pts = hri.skeleton_2d(uv, conf, width=200, height=100)
    assert pts.shape == (18, 3)
    # Skeleton2D's constants: NOSE 0, NECK 1, RIGHT_SHOULDER 2, ... LEFT_EYE 14, RIGHT_EAR 17
    for k, name in [
        (0, "nose"),
        (1, "neck"),
        (2, "right_shoulder"),
        (7, "left_wrist"),
        (13, "left_ankle"),
        (17, "right_ear"),
    ]:
        i = JOINT_INDEX[name]
        assert pts[k, 2] == pytest.approx(conf[i])
        assert pts[k, 0] == pytest.approx(min((10 * i + 5) / 200, 1.0))
        assert pts[k, 1] == pytest.approx(min((4 * i + 1) / 100, 1.0))
    assert (pts[:, :2] >= 0).all() and (pts[:, :2] <= 1).all()
    # a joint off the image is clipped to its border; a NaN confidence is 0
    uv[JOINT_INDEX["nose"]] = (-50, 500)
    conf[JOINT_INDEX["nose"]] = np.nan
    assert hri.skeleton_2d(uv, conf, 200, 100)[0].tolist() == [0.0, 1.0, 0.0]


def test_roi_surrounds_the_joints_with_a_margin_inside_the_image():
    uv = np.array([[50.0, 20.0], [150.0, 80.0], [100.0, 50.0]])
    x0, y0, x1, y1 = hri.roi(uv, 200, 100, margin=0.1)
    assert (x0, y0, x1, y1) == pytest.approx((40 / 200, 14 / 100, 160 / 200, 86 / 100))
    assert hri.roi(uv * 4 - 200, 200, 100).tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])


def test_body_messages_round_trip_under_each_bodys_namespace():
    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    hdr = C.header(f, 4, 2, "cam")
    people = [person(track_id=0), person(track_id=7, seed=1)]
    msgs = hri.body_messages(f, hdr, people, ["0", "7"], 100, 100)
    assert set(msgs) == {f"/humans/bodies/{i}/{t}" for i in ("0", "7") for t in ("skeleton2d", "roi")}
    sk = msgs["/humans/bodies/7/skeleton2d"]
    back = store.deserialize_cdr(store.serialize_cdr(sk, hri.SKELETON_2D), hri.SKELETON_2D)
    assert back.header.stamp.sec == 4 and len(back.skeleton) == 18
    nose = people[1].joints_uv[JOINT_INDEX["nose"]] / 100
    assert (back.skeleton[0].x, back.skeleton[0].y) == pytest.approx(tuple(np.clip(nose, 0, 1)), abs=1e-6)
    roi = store.deserialize_cdr(store.serialize_cdr(msgs["/humans/bodies/0/roi"], hri.ROI_2D), hri.ROI_2D)
    assert 0 <= roi.xmin < roi.xmax <= 1 and 0 <= roi.ymin < roi.ymax <= 1 and roi.c == pytest.approx(0.87)


def _forward(urdf_text: str, angles: dict, root_rot: np.ndarray, root_pos: np.ndarray) -> dict:
    """Each link's position in the camera frame, by walking the URDF as robot_state_publisher does
    (origin translation, then the rotation about the joint's axis)."""
    import xml.etree.ElementTree as ET

    def rot(axis, q):
        a = np.asarray(axis, float) / np.linalg.norm(axis)
        k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        return np.eye(3) + np.sin(q) * k + (1 - np.cos(q)) * k @ k

    robot = ET.fromstring(urdf_text)
    joints = {j.find("child").get("link"): j for j in robot.findall("joint")}
    pose = {}

    def of(link):
        if link not in pose:
            if link not in joints:
                pose[link] = (root_rot, root_pos)
            else:
                j = joints[link]
                R, p = of(j.find("parent").get("link"))
                xyz = [float(v) for v in j.find("origin").get("xyz").split()]
                q = angles[j.get("name")] if j.get("type") == "revolute" else 0.0
                axis = (
                    [float(v) for v in j.find("axis").get("xyz").split()] if j.find("axis") is not None else [1, 0, 0]
                )
                pose[link] = (R @ rot(axis, q), p + R @ np.array(xyz))
        return pose[link]

    return {link.get("name"): of(link.get("name"))[1] for link in robot.findall("link")}


def _posed_joints(seed: int) -> np.ndarray:
    """A plausible person: the demo's mean-ish pose perturbed, joints in the camera frame."""
    rng = np.random.default_rng(seed)
    j = np.zeros((25, 3))
    base = {
        "pelvis": (0, 0, 0),
        "neck": (0, -0.5, 0.02),
        "left_shoulder": (0.18, -0.5, 0.02),
        "right_shoulder": (-0.18, -0.5, 0.02),
        "left_elbow": (0.25, -0.25, 0.0),
        "right_elbow": (-0.25, -0.25, 0.1),
        "left_wrist": (0.28, -0.02, -0.1),
        "right_wrist": (-0.2, -0.05, -0.1),
        "left_hip": (0.1, 0, 0),
        "right_hip": (-0.1, 0, 0),
        "left_knee": (0.12, 0.42, -0.05),
        "right_knee": (-0.1, 0.42, 0.05),
        "left_ankle": (0.12, 0.82, 0.0),
        "right_ankle": (-0.12, 0.8, 0.02),
        "left_ear": (0.07, -0.65, 0.05),
        "right_ear": (-0.07, -0.65, 0.05),
        "left_eye": (0.03, -0.68, -0.06),
        "right_eye": (-0.03, -0.68, -0.06),
        "nose": (0, -0.64, -0.09),
        "head_top": (0, -0.78, 0.04),
    }
    for name, xyz in base.items():
        j[JOINT_INDEX[name]] = xyz
    j += rng.normal(0, 0.03, j.shape)
    j[JOINT_INDEX["pelvis"]] = 0.5 * (j[JOINT_INDEX["left_hip"]] + j[JOINT_INDEX["right_hip"]])
    j[JOINT_INDEX["neck"]] = 0.5 * (j[JOINT_INDEX["left_shoulder"]] + j[JOINT_INDEX["right_shoulder"]])
    return j + [0.3, 0.1, 3.0]


@pytest.mark.parametrize("seed", range(5))
def test_the_urdf_and_joint_angles_put_the_links_on_the_joints(seed):
    """The URDF made from a frame's lengths, driven by that frame's joint angles, puts the 15
    REP-155 links on the frame's joints (walked here independently of the angle code); a
    straight arm and a frame with other lengths still come out right or close."""
    from hmdiff_ros.ros import hri_body as H
    from hmdiff_ros.ros.frames import body_rotation

    j = _posed_joints(seed)
    if seed == 4:  # a straight arm: the hinge axis is undetermined
        sh, el = j[JOINT_INDEX["left_shoulder"]], j[JOINT_INDEX["left_elbow"]]
        j[JOINT_INDEX["left_wrist"]] = el + (el - sh) * 0.9
    text = H.urdf("3", H.lengths(j))
    links = _forward(text, H.joint_angles("3", j), body_rotation(j), j[JOINT_INDEX["pelvis"]])
    targets = H.link_targets("3", j)
    assert len(targets) == 15 and set(targets) <= set(links)
    for name, where in targets.items():
        assert np.linalg.norm(links[name] - where) < 1e-4, name  # the URDF rounds to 10 micrometres
    # another frame of the same person (other bone lengths by a few cm): close, not exact
    k = _posed_joints(seed + 10)
    links = _forward(text, H.joint_angles("3", k), body_rotation(k), k[JOINT_INDEX["pelvis"]])
    err = max(np.linalg.norm(links[n] - w) for n, w in H.link_targets("3", k).items())
    assert err < 0.25
