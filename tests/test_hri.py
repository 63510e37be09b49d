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
