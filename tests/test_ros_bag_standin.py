"""``hmdiff bag`` with a stand-in pipeline (no model): existing outputs and --force, outputs
overlapping the input, SIGINT/SIGTERM mid-run (a readable bag marked partial), signal handlers
only while processing, runs that process nothing, topic types, CameraInfo of another image
size, --max-frames, and an output that cannot be written. The pipeline itself on a bag:
tests/test_ros_bag.py."""

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")

from hmdiff_ros.cli import main  # noqa: E402
from hmdiff_ros.ros import bridge  # noqa: E402
from hmdiff_ros.ros import convert as C  # noqa: E402
from hmdiff_ros.ros.bag import PARTIAL_KEY, process_bag  # noqa: E402

needs_pipeline = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe is not installed")


TESTS = Path(__file__).resolve().parent


class StandInPipeline:
    """What process_bag uses of a pipeline, without a model: nobody is found. It records the K
    and the SIGTERM handler of every call, can be slow, and can say on stdout that it runs."""

    def __init__(self, delay: float = 0.0, announce_after: int | None = None, backend: str | None = "standin"):
        self.cfg = SimpleNamespace(hfov_deg=60.0)
        self.topology = SimpleNamespace(coarse_faces=np.zeros((0, 3), int), full_faces=np.zeros((0, 3), int))
        self.model = SimpleNamespace(backend=backend) if backend else SimpleNamespace()
        self.delay, self.announce_after = delay, announce_after
        self.Ks, self.sigterm_handlers = [], []

    def __call__(self, rgb, K):
        return self.finish(self.prepare(rgb, K)).people

    def prepare(self, rgb, K, boxes=None):  # a stream's first stage (hmdiff_ros.pipeline.stream)
        self.Ks.append(np.array(K))
        self.sigterm_handlers.append(signal.getsignal(signal.SIGTERM))
        if self.announce_after is not None and len(self.Ks) == self.announce_after:
            print("processing", flush=True)
        time.sleep(self.delay)
        return None

    def finish(self, prepared):
        return SimpleNamespace(people=[])


