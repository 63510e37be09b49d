"""``hmdiff run`` / ``hmdiff demo`` end to end, including every kind of bad input."""

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe is not installed")

from hmdiff_ros.cli import main  # noqa: E402
from hmdiff_ros.image import to_rgb8  # noqa: E402
from hmdiff_ros.pipeline.run import DEMO_IMAGE  # noqa: E402

PERSON_KEYS = {"id", "score", "box", "joints"}
JOINT_KEYS = {"name", "xyz", "uv", "prior_uv", "visibility", "std_m"}


def test_demo_writes_overlay_mesh_and_json(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--hypotheses", "2"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    stem = DEMO_IMAGE.stem
    assert {f"{stem}_overlay.jpg", f"{stem}_person0.obj", f"{stem}.json"} <= names
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    assert record["error"] is None and len(record["people"]) == 1
    person = record["people"][0]
    assert set(person) == PERSON_KEYS and len(person["joints"]) == 25
    assert all(set(j) == JOINT_KEYS for j in person["joints"])
    head_top = next(j for j in person["joints"] if j["name"] == "head_top")
    assert head_top["prior_uv"] is None and head_top["xyz"][2] > 0
    obj = (tmp_path / f"{stem}_person0.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 13718


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    person = cv2.imread(str(DEMO_IMAGE))
    cv2.imwrite(str(d / "a_person.jpg"), person)
    cv2.imwrite(str(d / "b_gray.png"), cv2.cvtColor(person, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "c_rgba.png"), cv2.cvtColor(person, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(d / "d_16bit.png"), person.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "e_nobody.png"), np.full((200, 300, 3), 80, np.uint8))
    cv2.imwrite(str(d / "f_tiny.png"), np.zeros((1, 1, 3), np.uint8))
    (d / "g_notes.jpg").write_text("not an image")
    (d / "h_empty.png").write_bytes(b"")
    writer = cv2.VideoWriter(str(d / "i_clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (512, 512))
    for _ in range(3):
        writer.write(person)
    writer.release()
    return d


def test_folder_run_goes_past_bad_files_and_reports_them(folder, tmp_path, capsys):
    code = main(["run", str(folder), "--out", str(tmp_path), "--json", "--hypotheses", "1"])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    by_name = {r["path"].split("/")[-1]: r for r in records}
    assert code == 1, "some inputs failed"
    for ok in ("a_person.jpg", "b_gray.png", "c_rgba.png", "d_16bit.png"):
        assert by_name[ok]["error"] is None and len(by_name[ok]["people"]) == 1, ok
    assert by_name["e_nobody.png"]["error"] is None and by_name["e_nobody.png"]["people"] == []
    assert "too small" in by_name["f_tiny.png"]["error"]
    assert "not an image" in by_name["g_notes.jpg"]["error"]
    assert "not an image" in by_name["h_empty.png"]["error"]
    frames = [r for r in records if r["path"].startswith(str(folder / "i_clip.mp4"))]
    assert len(frames) == 3 and all(len(r["people"]) == 1 for r in frames)
    assert {r["people"][0]["id"] for r in frames} == {0}, "one track id across the clip"
    assert (tmp_path / "i_clip_overlay.mp4").is_file() and len(
        (tmp_path / "i_clip.jsonl").read_text().splitlines()
    ) == 3
    assert "3 of" in captured.err and "g_notes.jpg" in captured.err


def test_missing_inputs_and_huge_images_are_clear_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nothing.jpg"), "--out", str(tmp_path / "o"), "--json"]) == 1
    assert "file not found" in capsys.readouterr().out
    with pytest.raises(ValueError, match="larger than 10000"):
        to_rgb8(np.zeros((10, 10001, 3), np.uint8), "big.png")
    with pytest.raises(ValueError, match="unsupported pixel type"):
        to_rgb8(np.zeros((10, 10, 3), np.int32), "odd.tif")


def test_boxes_files_are_checked(tmp_path, capsys):
    from hmdiff_ros.pipeline.run import boxes_for, load_boxes

    good = tmp_path / "boxes.json"
    good.write_text(json.dumps({"a.jpg": [[0, 0, 10, 20], [5, 5, 30, 40]], "b.jpg": []}))
    boxes = load_boxes(good)
    assert len(boxes_for(boxes, "/some/folder/a.jpg")) == 2 and boxes_for(boxes, "c.jpg") is None
    for content, match in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must map image names"),
        (json.dumps({"a.jpg": [[0, 0, 10]]}), "list of \\[u0, v0, u1, v1\\] boxes"),
        (json.dumps({"a.jpg": [[10, 0, 5, 20]]}), "u1 <= u0"),
    ]:
        good.write_text(content)
        with pytest.raises(ValueError, match=match):
            load_boxes(good)
    assert main(["run", "x.jpg", "--boxes", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")]) == 2
    assert "boxes file" in capsys.readouterr().err
