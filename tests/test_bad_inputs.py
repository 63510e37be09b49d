"""Bad or edge inputs for every command, as a new user gives them: each case asserts the exit
code (2: usage or configuration, 1: some inputs failed), a one-line message that names the
input, no Python traceback, and that no file the user had before the command changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe is not installed")

from hmdiff_ros.cli import main  # noqa: E402
from hmdiff_ros.model.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from hmdiff_ros.pipeline.run import DEMO_IMAGE  # noqa: E402


def folder_hashes(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A user's folder: photos, their own notes and JSON, a trained checkpoint, a split, a bag-like folder."""
    root = tmp_path_factory.mktemp("user")
    photos = root / "photos"
    photos.mkdir()
    shutil.copy(DEMO_IMAGE, photos / "photo.jpg")
    (photos / "photo.json").write_text('{"mine": "a note the user wrote"}\n')
    (root / "notes.txt").write_text("not a folder\n")
    (root / "empty").mkdir()
    (root / "garbage.jpg").write_text("not an image")
    (root / "garbage.mp4").write_bytes(b"\x00\x01not a video" * 100)
    (root / "empty.png").write_bytes(b"")
    ckpt = root / "trained"
    shutil.copytree(DEFAULT_CHECKPOINT, ckpt)
    broken = root / "broken_ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    split = root / "split"
    split.mkdir()
    (split / "meta.json").write_text('{"format": 1}')
    (root / "boxes_bool.json").write_text(json.dumps({"photo.jpg": [[True, 0, 10, 10]]}))
    (root / "boxes_reversed.json").write_text(json.dumps({"photo.jpg": [[100, 100, 10, 10]]}))
    (root / "boxes_string.json").write_text(json.dumps({"photo.jpg": "10 10 100 100"}))
    (root / "boxes_list.json").write_text(json.dumps([[10, 10, 100, 100]]))
    (root / "boxes_three.json").write_text(json.dumps({"photo.jpg": [[10, 10, 100]]}))
    (root / "boxes_nan.json").write_text('{"photo.jpg": [[10, 10, NaN, 100]]}')
    (root / "boxes_bad.json").write_text("{not json")
    (root / "train.yaml").write_text("steps: 10\nnot_a_key: 3\n")
    (root / "train_list.yaml").write_text("- 1\n- 2\n")
    (root / "boxes_twice.json").write_text('{"photo.jpg": [[10, 10, 100, 100]], "photo.jpg": [[0, 0, 5, 5]]}')
    (root / "boxes_huge.json").write_text(json.dumps({"photo.jpg": [[0, 0, 1e308, 1e308]]}))
    (root / "dir.jpg").mkdir()
    (root / "ablation").mkdir()
    (root / "ablation" / "ablation.md").write_text("my notes\n")
    (root / "asset.npz").write_bytes(b"mine")
    (root / "bench_report").mkdir()
    (root / "bench_report" / "bench.md").write_text("my notes\n")
    (root / "eval_data").mkdir()
    (root / "bad.yaml").write_text("steps: [1\nlr: 0.1\n")
    (root / "nan.yaml").write_text("steps: .nan\n")
    (root / "lr.yaml").write_text('lr: "fast"\n')
    (root / "split_cut").mkdir()
    (root / "split_cut" / "meta.json").write_text('{"format": 1, "config": {"proxy": {}}, "num": 4}')
    (root / "split_cut" / "samples.npz").write_bytes(b"PK\x03\x04 cut short")
    engines = root / "engines"
    engines.mkdir()
    (engines / "readme.txt").write_text("my own engines folder\n")
    notbag = root / "notbag"
    notbag.mkdir()
    (notbag / "data.bin").write_bytes(b"\x00" * 64)
    return root


