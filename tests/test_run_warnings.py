"""What ``hmdiff run`` says when input is skipped, cut short or ignored, and the pipeline's
own refusals: absurd intrinsics, bodies behind the camera, batches beyond a backend's limit."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe is not installed")

from hmdiff_ros.cli import main  # noqa: E402
from hmdiff_ros.pipeline.run import DEMO_IMAGE  # noqa: E402


def _video(path, frames, fps, fourcc):
    person = cv2.imread(str(DEMO_IMAGE))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (512, 512))
    for _ in range(frames):
        writer.write(person)
    writer.release()
    return path


def test_overlay_video_keeps_the_input_frame_rate(tmp_path):
    clip = _video(tmp_path / "clip.mp4", 3, 12.0, "mp4v")
    assert main(["run", str(clip), "--out", str(tmp_path / "o"), "--hypotheses", "1", "--steps", "1"]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip_overlay.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0, abs=0.01)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert len((tmp_path / "o" / "clip.jsonl").read_text().splitlines()) == 3


def test_a_video_cut_short_is_reported(tmp_path, caplog):
    full = _video(tmp_path / "full.avi", 10, 10.0, "MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # the header still says 10 frames
    assert main(["run", str(cut), "--out", str(tmp_path / "o"), "--hypotheses", "1", "--steps", "1"]) == 0
    read = len((tmp_path / "o" / "cut.jsonl").read_text().splitlines())
    assert 0 < read < 10
    assert f"ended after {read} of its 10 frames" in caplog.text


def test_a_video_that_never_opens_leaves_no_files(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    out = tmp_path / "o"
    assert main(["run", str(bad), "--out", str(out)]) == 1
    assert "bad.mp4: cannot open video" in capsys.readouterr().err
    assert not out.exists(), "nothing was written, so no folder was made"


def test_unmatched_box_keys_and_boxes_outside_the_image_are_named(tmp_path, caplog):
    shutil.copy(DEMO_IMAGE, tmp_path / "a.jpg")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.jpg": [[100, 20, 420, 500], [900, 900, 1000, 1000]], "typo.jpg": [[0, 0, 5, 5]]}))
    args = ["run", str(tmp_path / "a.jpg"), "--boxes", str(boxes), "--out", str(tmp_path / "o"), "--hypotheses", "1"]
    assert main(args) == 0
    assert "match no input (ignored): typo.jpg" in caplog.text
    assert "box [900.0, 900.0, 1000.0, 1000.0] lies outside the 512x512 image" in caplog.text
    record = json.loads((tmp_path / "o" / "a.json").read_text())
    assert len(record["people"]) == 1


@pytest.fixture(scope="module")
def pipe():
    from hmdiff_ros.model.checkpoint import load_checkpoint
    from hmdiff_ros.pipeline.pipeline import Pipeline, PipelineConfig
    from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior

    model, _ = load_checkpoint()
    model.backend, model.max_batch = "torch", None
    prior = MediaPipePrior()
    yield Pipeline(model, prior, cfg=PipelineConfig(hypotheses=2, steps=2))
    prior.close()


@pytest.fixture(scope="module")
def rgb():
    from hmdiff_ros.pipeline.io import read_image

    return read_image(DEMO_IMAGE)


def test_absurd_intrinsics_are_refused_by_the_python_api(pipe, rgb):
    f = 1e-3  # a focal length of a thousandth of a pixel puts the person kilometres away
    with pytest.raises(ValueError, match="fields of view"):
        pipe(rgb, np.array([[f, 0, 256], [0, f, 256], [0, 0, 1]]))
    with pytest.raises(ValueError, match="principal point"):
        pipe(rgb, np.array([[500, 0, 5000], [0, 500, 256], [0, 0, 1]]))


def test_a_body_behind_the_camera_is_never_returned(pipe, rgb, caplog, monkeypatch):
    import hmdiff_ros.pipeline.pipeline as P

    assert len(pipe(rgb)) == 1
    # a translation solve that lands behind the camera (as absurd inputs can make it)
    monkeypatch.setattr(P, "solve_translation", lambda *a: np.array([0.0, 0.0, -3.0]))
    before = pipe.rejected
    assert pipe(rgb) == []
    assert pipe.rejected == before + 1 and "behind or at the camera" in caplog.text
    monkeypatch.setattr(P, "solve_translation", lambda *a: np.array([0.0, 0.0, 5000.0]))
    assert pipe(rgb) == [] and "5000 m from the camera" in caplog.text


def test_implausible_placement_names_the_reason():
    from hmdiff_ros.pipeline.pipeline import implausible_placement

    body = np.random.default_rng(0).normal(scale=0.3, size=(25, 3))
    assert implausible_placement(body + [0, 0, 3]) is None
    assert "behind" in implausible_placement(body + [0, 0, -3])
    assert "m from the camera" in implausible_placement(body + [0, 0, 500])
    assert "not finite" in implausible_placement(np.full((25, 3), np.nan))


def test_people_beyond_the_backend_batch_run_in_chunks(pipe, rgb, monkeypatch):
    boxes = [np.array([100.0, 20, 420, 500])] * 3
    calls = []
    sample = pipe.model.sample

    def counted(proxy, *args, **kwargs):
        calls.append(len(proxy))
        return sample(proxy, *args, **kwargs)

    monkeypatch.setattr(pipe.model, "sample", counted)
    assert len(pipe(rgb, boxes=boxes)) == 3 and calls == [3]
    monkeypatch.setattr(pipe.model, "max_batch", 4, raising=False)  # e.g. a TensorRT engine's profile
    calls.clear()
    people = pipe(rgb, boxes=boxes)
    assert len(people) == 3 and calls == [2, 1], "2 hypotheses each: two people per call of at most 4 rows"
    assert all(np.isfinite(p.joints).all() for p in people)
    monkeypatch.setattr(pipe.model, "max_batch", 1, raising=False)
    with pytest.raises(ValueError, match="hypotheses 2 exceed .* largest batch of 1"):
        pipe(rgb, boxes=boxes)


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    from hmdiff_ros.pipeline.io import read_image

    upright = cv2.cvtColor(cv2.imread(str(DEMO_IMAGE)), cv2.COLOR_BGR2RGB)[:, :384]  # 512 x 384, portrait
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # as a phone stores it: sideways, EXIF says turn it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == upright.shape
    assert np.abs(image.astype(int) - upright).mean() < 4, "shown upright, as viewers show it"


def test_outputs_never_overwrite_an_input_even_with_force(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(DEMO_IMAGE, d / "a.jpg")
    shutil.copy(DEMO_IMAGE, d / "a_overlay.jpg")  # the user's own file, named like an output of a.jpg
    before = (d / "a_overlay.jpg").read_bytes()
    assert main(["run", str(d), "--out", str(d), "--force", "--hypotheses", "1", "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "an input of this run" in err
    assert (d / "a_overlay.jpg").read_bytes() == before


def test_demo_does_not_claim_outputs_it_refused_to_write(tmp_path, capsys):
    (tmp_path / "astronaut_eileen_collins.json").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--hypotheses", "1", "--steps", "1"]) == 1
    captured = capsys.readouterr()
    assert "demo outputs written" not in captured.out and "refusing to overwrite" in captured.err
    assert (tmp_path / "astronaut_eileen_collins.json").read_text() == "mine"


def test_inputs_given_twice_a_digit_file_and_skipped_files(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    shutil.copy(DEMO_IMAGE, tmp_path / "3")  # a file named like a camera index
    (tmp_path / "d").mkdir()
    shutil.copy(DEMO_IMAGE, tmp_path / "d" / "a.jpg")
    (tmp_path / "d" / "notes.txt").write_text("x")
    (tmp_path / "d" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    args = ["run", "3", "d", "d/a.jpg", "./d/a.jpg", "--out", "o", "--hypotheses", "1", "--steps", "1", "--json"]
    from hmdiff_ros.pipeline.io import collect_inputs

    assert collect_inputs(["3", "d", "d/a.jpg", "./d/a.jpg"]) == ["3", "d/a.jpg"]
    assert "d/a.jpg: given more than once" in caplog.text
    assert "not images or videos, skipped: notes.txt" in caplog.text
    assert "links that lead nowhere, skipped: gone.jpg" in caplog.text
    assert main(args) == 0, "the file '3' is an image, not camera 3"


def test_multi_page_images_say_only_the_first_page_is_used(tmp_path, caplog):
    from PIL import Image

    from hmdiff_ros.pipeline.io import read_image

    page = Image.open(DEMO_IMAGE).convert("RGB")
    page.save(tmp_path / "two.tiff", save_all=True, append_images=[page])
    assert read_image(tmp_path / "two.tiff").shape == (512, 512, 3)
    assert "holds 2 pages or frames: only the first is processed" in caplog.text


def test_boxes_named_twice_and_a_huge_box(tmp_path, caplog, pipe, rgb):
    shutil.copy(DEMO_IMAGE, tmp_path / "a.jpg")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({str(tmp_path / "a.jpg"): [[100, 20, 420, 500]], "a.jpg": [[0, 0, 5, 5]]}))
    args = ["run", str(tmp_path / "a.jpg"), "--boxes", str(boxes), "--out", str(tmp_path / "o"), "--hypotheses", "1"]
    assert main(args) == 0
    assert "all name it: using" in caplog.text
    # a box far larger than the image is clipped: the crop stays of the image's order of size
    assert len(pipe(rgb, boxes=[np.array([-9e4, -9e4, 9e4, 9e4])])) <= 1


def test_sigterm_closes_what_run_is_writing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    clip = _video(tmp_path / "long.avi", 300, 25.0, "MJPG")
    out = tmp_path / "o"
    cmd = [
        sys.executable,
        "-m",
        "hmdiff_ros.cli",
        "run",
        str(clip),
        "--out",
        str(out),
        "--hypotheses",
        "1",
        "--steps",
        "1",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("{"), "a first frame was processed"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    cap = cv2.VideoCapture(str(out / "long_overlay.partial.mp4"))  # kept, and marked partial
    assert cap.isOpened() and cap.read()[0], "the overlay video was closed properly"
    assert (out / ".hmdiff_outputs.json").is_file() and not (out / "long_overlay.mp4").exists()
    # the same command again: a complete result, and its own partial outputs go
    assert main(["run", str(clip), "--out", str(out), "--hypotheses", "1", "--steps", "1", "--max-frames", "2"]) == 0
    assert len((out / "long.jsonl").read_text().splitlines()) == 2
    assert not (out / "long_overlay.partial.mp4").exists() and not (out / "long.partial.jsonl").exists()


def test_options_that_do_not_apply_are_named(tmp_path, caplog, capsys):
    clip = _video(tmp_path / "clip.mp4", 2, 10.0, "mp4v")
    shutil.copy(DEMO_IMAGE, tmp_path / "a.jpg")
    boxes = tmp_path / "boxes.json"
    boxes.write_bytes(b"\xef\xbb\xbf" + json.dumps({"clip.mp4": [[0, 0, 50, 50]]}).encode())  # a BOM, as Notepad saves
    out = str(tmp_path / "o")
    assert main(["run", str(clip), "--boxes", str(boxes), "--out", out, "--hypotheses", "1", "--steps", "1"]) == 0
    assert "boxes are used for images only, not for the videos" in caplog.text
    assert main(["run", str(tmp_path / "a.jpg"), "--max-frames", "3", "--out", out, "--hypotheses", "1"]) == 0
    assert "--max-frames applies to videos and cameras" in caplog.text
    assert main(["run", str(tmp_path / "a.jpg"), "--boxes", str(tmp_path), "--out", out]) == 2
    assert "is a folder; expected a JSON file" in capsys.readouterr().err
