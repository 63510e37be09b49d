"""``hmdiff bag``: a bag written here from the public-domain demo photo goes through the
pipeline without ROS; the output holds the input topics and our topics, stamps preserved, and
decodes from its own schemas; REP-155 names, the mesh resolution, --no-tf, and bags that cannot
be read. With a stand-in pipeline (no model): tests/test_ros_bag_standin.py."""

import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")

from hmdiff_ros.cli import main  # noqa: E402
from hmdiff_ros.pipeline.io import read_image  # noqa: E402
from hmdiff_ros.pipeline.run import DEMO_IMAGE  # noqa: E402
from hmdiff_ros.ros import bridge  # noqa: E402
from hmdiff_ros.ros import convert as C  # noqa: E402

needs_pipeline = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe is not installed")


STAMPS = [(100, 0), (100, 50_000_000), (100, 100_000_000)]


def write_input_bag(path, storage="sqlite3", bad_frame=True):
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    rgb = read_image(DEMO_IMAGE)[::2, ::2].copy()  # 256 x 256
    h, w = rgb.shape[:2]
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        img_c = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        info_c = writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for k, (sec, ns) in enumerate(STAMPS):
            hdr = C.header(f, sec, ns, "camera_optical_frame")
            t = sec * 10**9 + ns
            info = bridge.camera_info_msg(f, hdr, np.array([[300.0, 0, w / 2], [0, 300, h / 2], [0, 0, 1]]), w, h)
            writer.write(info_c, t, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            enc, data = ("bgr8", rgb[..., ::-1]) if k == 1 else ("rgb8", rgb)
            if bad_frame and k == 2:
                enc = "bayer_rggb8"
            img = f.make(
                "sensor_msgs/msg/Image",
                header=hdr,
                height=h,
                width=w,
                encoding=enc,
                is_bigendian=0,
                step=3 * w,
                data=np.ascontiguousarray(data).ravel(),
            )
            writer.write(img_c, t, store.serialize_cdr(img, "sensor_msgs/msg/Image"))


@needs_pipeline
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_round_trip(tmp_path, capsys, storage):
    import json

    from rosbags.highlevel import AnyReader

    src, dst = tmp_path / "in", tmp_path / "out"
    write_input_bag(src, storage=storage)
    rc = main(["bag", str(src), str(dst), "--storage", storage, "--hypotheses", "2", "--steps", "2", "--json"])
    assert rc == 1, "one frame (bayer) failed: listed with its reason, the others written"
    captured = capsys.readouterr()
    assert "1 of 3 frames failed" in captured.err and "bayer_rggb8" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["frames"] == 2 and summary["dropped"] == 1 and summary["people"] == 2
    assert summary["image_topic"] == "/camera/image_raw" and summary["camera_info_topic"] == "/camera/camera_info"
    store = C.typestore_for("humble")
    with AnyReader([dst], default_typestore=store) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {
            "/camera/image_raw": "sensor_msgs/msg/Image",
            "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
            "/hmdiff/humans": C.HUMAN_ARRAY,
            "/hmdiff/markers": "visualization_msgs/msg/MarkerArray",
            "/hmdiff/debug_image": "sensor_msgs/msg/Image",
            "/tf": "tf2_msgs/msg/TFMessage",
        }
        humans = [
            (t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages() if c.topic == "/hmdiff/humans"
        ]
        assert [t for t, _ in humans] == [s * 10**9 + n for s, n in STAMPS[:2]]
        for (_, msg), (sec, ns) in zip(humans, STAMPS, strict=False):
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sec, ns)
            assert msg.header.frame_id == "camera_optical_frame"
            (h,) = msg.humans
            assert h.id == 0, "one track across the frames"
            z = np.array([p.z for p in h.joints])
            assert len(h.joints) == 25 and (z > 0.3).all(), "in front of the camera"
        tfs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/tf"]
        assert len(tfs) == 2, "one TF message per processed frame"
        for tfm, (_, msg) in zip(tfs, humans, strict=True):
            (tr,) = tfm.transforms
            assert (tr.header.frame_id, tr.child_frame_id) == ("camera_optical_frame", "hmdiff_body_0")
            assert tr.header.stamp == msg.header.stamp
            t = tr.transform.translation
            np.testing.assert_allclose(
                [t.x, t.y, t.z],
                [
                    msg.humans[0].root_pose.position.x,
                    msg.humans[0].root_pose.position.y,
                    msg.humans[0].root_pose.position.z,
                ],
                atol=1e-6,
            )
        count = sum(1 for c, _, _ in reader.messages() if c.topic == "/camera/image_raw")
        assert count == 3, "input topics copied unchanged"


@needs_pipeline
def test_mcap_output_decodes_from_its_own_schemas(tmp_path):
    """What Foxglove and ``ros2 bag`` do: decode every message from the schema text stored in
    the file (mcap-ros2-support, independent of rosbags)."""
    mcap_reader = pytest.importorskip("mcap.reader", reason="mcap-ros2-support is not installed")
    from mcap_ros2.decoder import DecoderFactory

    src, dst = tmp_path / "in", tmp_path / "out"
    write_input_bag(src, bad_frame=False)
    assert main(["bag", str(src), str(dst), "--hypotheses", "2", "--steps", "2", "--json"]) == 0
    (path,) = dst.glob("*.mcap")
    seen = {}
    with path.open("rb") as stream:
        reader = mcap_reader.make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, _message, decoded in reader.iter_decoded_messages():
            seen.setdefault(channel.topic, (schema.name, decoded))
    assert {t: s for t, (s, _) in seen.items()} == {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/hmdiff/humans": C.HUMAN_ARRAY,
        "/hmdiff/markers": "visualization_msgs/msg/MarkerArray",
        "/hmdiff/debug_image": "sensor_msgs/msg/Image",
        "/tf": "tf2_msgs/msg/TFMessage",
    }
    humans = seen["/hmdiff/humans"][1]
    (h,) = humans.humans
    assert list(h.joint_names)[:3] == ["nose", "left_eye", "right_eye"] and len(h.joints) == 25
    assert len(h.joint_std) == 25 and len(h.keypoints_2d) == 50 and len(h.coarse_vertices) == 600
    kinds = [m.type for m in seen["/hmdiff/markers"][1].markers]
    assert kinds == [0, C.TRIANGLE_LIST, C.LINE_LIST, C.SPHERE_LIST, C.TEXT_VIEW_FACING]
    assert seen["/tf"][1].transforms[0].child_frame_id == "hmdiff_body_0"


@needs_pipeline
def test_bag_rep155_names(tmp_path, capsys):
    from rosbags.highlevel import AnyReader

    src, dst = tmp_path / "in", tmp_path / "out"
    write_input_bag(src, bad_frame=False)
    args = [
        "bag",
        str(src),
        str(dst),
        "--hri",
        "--tf-prefix",
        "body",
        "--mesh",
        "none",
        "--hypotheses",
        "2",
        "--steps",
        "2",
        "--max-frames",
        "2",
    ]
    assert main(args) == 0
    with AnyReader([dst], default_typestore=C.typestore_for("humble")) as reader:
        msgs = [
            (c.topic, reader.deserialize(raw, c.msgtype))
            for c, _, raw in reader.messages()
            if c.topic in ("/humans/bodies/tracked", "/tf")
        ]
    ids = [m for t, m in msgs if t == "/humans/bodies/tracked"]
    assert [list(m.ids) for m in ids] == [["b0"], ["b0"]] and ids[0].header.frame_id == "camera_optical_frame"
    assert {m.transforms[0].child_frame_id for t, m in msgs if t == "/tf"} == {"body_b0"}, "REP-155's body_<id>"
    assert main(["bag", str(src), str(tmp_path / "o2"), "--tf-prefix", "/body"]) == 2
    assert "tf_prefix must be a frame name" in capsys.readouterr().err


@needs_pipeline
def test_bag_mesh_resolution_and_no_tf(tmp_path, capsys):
    from rosbags.highlevel import AnyReader

    from hmdiff_ros.body.topology import Topology

    src, dst = tmp_path / "in", tmp_path / "out"
    write_input_bag(src, bad_frame=False)
    rc = main(
        [
            "bag",
            str(src),
            str(dst),
            "--mesh",
            "full",
            "--no-tf",
            "--max-frames",
            "1",
            "--hypotheses",
            "2",
            "--steps",
            "2",
            "--json",
        ]
    )
    assert rc == 0
    store = C.typestore_for("humble")
    with AnyReader([dst], default_typestore=store) as reader:
        assert "/tf" not in {c.topic for c in reader.connections}
        (markers,) = [
            reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/hmdiff/markers"
        ]
    (mesh,) = [m for m in markers.markers if m.ns == "hmdiff/mesh"]
    assert len(mesh.points) == 3 * len(Topology.load().full_faces), "--mesh full draws the full mesh"
    assert mesh.color.a == 1.0


@needs_pipeline
def test_bag_errors_are_clear(tmp_path, capsys):
    src = tmp_path / "in"
    write_input_bag(src, bad_frame=False)
    assert main(["bag", str(tmp_path / "nothing"), str(tmp_path / "o1")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bag", str(src), str(tmp_path / "o2"), "--image-topic", "/nope"]) == 2
    assert "image topic '/nope' is not in the bag" in capsys.readouterr().err
    assert main(["bag", str(src), str(src)]) == 2
    assert "is the input bag" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8\n")
    assert main(["bag", str(broken), str(tmp_path / "o3")]) == 2
    assert "cannot read bag" in capsys.readouterr().err
    # a named pipe: refused at once (opening it would wait for a writer for ever)
    fifo = tmp_path / "rec.mcap"
    os.mkfifo(fifo)
    assert main(["bag", str(fifo), str(tmp_path / "o4")]) == 2
    assert "is not a regular file or folder (a pipe or a device)" in capsys.readouterr().err


@needs_pipeline
def test_truncated_bag_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "in"
    write_input_bag(src, storage="mcap", bad_frame=False)
    (mcap,) = src.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])
    assert main(["bag", str(src), str(tmp_path / "out"), "--steps", "1", "--hypotheses", "1"]) == 2
    assert "cannot read bag" in capsys.readouterr().err
