"""Outputs never clobber: unique names per input, a user's files never overwritten, a run's
own outputs never read back as inputs, stale outputs of an input removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdiff_ros.pipeline.outputs import MANIFEST, OutputFolder, output_stems

NAME = st.text(alphabet="abc01._-", min_size=1, max_size=6).filter(lambda s: s not in (".", "..") and s.strip("."))
PATHS = st.lists(
    st.tuples(st.lists(NAME, max_size=3), NAME, st.sampled_from([".jpg", ".png", ".JPG", ".mp4", ""])),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(PATHS)
def test_output_stems_are_unique_and_plain_file_names(parts):
    sources = [str(Path("/data", *dirs, name + ext)) for dirs, name, ext in parts]
    names = output_stems(sources)
    assert set(names) == set(sources)
    assert len(set(names.values())) == len(names), names
    assert all(n and "/" not in n for n in names.values())


def test_output_stems_keep_plain_stems_and_disambiguate_collisions():
    names = output_stems(["x/a.jpg", "x/a.png", "cam1/000.jpg", "cam2/000.jpg", "y/b.jpg", "0"])
    assert names["y/b.jpg"] == "b" and names["0"] == "camera0"
    assert names["x/a.jpg"] == "a_jpg" and names["x/a.png"] == "a_png"
    assert names["cam1/000.jpg"].startswith("cam1_000") and names["cam2/000.jpg"].startswith("cam2_000")


def test_output_folder_refuses_foreign_files_and_replaces_its_own(tmp_path):
    (tmp_path / "photo.json").write_text("mine")
    folder = OutputFolder(tmp_path)
    with pytest.raises(ValueError, match="refusing to overwrite .*photo.json"):
        folder.claim("photo.json")
    folder.commit("photo.jpg", ["photo_overlay.jpg", "photo_person0.obj", "photo_person1.obj"])
    for n in ("photo_overlay.jpg", "photo_person0.obj", "photo_person1.obj"):
        (tmp_path / n).write_text("x")
    again = OutputFolder(tmp_path)  # a later run: the manifest says these are ours
    assert again.claim("photo_person0.obj") == tmp_path / "photo_person0.obj"
    again.commit("photo.jpg", ["photo_overlay.jpg", "photo_person0.obj"])  # one person fewer now
    assert not (tmp_path / "photo_person1.obj").exists(), "a stale output of this input was left"
    assert (tmp_path / "photo.json").read_text() == "mine"
    assert OutputFolder(tmp_path, force=True).claim("photo.json") == tmp_path / "photo.json"
    assert json.loads((tmp_path / MANIFEST).read_text())["outputs"]


def test_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        OutputFolder(tmp_path / "f")


mediapipe = pytest.importorskip("mediapipe", reason="mediapipe is not installed")


def test_run_into_its_own_input_folder_twice(tmp_path, capsys, caplog):
    from hmdiff_ros.cli import main
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(DEMO_IMAGE, photos / "a.jpg")
    cv2.imwrite(str(photos / "a.png"), cv2.imread(str(DEMO_IMAGE)))  # same stem, another file
    (photos / "notes").mkdir()
    args = ["run", str(photos), "--out", str(photos), "--hypotheses", "1", "--steps", "1", "--json"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "sub-folders are not scanned: notes" in caplog.text
    records = [json.loads(x) for x in first.out.splitlines()]
    assert len(records) == 2 and all(r["backend"] in ("onnxruntime", "torch") and r["people"] for r in records)
    names = {p.name for p in photos.iterdir()}
    assert {"a_jpg.json", "a_png.json", "a_jpg_overlay.jpg", "a_png_person0.obj"} <= names
    assert main(args) == 0, "a second run must not read the first run's overlays as inputs"
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert {p.name for p in photos.iterdir()} == names


def test_a_hand_edited_manifest_never_reaches_outside_the_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"outputs": {"/x/a.jpg": ["../victim.txt"], "/x/b.jpg": "ab"}}))
    folder = OutputFolder(out)
    assert folder.manifest == {}, "an entry naming a path outside, or not a list, makes the manifest untrusted"
    folder.commit("/x/a.jpg", ["a_overlay.jpg"])
    assert victim.read_text() == "keep"


def test_a_symbolic_link_in_the_folder_is_never_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere.jpg"
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_overlay.jpg").symlink_to(elsewhere)  # leads nowhere yet
    with pytest.raises(ValueError, match="a symbolic link"):
        OutputFolder(out).claim("a_overlay.jpg")
    path = OutputFolder(out, force=True).claim("a_overlay.jpg")
    assert not path.is_symlink() and not elsewhere.exists(), "--force replaces the link, not its target"


def test_stems_are_safe_file_names(tmp_path):
    import os

    bad = os.fsdecode(b"x\xff\xfe.png")  # a name in another encoding than UTF-8
    long = "L" * 250 + ".png"
    names = output_stems([bad, long, "M" * 250 + ".png"])
    assert names[bad] == "x__"
    assert all(len(n.encode()) <= 200 for n in names.values()) and names[long] != names["M" * 250 + ".png"]
    for n in names.values():
        n.encode("utf-8")  # OpenCV can write it


def test_an_out_folder_that_cannot_exist_is_refused_at_once(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot be made: .* is a file"):
        OutputFolder(tmp_path / "file" / "sub")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="leads nowhere"):
        OutputFolder(tmp_path / "link")


def test_an_output_that_cannot_be_written_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno

    import hmdiff_ros.pipeline.run as R
    from hmdiff_ros.cli import main
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    def full(path, *args):
        path.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(R, "write_obj", full)
    out = tmp_path / "out"
    assert main(["run", str(DEMO_IMAGE), "--out", str(out), "--hypotheses", "1", "--steps", "1"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists(), "no half-written results, and no folder made for nothing"


def test_inputs_that_are_not_files(tmp_path, capsys):
    import os

    from hmdiff_ros.cli import main

    os.mkfifo(tmp_path / "pipe.jpg")
    assert main(["run", str(tmp_path / "pipe.jpg"), "--out", str(tmp_path / "o")]) == 1
    assert "not a regular file" in capsys.readouterr().err
    assert main(["run", "rtsp://10.0.0.1/stream", "--out", str(tmp_path / "o")]) == 2
    assert "URLs" in capsys.readouterr().err


def test_an_image_beyond_opencvs_pixel_limit_is_named(tmp_path):
    import struct
    import zlib

    from hmdiff_ros.pipeline.io import read_image

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (tmp_path / "bomb.png").write_bytes(png + b"\x00" * 64)
    with pytest.raises(ValueError, match="bomb.png: .*not accepted|bomb.png: not an image"):
        read_image(tmp_path / "bomb.png")