def write_frames_bag(path, frames=5, size=(24, 32), encoding="rgb8", info=None, storage="mcap"):
    """A bag of ``frames`` images on /cam/image and, with ``info=(K, width, height)``, a
    CameraInfo on /cam/info before each."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    h, w = size
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        img_c = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
        info_c = writer.add_connection("/cam/info", "sensor_msgs/msg/CameraInfo", typestore=store) if info else None
        for k in range(frames):
            hdr = C.header(f, 10, k * 1000, "cam")
            if info_c is not None:
                msg = bridge.camera_info_msg(f, hdr, *info)
                writer.write(info_c, 10**10 + k * 1000, store.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo"))
            img = f.make(
                "sensor_msgs/msg/Image",
                header=hdr,
                height=h,
                width=w,
                encoding=encoding,
                is_bigendian=0,
                step=3 * w,
                data=np.full(h * w * 3, k % 256, np.uint8),
            )
            writer.write(img_c, 10**10 + k * 1000, store.serialize_cdr(img, "sensor_msgs/msg/Image"))


def read_output(path):
    """(topic -> message count, custom_data) of a bag folder, read with rosbags; an MCAP file
    carries the same custom_data in its own rosbag2 metadata record."""
    import yaml
    from rosbags.highlevel import AnyReader

    with AnyReader([path], default_typestore=C.typestore_for("humble")) as reader:
        counts = {}
        for conn, _, raw in reader.messages():
            reader.deserialize(raw, conn.msgtype)  # every message decodes
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
    custom = yaml.safe_load((Path(path) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    for mcap in Path(path).glob("*.mcap") if importlib.util.find_spec("mcap") else ():
        from mcap.reader import make_reader

        with mcap.open("rb") as stream:
            (record,) = [m for m in make_reader(stream).iter_metadata() if m.name == "rosbag2"]
        assert yaml.safe_load(record.metadata["serialized_metadata"])["custom_data"] == custom
    return counts, custom


def test_existing_output_is_replaced_only_with_force(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_frames_bag(src, frames=3)
    first = process_bag(src, dst, StandInPipeline(), progress=False)
    assert first["frames"] == 3 and first["error"] is None and not first["replaced"]
    before = sorted(p.name for p in dst.iterdir())
    with pytest.raises(ValueError, match="already exists; choose a new path, or pass --force"):
        process_bag(src, dst, StandInPipeline(), progress=False)
    assert sorted(p.name for p in dst.iterdir()) == before, "refused without touching the output"
    again = process_bag(src, dst, StandInPipeline(), progress=False, force=True, storage="sqlite3")
    assert again["replaced"] and again["frames"] == 3 and again["error"] is None
    assert not list(dst.glob("*.mcap")) and list(dst.glob("*.db3")), "the old bag's files are gone"
    counts, custom = read_output(dst)
    assert counts["/hmdiff/humans"] == 3 and counts["/cam/image"] == 3
    assert custom == {PARTIAL_KEY: "false"}
    counts, _ = read_output(src)
    assert counts == {"/cam/image": 3}, "the input is untouched"


def test_force_replaces_a_folder_left_by_a_killed_run(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_frames_bag(src, frames=2)
    dst.mkdir()
    (dst / "out_0.mcap").write_bytes(b"\x89MCAP0\r\n truncated")  # no metadata.yaml: the writer was killed
    (dst / "metadata.yaml.tmp").write_text("rosbag2_bagfile_information:\n")
    summary = process_bag(src, dst, StandInPipeline(), progress=False, force=True)
    assert summary["replaced"] and summary["frames"] == 2
    assert read_output(dst)[0]["/hmdiff/humans"] == 2


@pytest.mark.parametrize("extra", ["notes.txt", "folder", "link"])
def test_force_never_replaces_what_is_not_a_bag_folder(tmp_path, extra):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_frames_bag(src, frames=1)
    process_bag(src, dst, StandInPipeline(), progress=False)
    if extra == "folder":
        (dst / extra).mkdir()
    elif extra == "link":
        (dst / extra).symlink_to(src)
    else:
        (dst / extra).write_text("the user's notes")
    before = sorted(p.name for p in dst.iterdir())
    with pytest.raises(
        ValueError, match=f"is not replaced, even with --force: it holds more than a rosbag2 folder does \\({extra}\\)"
    ):
        process_bag(src, dst, StandInPipeline(), progress=False, force=True)
    assert sorted(p.name for p in dst.iterdir()) == before


def test_force_never_replaces_a_file(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out.mcap"
    write_frames_bag(src, frames=1)
    dst.write_text("not a folder")
    with pytest.raises(ValueError, match="it is a file, not a bag folder"):
        process_bag(src, dst, StandInPipeline(), progress=False, force=True)
    assert dst.read_text() == "not a folder"


def test_outputs_overlapping_the_input_are_refused(tmp_path):
    src = tmp_path / "in"
    write_frames_bag(src, frames=1)
    files = sorted(p.name for p in src.iterdir())
    with pytest.raises(ValueError, match="is the input bag or inside it"):
        process_bag(src, src, StandInPipeline(), progress=False, force=True)
    with pytest.raises(ValueError, match="is the input bag or inside it"):
        process_bag(src, src / "out", StandInPipeline(), progress=False, force=True)
    (mcap,) = src.glob("*.mcap")
    with pytest.raises(ValueError, match="holds the input bag"):  # the input file inside a bag folder to replace
        process_bag(mcap, src, StandInPipeline(), progress=False, force=True)
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(ValueError, match="is the input bag or inside it"):
        process_bag(src, link, StandInPipeline(), progress=False, force=True)
    assert sorted(p.name for p in src.iterdir()) == files and read_output(src)[0] == {"/cam/image": 1}


CHILD = """
import json, signal, sys
sys.path.insert(0, sys.argv[1])
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also under a runner that ignores it
from test_ros_bag_standin import StandInPipeline
from hmdiff_ros.ros.bag import process_bag
pipe = StandInPipeline(delay=float(sys.argv[5]), announce_after=3)
summary = process_bag(sys.argv[2], sys.argv[3], pipe, progress=False, storage=sys.argv[4])
print(json.dumps(summary), flush=True)
"""


def _wait_for_line(stream, text, timeout):
    found = threading.Event()

    def read():
        for line in stream:
            if line.strip() == text:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout)


@pytest.mark.parametrize(
    "sig,storage,twice",
    [(signal.SIGINT, "mcap", False), (signal.SIGTERM, "sqlite3", False), (signal.SIGINT, "mcap", True)],
    ids=["SIGINT", "SIGTERM", "SIGINT-twice"],
)
def test_a_signal_mid_run_closes_a_readable_partial_bag(tmp_path, sig, storage, twice):
    """One signal: the frame in progress is finished; a second one during a (slow) frame
    stops at once, losing that frame. Either way the output is a closed, readable bag."""
    src, dst = tmp_path / "in", tmp_path / "out"
    frames = 200
    write_frames_bag(src, frames=frames)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    delay = "1.0" if twice else "0.02"  # seconds per frame; the signals arrive during the third frame
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(TESTS), str(src), str(dst), storage, delay],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert _wait_for_line(child.stdout, "processing", timeout=60), child.stderr.read()
        child.send_signal(sig)
        if twice:
            time.sleep(0.1)
            child.send_signal(sig)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    n = summary["frames"]
    assert summary["interrupted"] and summary["partial"] and (n == 2 if twice else 3 <= n < frames)
    name = signal.Signals(sig).name
    assert summary["signal"] == name
    assert (
        summary["error"] == f"interrupted by {name} after {n} frames; '{dst}' holds them and is marked "
        f"{PARTIAL_KEY}: true"
    )
    assert f"{name}: stopping after the current frame" in err
    counts, custom = read_output(dst)
    assert counts["/hmdiff/humans"] == n and counts["/hmdiff/debug_image"] == n
    assert n <= counts["/cam/image"] <= n + 1, "the input copied up to where the run stopped"
    assert custom == {PARTIAL_KEY: "true"}
    assert (dst / "metadata.yaml").is_file()
    # the same output again, to the end
    summary = process_bag(src, dst, StandInPipeline(), progress=False, force=True, storage=storage)
    assert summary["replaced"] and summary["frames"] == frames and summary["error"] is None
    counts, custom = read_output(dst)
    assert counts["/hmdiff/humans"] == frames and custom == {PARTIAL_KEY: "false"}


def test_signal_handlers_only_while_processing_and_only_on_the_main_thread(tmp_path):
    src = tmp_path / "in"
    write_frames_bag(src, frames=2)

    def mine(signum, frame):  # a handler the application had before
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        pipe = StandInPipeline()
        process_bag(src, tmp_path / "o1", pipe, progress=False)
        assert all(h is not mine for h in pipe.sigterm_handlers), "ours while processing"
        assert signal.getsignal(signal.SIGTERM) is mine, "restored afterwards"
        pipe, result = StandInPipeline(), {}
        thread = threading.Thread(target=lambda: result.update(process_bag(src, tmp_path / "o2", pipe, progress=False)))
        thread.start()
        thread.join(60)
        assert result["frames"] == 2 and pipe.sigterm_handlers == [mine, mine], "left alone off the main thread"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_run_that_processes_nothing_is_an_error(tmp_path):
    src = tmp_path / "in"
    write_frames_bag(src, frames=5, encoding="bayer_rggb8")
    summary = process_bag(src, tmp_path / "o1", StandInPipeline(), progress=False)
    assert summary["frames"] == 0 and summary["dropped"] == 5 and not summary["partial"]
    reason = "image encoding 'bayer_rggb8' is not supported"  # whole, without the list of choices
    assert summary["error"] == f"all 5 frames of '/cam/image' were dropped: {reason} (5); no output bag was kept"
    assert summary["removed"] and not (tmp_path / "o1").exists(), "a bag of mere copies of the input is not kept"
    empty = tmp_path / "empty"
    write_frames_bag(empty, frames=0)
    summary = process_bag(empty, tmp_path / "o2", StandInPipeline(), progress=False)
    assert summary["error"] == "'/cam/image' has no image messages: no frame was processed; no output bag was kept"
    partly = tmp_path / "partly"
    write_frames_bag(partly, frames=2)
    summary = process_bag(partly, tmp_path / "o3", StandInPipeline(), progress=False)
    assert summary["error"] is None and summary["frames"] == 2


@needs_pipeline
def test_cli_exits_1_when_every_frame_was_dropped(tmp_path, capsys):
    src = tmp_path / "in"
    write_frames_bag(src, frames=2, encoding="bayer_rggb8")
    assert main(["bag", str(src), str(tmp_path / "out"), "--steps", "1", "--hypotheses", "1", "--json"]) == 1
    assert "all 2 frames of '/cam/image' were dropped" in capsys.readouterr().err


def test_topics_of_the_wrong_type_are_named(tmp_path):
    src = tmp_path / "in"
    K = np.array([[30.0, 0, 16], [0, 30, 12], [0, 0, 1]])
    write_frames_bag(src, frames=1, info=(K, 32, 24))
    with pytest.raises(ValueError) as err:
        process_bag(src, tmp_path / "o1", StandInPipeline(), image_topic="/cam/info", progress=False)
    assert str(err.value).startswith(
        "image topic '/cam/info' carries sensor_msgs/msg/CameraInfo, expected "
        "sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage"
    )
    with pytest.raises(
        ValueError,
        match="camera info topic '/cam/image' carries sensor_msgs/msg/Image, expected sensor_msgs/msg/CameraInfo",
    ):
        process_bag(src, tmp_path / "o2", StandInPipeline(), camera_info_topic="/cam/image", progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists(), "refused before writing"


def test_camera_info_is_used_only_for_images_of_its_size(tmp_path, caplog):
    K = np.array([[30.0, 0, 16], [0, 31, 12], [0, 0, 1]])
    fits, other = tmp_path / "fits", tmp_path / "other"
    write_frames_bag(fits, frames=3, info=(K, 32, 24))
    write_frames_bag(other, frames=3, info=(K * [[20], [20], [1]], 640, 480))  # the full-size calibration
    pipe = StandInPipeline()
    summary = process_bag(fits, tmp_path / "o1", pipe, progress=False)
    assert summary["camera_info_mismatch"] == 0 and summary["backend"] == "standin"
    np.testing.assert_allclose(pipe.Ks, [K] * 3)
    pipe = StandInPipeline(backend=None)
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.ros.bag"):
        summary = process_bag(other, tmp_path / "o2", pipe, progress=False)
    assert summary["camera_info_mismatch"] == 3 and summary["error"] is None and summary["backend"] == "torch"
    why = "CameraInfo is for 640x480 images but the image is 32x24"
    assert summary["camera_info_reasons"] == {why: 3}
    (warning,) = [r.getMessage() for r in caplog.records if "camera info not used" in r.getMessage()]
    assert why in warning, "one warning, naming both sizes"
    from hmdiff_ros.camera import intrinsics_from_fov

    np.testing.assert_allclose(pipe.Ks, [intrinsics_from_fov(32, 24, 60.0)] * 3)


@pytest.mark.parametrize("bad", [0, -3])
def test_max_frames_must_be_positive(tmp_path, bad):
    src = tmp_path / "in"
    write_frames_bag(src, frames=1)
    with pytest.raises(ValueError, match=f"--max-frames must be an integer >= 1, got {bad}"):
        process_bag(src, tmp_path / "out", StandInPipeline(), max_frames=bad, progress=False)
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_written_is_not_left_half_made(tmp_path, monkeypatch):
    import errno

    from rosbags.rosbag2 import Writer

    from hmdiff_ros.ros.bag import process_bag

    src = tmp_path / "in"
    write_frames_bag(src, frames=3)
    real, calls = Writer.write, []

    def full_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Writer, "write", full_disk)
    with pytest.raises(ValueError, match="output bag .* cannot write \\(No space left on device\\); the partial"):
        process_bag(src, tmp_path / "out", StandInPipeline(), progress=False)
    assert not (tmp_path / "out").exists()