# (id, argv with {root} for the user's folder, exit code, text the message must contain)
CASES = [
    # hmdiff run
    ("run-missing-file", ["run", "{root}/nope.jpg", "--out", "{out}"], 1, "nope.jpg"),
    ("run-garbage-image", ["run", "{root}/garbage.jpg", "--out", "{out}"], 1, "garbage.jpg"),
    ("run-empty-image", ["run", "{root}/empty.png", "--out", "{out}"], 1, "empty.png"),
    ("run-garbage-video", ["run", "{root}/garbage.mp4", "--out", "{out}"], 1, "garbage.mp4"),
    ("run-empty-folder", ["run", "{root}/empty", "--out", "{out}"], 2, "empty"),
    ("run-out-is-a-file", ["run", "{root}/photos", "--out", "{root}/notes.txt"], 2, "notes.txt"),
    ("run-out-is-the-input-folder", ["run", "{root}/photos", "--out", "{root}/photos"], 1, "photo.json"),
    ("run-max-frames-0", ["run", "{root}/photos", "--max-frames", "0"], 2, "--max-frames"),
    ("run-max-frames-negative", ["run", "{root}/photos", "--max-frames", "-1"], 2, "--max-frames"),
    ("run-steps-0", ["run", "{root}/photos", "--steps", "0"], 2, "--steps"),
    ("run-steps-huge", ["run", "{root}/photos", "--steps", "1000"], 2, "--steps"),
    ("run-hypotheses-huge", ["run", "{root}/photos", "--hypotheses", "10000"], 2, "--hypotheses"),
    ("run-hypotheses-text", ["run", "{root}/photos", "--hypotheses", "many"], 2, "--hypotheses"),
    ("run-hfov-0", ["run", "{root}/photos", "--hfov", "0"], 2, "--hfov"),
    ("run-hfov-nan", ["run", "{root}/photos", "--hfov", "nan"], 2, "--hfov"),
    ("run-hfov-200", ["run", "{root}/photos", "--hfov", "200"], 2, "--hfov"),
    ("run-dat-full-onnx", ["run", "{root}/photos", "--dat", "full", "--backend", "onnxruntime"], 2, "--dat"),
    ("run-unknown-backend", ["run", "{root}/photos", "--backend", "cuda"], 2, "--backend"),
    ("run-boxes-missing", ["run", "{root}/photos", "--boxes", "{root}/nope.json"], 2, "nope.json"),
    ("run-boxes-not-json", ["run", "{root}/photos", "--boxes", "{root}/boxes_bad.json"], 2, "boxes_bad.json"),
    ("run-boxes-bool", ["run", "{root}/photos", "--boxes", "{root}/boxes_bool.json"], 2, "boxes_bool.json"),
    ("run-boxes-reversed", ["run", "{root}/photos", "--boxes", "{root}/boxes_reversed.json"], 2, "u1 <= u0"),
    ("run-boxes-string", ["run", "{root}/photos", "--boxes", "{root}/boxes_string.json"], 2, "boxes_string.json"),
    ("run-boxes-list", ["run", "{root}/photos", "--boxes", "{root}/boxes_list.json"], 2, "boxes_list.json"),
    ("run-boxes-three", ["run", "{root}/photos", "--boxes", "{root}/boxes_three.json"], 2, "boxes_three.json"),
    ("run-boxes-nan", ["run", "{root}/photos", "--boxes", "{root}/boxes_nan.json"], 2, "boxes_nan.json"),
    (
        "run-checkpoint-missing",
        ["run", "{root}/photos", "--checkpoint", "{root}/nockpt", "--out", "{out}"],
        2,
        "nockpt",
    ),
    (
        "run-checkpoint-truncated",
        ["run", "{root}/photos", "--checkpoint", "{root}/broken_ckpt", "--out", "{out}"],
        2,
        "broken_ckpt",
    ),
    ("demo-out-is-a-file", ["demo", "--out", "{root}/notes.txt"], 2, "notes.txt"),
    ("demo-steps-0", ["demo", "--steps", "0", "--out", "{out}"], 2, "--steps"),
    # hmdiff data make / train / eval
    ("data-make-num-0", ["data", "make", "--num", "0", "--out", "{out}"], 2, "--num"),
    ("data-make-out-not-empty", ["data", "make", "--num", "2", "--out", "{root}/photos"], 2, "--force"),
    ("data-make-out-is-a-file", ["data", "make", "--num", "2", "--out", "{root}/notes.txt"], 2, "notes.txt"),
    ("train-over-trained-weights", ["train", "--out", "{root}/trained", "--steps", "2"], 2, "--force"),
    ("train-out-not-empty", ["train", "--out", "{root}/photos", "--steps", "2"], 2, "photos"),
    ("train-out-is-a-file", ["train", "--out", "{root}/notes.txt", "--steps", "2"], 2, "notes.txt"),
    ("train-steps-0", ["train", "--out", "{out}", "--steps", "0"], 2, "--steps"),
    ("train-lr-5", ["train", "--out", "{out}", "--lr", "5"], 2, "--lr"),
    ("train-config-missing", ["train", "--config", "{root}/nope.yaml", "--out", "{out}"], 2, "nope.yaml"),
    ("train-config-unknown-key", ["train", "--config", "{root}/train.yaml", "--out", "{out}"], 2, "not_a_key"),
    (
        "train-config-not-a-mapping",
        ["train", "--config", "{root}/train_list.yaml", "--out", "{out}"],
        2,
        "train_list.yaml",
    ),
    ("eval-steps-0", ["eval", "--steps", "0", "--dat", "fast"], 2, "--steps"),
    ("eval-data-not-a-split", ["eval", "--steps", "2", "--dat", "fast", "--data", "{root}/photos"], 2, "photos"),
    ("eval-data-bad-split", ["eval", "--steps", "2", "--dat", "fast", "--data", "{root}/split"], 2, "split"),
    (
        "eval-checkpoint-missing",
        ["eval", "--steps", "2", "--dat", "fast", "--checkpoint", "{root}/nockpt"],
        2,
        "nockpt",
    ),
    # hmdiff export / bench / bench-pipeline / assets / eval-real
    ("export-out-not-empty", ["export", "--out", "{root}/engines"], 2, "--force"),
    ("export-out-is-a-file", ["export", "--out", "{root}/notes.txt"], 2, "notes.txt"),
    ("export-steps-text", ["export", "--out", "{out}", "--steps", "a,b"], 2, "--steps"),
    ("export-dat-full", ["export", "--out", "{out}", "--dat", "full"], 2, "--dat"),
    ("bench-unknown-backend", ["bench", "--backend", "cuda", "--repeats", "1"], 2, "cuda"),
    ("bench-repeats-0", ["bench", "--repeats", "0"], 2, "--repeats"),
    ("bench-backend-empty", ["bench", "--backend", ""], 2, "--backend"),
    ("bench-report-over-a-file", ["bench", "--report", "{root}/bench_report", "--repeats", "1"], 2, "bench.md"),
    ("eval-real-out-not-empty", ["eval-real", "--data", "{root}/eval_data", "--out", "{root}/photos"], 2, "photos"),
    ("export-opset-too-new", ["export", "--out", "{out}", "--opset", "30"], 2, "--opset"),
    ("train-config-bad-yaml", ["train", "--config", "{root}/bad.yaml", "--out", "{out}"], 2, "bad.yaml"),
    ("train-config-nan-steps", ["train", "--config", "{root}/nan.yaml", "--out", "{out}"], 2, "steps"),
    ("train-config-lr-text", ["train", "--config", "{root}/lr.yaml", "--out", "{out}"], 2, "lr"),
    ("train-init-missing", ["train", "--init", "{root}/nockpt", "--out", "{out}", "--steps", "1"], 2, "--init"),
    ("eval-data-truncated", ["eval", "--steps", "1", "--dat", "off", "--data", "{root}/split_cut"], 2, "samples.npz"),
    ("bench-pipeline-image-missing", ["bench-pipeline", "--image", "{root}/nope.jpg"], 2, "nope.jpg"),
    ("assets-check-missing", ["assets", "check", "--asset", "{root}/nope.npz"], 2, "nope.npz"),
    ("eval-real-missing", ["eval-real", "--data", "{root}/nodata"], 2, "nodata"),
    ("run-out-empty", ["run", "{root}/photos", "--out", ""], 2, "--out"),
    ("run-boxes-duplicate-key", ["run", "{root}/photos", "--boxes", "{root}/boxes_twice.json"], 2, "more than once"),
    ("run-boxes-huge", ["run", "{root}/photos", "--boxes", "{root}/boxes_huge.json"], 2, "boxes_huge.json"),
    ("run-empty-folder-named-jpg", ["run", "{root}/dir.jpg", "--out", "{out}"], 2, "dir.jpg"),
    ("bench-pipeline-image-is-a-folder", ["bench-pipeline", "--image", "{root}/dir.jpg"], 2, "dir.jpg: is a folder"),
    ("data-make-seed-negative", ["data", "make", "--num", "2", "--seed", "-1", "--out", "{out}"], 2, "--seed"),
    ("data-sheet-over-a-file", ["data", "sheet", "--out", "{root}/notes.txt", "--num", "1"], 2, "notes.txt"),
    ("ablate-over-a-file", ["ablate", "--out", "{root}/ablation", "--limit", "1"], 2, "ablation.md"),
    ("assets-build-over-a-file", ["assets", "build", "--out", "{root}/asset.npz"], 2, "asset.npz"),
    ("train-seed-negative", ["train", "--out", "{out}", "--seed", "-3"], 2, "--seed"),
    # hmdiff bag
    ("bag-input-missing", ["bag", "{root}/nobag", "{out}"], 2, "nobag"),
    ("bag-input-not-a-bag", ["bag", "{root}/notbag", "{out}"], 2, "notbag"),
    ("bag-output-exists", ["bag", "{root}/notbag", "{root}/photos"], 2, "photos"),
    ("bag-max-frames-0", ["bag", "{root}/notbag", "{out}", "--max-frames", "0"], 2, "--max-frames"),
    ("bag-tf-prefix", ["bag", "{root}/notbag", "{out}", "--tf-prefix", "/body"], 2, "tf_prefix"),
    ("bag-namespace-space", ["bag", "{root}/notbag", "{out}", "--namespace", "my ns"], 2, "--namespace"),
    ("bag-namespace-digit", ["bag", "{root}/notbag", "{out}", "--namespace", "/1abc//x"], 2, "--namespace"),
]


