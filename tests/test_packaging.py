"""A non-editable install works away from the source tree: the hmdiff_msgs definitions are
installed as package data (setup.py's build_py), the bag tool's typestore finds them, and
``hmdiff bag`` runs from the installed copy. The build happens in a copy of the working tree,
so the repository gets no build/ or *.egg-info."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUNK = ("build", "dist", "*.egg-info", "hmdiff_ros/ros/msg")


def _junk() -> dict:
    """What a build could leave in the repository, with modification times."""
    return {p.relative_to(ROOT).as_posix(): p.stat().st_mtime_ns for pattern in JUNK for p in ROOT.glob(pattern)}


def _copy_working_tree(dst: Path) -> None:
    """The files git tracks or would track (not the ignored build outputs), as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell source files from build outputs")
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / name
        if src.is_file():  # tracked files deleted in the working tree are skipped
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install --target`` of a copy of the working tree: the site folder."""
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        pytest.skip("pip and setuptools are needed to build the package")
    tmp = tmp_path_factory.mktemp("packaging")
    src, site = tmp / "src", tmp / "site"
    before = _junk()
    _copy_working_tree(src)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-input",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _junk() == before, "the build left files in the repository"
    return site


def _run_installed(site: Path, code: str, *args: str, cwd: Path):
    """``python -c code`` with only the installed copy of hmdiff_ros importable by that name."""
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_the_msg_files_are_installed_as_package_data(installed):
    copies = sorted((installed / "hmdiff_ros" / "ros" / "msg").glob("*.msg"))
    sources = sorted((ROOT / "msg" / "msg").glob("*.msg"))
    assert [p.name for p in copies] == [p.name for p in sources] == ["Human.msg", "HumanArray.msg"]
    for copy, source in zip(copies, sources, strict=True):
        assert copy.read_bytes() == source.read_bytes()


CHECK = """
import json
import hmdiff_ros
from hmdiff_ros.ros import convert as C
defs = C.message_definitions()
store = C.typestore_for("humble")
jazzy = C.typestore_for("jazzy")
print(json.dumps({"package": hmdiff_ros.__file__, "installed_msgs": str(C.INSTALLED_MSG_DIR),
                  "source_msgs_exist": C.MSG_DIR.exists(), "types": sorted(defs),
                  "registered": [t in store.types and t in jazzy.types for t in sorted(defs)]}))
"""


def test_message_definitions_and_typestores_work_from_the_install(installed, tmp_path):
    result = _run_installed(installed, CHECK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(got["package"]).is_relative_to(installed), "the installed copy, not the source tree"
    assert Path(got["installed_msgs"]).is_relative_to(installed) and not got["source_msgs_exist"]
    assert got["types"] == ["hmdiff_msgs/msg/Human", "hmdiff_msgs/msg/HumanArray"]
    assert got["registered"] == [True, True]


BAG = """
import sys
from hmdiff_ros.cli import main
sys.exit(main(["bag", sys.argv[1], sys.argv[2], "--steps", "1", "--hypotheses", "1", "--json"]))
"""


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe is not installed")
def test_hmdiff_bag_runs_from_the_install(installed, tmp_path):
    rosbags = pytest.importorskip("rosbags.rosbag2", reason="rosbags is not installed (pip install 'hmdiff_ros[bag]')")
    from rosbags.highlevel import AnyReader

    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.ros import bridge
    from hmdiff_ros.ros import convert as C

    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    src, dst = tmp_path / "in", tmp_path / "out"
    with rosbags.Writer(src, version=8, storage_plugin=rosbags.StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store)
        msg = bridge.image_msg(f, C.header(f, 5, 0, "cam"), read_image(DEMO_IMAGE)[::2, ::2])
        writer.write(conn, 5 * 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    result = _run_installed(installed, BAG, str(src), str(dst), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 1 and summary["people"] == 1 and summary["error"] is None
    with AnyReader([dst], default_typestore=store) as reader:
        humans = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/hmdiff/humans"]
    assert len(humans) == 1 and len(humans[0].humans) == 1
