"""``publish_hri`` on the real ROS 2 core with an ``hri_msgs`` package built here from the
definitions the node speaks (IdsList, Skeleton2D, NormalizedPointOfInterest2D,
NormalizedRegionOfInterest2D: hri_msgs 2.0.0's): the tracked ids, and per body its skeleton2d,
roi, joint_states and URDF as a body appears, moves and leaves; with a ``robot_state_publisher``
installed, the REP-155 frames it makes from them land on the published joints. Without hri_msgs
(this process) the node says why and publishes its own outputs. Skipped where ROS 2 is not
sourced."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ros_helpers import FRAME, HAVE_ROS, ROOT, activate, make_node

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(
        not HAVE_ROS, reason="rclpy and the built hmdiff_msgs are not available (needs a ROS 2 workspace)"
    ),
]

PACKAGE_XML = """\
    <?xml version="1.0"?>
    <package format="3">
      <name>hri_msgs</name>
      <version>0.0.0</version>
      <description>Test fixture: the hri_msgs messages the node publishes, as ROS4HRI defines them (REP-155)</description>
      <maintainer email="test@example.com">test</maintainer>
      <license>BSD</license>
      <buildtool_depend>ament_cmake</buildtool_depend>
      <buildtool_depend>rosidl_default_generators</buildtool_depend>
      <depend>std_msgs</depend>
      <exec_depend>rosidl_default_runtime</exec_depend>
      <member_of_group>rosidl_interface_packages</member_of_group>
      <export><build_type>ament_cmake</build_type></export>
    </package>
    """


@pytest.fixture(scope="module")
def hri_setup(tmp_path_factory):
    """The ``setup.bash`` of a workspace with the hri_msgs fixture package, built as
    .ci/ros_workspace.sh builds the workspace (Debian's Python, as the core was)."""
    if shutil.which("colcon") is None:
        pytest.skip("needs colcon to build the hri_msgs fixture package")
    from hmdiff_ros.ros import hri
    from hmdiff_ros.ros.convert import HRI_IDS_LIST, HRI_IDS_LIST_DEFINITION

    ws = tmp_path_factory.mktemp("hri_ws")
    src = ws / "src" / "hri_msgs"
    (src / "msg").mkdir(parents=True)
    definitions = {HRI_IDS_LIST: HRI_IDS_LIST_DEFINITION, **hri.DEFINITIONS}
    files = []
    for name, text in definitions.items():
        (src / "msg" / f"{name.split('/')[-1]}.msg").write_text(text)
        files.append(f'"msg/{name.split("/")[-1]}.msg"')
    (src / "package.xml").write_text(textwrap.dedent(PACKAGE_XML))
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.8)\nproject(hri_msgs)\nfind_package(ament_cmake REQUIRED)\n"
        "find_package(rosidl_default_generators REQUIRED)\nfind_package(std_msgs REQUIRED)\n"
        f"rosidl_generate_interfaces(${{PROJECT_NAME}} {' '.join(files)} DEPENDENCIES std_msgs)\nament_package()\n"
    )
    env = {**os.environ, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    build = subprocess.run(
        ["colcon", "--log-base", "log", "build", "--event-handlers", "console_direct-"]
        + ["--cmake-args", "-DBUILD_TESTING=OFF", "-DPython3_EXECUTABLE=/usr/bin/python3"],
        cwd=ws,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    return ws / "install" / "setup.bash"


def _run_probe(setup: Path, script: str, tmp_path: Path) -> dict:
    (tmp_path / "probe.py").write_text(script)
    command = f'source "{setup}" && exec "{sys.executable}" "{tmp_path / "probe.py"}" "{Path(__file__).parent}"'
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


BODIES_PROBE = """\
import json, sys, time
import numpy as np
import rclpy
from hri_msgs.msg import IdsList, NormalizedRegionOfInterest2D, Skeleton2D
from hmdiff_msgs.msg import HumanArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
sys.path.insert(0, sys.argv[1])
from ros_helpers import activate, frame_msgs, make_node, spin_until
from hmdiff_ros.ros.bridge import image_msg
from hmdiff_ros.ros.convert import MessageFactory, header
from hmdiff_ros.ros.hri_bodies import have_state_publisher

rclpy.init()
node = make_node(publish_hri=True, publish_debug_image=False, publish_markers=False)
activate(node)
probe = rclpy.create_node("hri_bodies_probe")
tracked, humans, body = [], [], {"skeleton2d": [], "roi": [], "joint_states": []}
probe.create_subscription(IdsList, "/humans/bodies/tracked", tracked.append, 10)
probe.create_subscription(HumanArray, "/hmdiff/humans", humans.append, 10)
pub = probe.create_publisher(Image, "/image", qos_profile_sensor_data)
info_pub = probe.create_publisher(CameraInfo, "/camera_info", qos_profile_sensor_data)
executor = SingleThreadedExecutor()
executor.add_node(node)
executor.add_node(probe)
tf_buffer = None
if have_state_publisher():
    from tf2_ros import Buffer, TransformListener
    tf_buffer = Buffer()
    TransformListener(tf_buffer, probe)
f = MessageFactory.for_rclpy()
image, info, K = frame_msgs(70)
rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(256, 256, 3)
state = {"rgb": rgb, "sec": 70}
def camera():
    state["sec"] += 1
    hdr = header(f, state["sec"], 0, image.header.frame_id)
    info.header = hdr
    info_pub.publish(info)
    pub.publish(image_msg(f, hdr, state["rgb"]))
out = {}

# 1. a body appears: tracked, its three topics, its URDF parameter (and its frames)
spin_until(executor, lambda: tracked and tracked[-1].ids, 90, camera, rate_hz=5)
bid = tracked[-1].ids[0]
ns = f"/humans/bodies/{bid}"
probe.create_subscription(Skeleton2D, ns + "/skeleton2d", body["skeleton2d"].append, 10)
probe.create_subscription(NormalizedRegionOfInterest2D, ns + "/roi", body["roi"].append, 10)
probe.create_subscription(JointState, ns + "/joint_states", body["joint_states"].append, 10)
spin_until(executor, lambda: all(len(v) >= 2 for v in body.values()), 60, camera, rate_hz=5)
out["id"] = bid
out["tracked_stamp"] = [tracked[-1].header.stamp.sec, tracked[-1].header.frame_id]
out["tracked_vs_humans"] = [[list(m.ids) for m in tracked[-3:]], [["b%d" % h.id for h in m.humans] for m in humans[-3:]]]
out["publishers"] = {t: probe.count_publishers(ns + "/" + t) for t in body}
out["urdf"] = node.get_parameter("human_description_" + bid).value if node.has_parameter("human_description_" + bid) else ""
sk = body["skeleton2d"][-1]
out["skeleton"] = [[p.x, p.y, p.c] for p in sk.skeleton]
out["skeleton_stamp"] = [sk.header.stamp.sec, sk.header.frame_id]
r = body["roi"][-1]
out["roi"] = [r.xmin, r.ymin, r.xmax, r.ymax, r.c]
js = body["joint_states"][-1]
out["joint_names"], out["positions"] = list(js.name), list(js.position)
out["uv"] = list(humans[-1].humans[0].keypoints_2d)
if tf_buffer is not None:
    frames = {}
    def have_frames():
        try:
            for link in ("l_wrist", "r_ankle", "head", "l_elbow"):
                t = tf_buffer.lookup_transform(image.header.frame_id, f"{link}_{bid}", rclpy.time.Time())
                frames[link] = [t.transform.translation.x, t.transform.translation.y, t.transform.translation.z]
            return True
        except Exception:
            return False
    spin_until(executor, have_frames, 30, camera, rate_hz=5)
    out["frames"] = frames
    h = humans[-1].humans[0]
    out["joints"] = {n: [p.x, p.y, p.z] for n, p in zip(h.joint_names, h.joints)}

# 2. it moves 40 pixels right: the same id, its skeleton 40/256 further right
state["rgb"] = np.roll(rgb, 40, axis=1)
state["rgb"][:, :40] = rgb[:, :1]
n_before = len(body["skeleton2d"])
spin_until(executor, lambda: len(body["skeleton2d"]) > n_before + 4, 60, camera, rate_hz=5)
out["moved_ids"] = list(tracked[-1].ids)
out["moved_skeleton"] = [[p.x, p.y, p.c] for p in body["skeleton2d"][-1].skeleton]

# 3. it leaves: an empty picture; the id leaves tracked, and after a second its topics and URDF go
state["rgb"] = np.full_like(rgb, 128)
spin_until(executor, lambda: tracked and not tracked[-1].ids, 60, camera, rate_hz=5)
spin_until(executor, lambda: probe.count_publishers(ns + "/roi") == 0, 10, camera, rate_hz=5)
out["left_ids"] = list(tracked[-1].ids)
out["left_publishers"] = {t: probe.count_publishers(ns + "/" + t) for t in body}
out["left_parameter"] = node.has_parameter("human_description_" + bid)
out["state_publisher"] = tf_buffer is not None
print(json.dumps(out))
executor.shutdown()
node.destroy_node()
probe.destroy_node()
rclpy.shutdown()
"""


def test_a_body_appears_moves_and_leaves(ros, hri_setup, tmp_path):
    """REP-155: ``/humans/bodies/tracked`` with the image's stamp and the ids of the people in
    ``~/humans`` (their TF frames are ``body_<id>``); per body, skeleton2d (18 points, normalised,
    on the reprojected joints), roi around them, joint_states naming the URDF's revolute joints,
    the URDF as the node's parameter; moved 40 pixels right, the same id and a skeleton 40/256
    further right; gone, out of ``tracked`` and, a second later, its publishers and parameter
    removed. Where a robot_state_publisher is installed, its REP-155 frames are on the
    published joints. Without hri_msgs (this process) the node says why and publishes its own
    outputs."""
    import xml.etree.ElementTree as ET

    import numpy as np

    from hmdiff_ros.ros import hri

    got = _run_probe(hri_setup, BODIES_PROBE, tmp_path)
    bid = got["id"]
    assert got["tracked_stamp"][1] == FRAME and got["tracked_stamp"][0] > 70
    ids, people = got["tracked_vs_humans"]
    assert [bid] in ids and [bid] in people, got["tracked_vs_humans"]
    assert got["publishers"] == {"skeleton2d": 1, "roi": 1, "joint_states": 1}, got["publishers"]
    skel = np.array(got["skeleton"])
    assert skel.shape == (18, 3) and got["skeleton_stamp"][1] == FRAME
    uv = np.array(got["uv"]).reshape(-1, 2)
    np.testing.assert_allclose(skel[:, :2], hri.skeleton_2d(uv, np.ones(len(uv)), 256, 256)[:, :2], atol=0.02)
    x0, y0, x1, y1, c = got["roi"]
    assert 0 <= x0 < skel[:, 0].min() and skel[:, 0].max() < x1 <= 1 and 0 <= y0 < y1 <= 1 and 0 < c <= 1
    robot = ET.fromstring(got["urdf"])
    revolute = [j.get("name") for j in robot.findall("joint") if j.get("type") == "revolute"]
    assert robot.get("name") == f"human_{bid}" and sorted(got["joint_names"]) == sorted(revolute)
    assert {f"{x}_{bid}" for x in ("body", "torso", "head", "l_wrist", "r_ankle")} <= {
        link.get("name") for link in robot.findall("link")
    }
    assert np.isfinite(got["positions"]).all()

    assert got["moved_ids"] == [bid]
    shift = np.median(np.array(got["moved_skeleton"])[:, 0] - skel[:, 0])
    assert abs(shift - 40 / 256) < 0.03, shift

    assert got["left_ids"] == []
    assert got["left_publishers"] == {"skeleton2d": 0, "roi": 0, "joint_states": 0}
    assert got["left_parameter"] is False

    from hmdiff_ros.ros.hri_bodies import have_state_publisher

    assert got["state_publisher"] == have_state_publisher()
    if got["state_publisher"]:
        assert set(got["frames"]) == {"l_wrist", "r_ankle", "head", "l_elbow"}, "robot_state_publisher's frames"
        names = {"l_wrist": "left_wrist", "r_ankle": "right_ankle", "l_elbow": "left_elbow"}
        for link, joint in names.items():
            err = np.linalg.norm(np.array(got["frames"][link]) - got["joints"][joint])
            assert err < 0.05, (link, err)

    node = make_node(publish_hri=True)
    activate(node)
    assert "hri" not in node._pubs and "humans" in node._pubs and node.hri_bodies is None
    node.destroy_node()