@pytest.mark.parametrize("argv, code, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(user_files, tmp_path, capsys, argv, code, text):
    before = folder_hashes(user_files)
    out = tmp_path / "out"
    args = [a.replace("{root}", str(user_files)).replace("{out}", str(out)) for a in argv]
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(("hmdiff", "  "))]
    if code == 2:
        errors = [line for line in lines if "error:" in line]
        assert len(errors) == 1, err
        assert text in errors[0], errors[0]
    else:  # the failed inputs are listed at the end, one line each, with their reasons
        assert any(text in line for line in lines[lines.index(next(x for x in lines if "failed" in x)) :]), err
    assert folder_hashes(user_files) == before, "a file the user had was changed"


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_a_failed_run_leaves_no_output_folder(user_files, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", str(user_files / "garbage.jpg"), "--out", str(out)]) == 1
    assert main(["run", str(user_files / "photos"), "--checkpoint", str(user_files / "nockpt"), "--out", str(out)]) == 2
    assert not out.exists()
    assert "no results written" in capsys.readouterr().out


def test_nested_commands_take_debug_and_verbose(user_files, capsys):
    assert main(["data", "make", "--debug", "--num", "0", "--out", str(user_files / "x")]) == 2
    assert main(["assets", "check", "-v", "--asset", str(user_files / "nope.npz")]) == 2


def test_debug_shows_the_traceback(user_files, capsys):
    assert main(["demo", "--out", str(user_files / "notes.txt"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("hmdiff demo: error:")


def test_an_image_that_is_not_rgb_gives_one_line_per_failed_input(user_files, tmp_path, capsys):
    img = tmp_path / "wide.png"
    cv2.imwrite(str(img), np.zeros((4, 4000, 3), np.uint8))  # 4 pixels high
    assert main(["run", str(img), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "wide.png" in err and "Traceback" not in err
