"""Interrupts and concurrency: Ctrl-C or SIGTERM at any point of a command's start-up is one
line and 128 + the signal; a re-run that stops early never destroys an earlier complete
result (what it wrote is kept, marked partial); runs into one ``--out`` at once each record
their outputs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import pytest

from hmdiff_ros.pipeline.outputs import MANIFEST, OutputFolder
from hmdiff_ros.pipeline.run import DEMO_IMAGE

# --- start-up ------------------------------------------------------------------------------------


def _sigint_as_in_a_terminal():
    """A command typed in a terminal starts with SIGINT at its default; one started in the
    background of a non-interactive shell (``cmd &``) inherits it ignored and, as every Unix
    program does, keeps ignoring it. The tests send Ctrl-C as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "sig,delay",
    [(signal.SIGINT, 0.6), (signal.SIGINT, 1.0), (signal.SIGINT, 1.5), (signal.SIGINT, 2.5), (signal.SIGTERM, 0.8)]
    + [(signal.SIGTERM, 1.8)],
)
def test_a_signal_during_start_up_is_one_line_and_128_plus_the_signal(tmp_path, sig, delay):
    """From the parser's imports (torch loads there: seconds) through loading the model: before,
    a signal in the first ~1.5 s printed a 30-60-line traceback from inside ``import torch``.
    The run has 30 images, so that on a fast machine it is still working when the signal comes
    (once its work is done, a signal changes nothing and the exit code stays 0)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(30):
        shutil.copy(DEMO_IMAGE, photos / f"{i:02d}.jpg")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmdiff_ros.cli", "run", str(photos), "--out", str(tmp_path / "out"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        time.sleep(delay)
        assert proc.poll() is None, "the run ended before the signal"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.splitlines()[-1] == f"hmdiff run: interrupted ({name})", err[-3000:]
    assert [line for line in err.splitlines() if not line.startswith("INFO ")] == [
        f"hmdiff run: interrupted ({name})"
    ], err


# --- re-runs that stop early -----------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    person = cv2.resize(cv2.imread(str(DEMO_IMAGE)), (256, 256))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    for i in range(6):
        writer.write(cv2.flip(person, 1) if i % 2 else person)
    writer.release()
    return path


def _run(source, out, emit=None, hypotheses=1):
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    from hmdiff_ros.pipeline.config import PipelineConfig
    from hmdiff_ros.pipeline.run import run

    cfg = PipelineConfig(hypotheses=hypotheses)
    return run([str(source)], out, cfg, progress=False, emit=emit, tracking=None)


def _stop_at(n):
    seen = []

    def emit(record):
        seen.append(record)
        if len(seen) == n:
            raise KeyboardInterrupt

    return emit


def test_an_interrupted_video_re_run_keeps_the_complete_result_and_marks_its_own_partial(clip, tmp_path):
    """Before, the re-run replaced ``walk_overlay.mp4`` and ``walk.jsonl`` with 3 of 6 frames,
    unmarked."""
    out = tmp_path / "out"
    assert len(_run(clip, out)) == 6
    complete = {n: (out / n).read_bytes() for n in ("walk_overlay.mp4", "walk.jsonl")}
    with pytest.raises(KeyboardInterrupt):
        _run(clip, out, emit=_stop_at(3))
    assert {n: (out / n).read_bytes() for n in complete} == complete, "the complete result is kept as it was"
    assert len((out / "walk.partial.jsonl").read_text().splitlines()) == 3
    assert cv2.VideoCapture(str(out / "walk_overlay.partial.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    recorded = json.loads((out / MANIFEST).read_text())["outputs"][str(clip.resolve())]
    assert sorted(recorded) == sorted([*complete, "walk_overlay.partial.mp4", "walk.partial.jsonl"])
    assert not [p.name for p in out.iterdir() if ".part." in p.name], "no temporary file is left"
    # a complete re-run: the partial result goes, the complete one is replaced
    assert len(_run(clip, out)) == 6
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(complete)


def test_a_first_run_that_stops_early_leaves_only_a_marked_partial_result(clip, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(clip, out, emit=_stop_at(2))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "walk.partial.jsonl",
        "walk_overlay.partial.mp4",
    ]


def test_an_image_re_run_that_fails_while_writing_keeps_the_earlier_result(tmp_path, monkeypatch):
    """Written beside and put in place together: no half-written result, the earlier one stays."""
    from hmdiff_ros.pipeline import run as run_module

    out = tmp_path / "out"
    _run(DEMO_IMAGE, out)
    stem = DEMO_IMAGE.stem
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert f"{stem}.json" in before and f"{stem}_person0.obj" in before

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "write_obj", interrupted)
    with pytest.raises(KeyboardInterrupt):  # another mesh: its overlay differs from the earlier one
        _run(DEMO_IMAGE, out, hypotheses=3)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- runs into one folder at once --------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from hmdiff_ros.pipeline.outputs import OutputFolder
    out, tag = OutputFolder(sys.argv[1]), sys.argv[2]
    for i in range(40):
        name = f"{tag}{i}.txt"
        out.claim(name).write_text(tag)
        out.commit(f"/inputs/{tag}{i}.jpg", [name])
    """
)


def test_runs_into_one_folder_at_once_each_record_their_outputs(tmp_path):
    """Before, the manifest kept one run's outputs and a later run refused to overwrite the
    other's files as if the user had written them."""
    out = tmp_path / "out"
    out.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(out), tag], stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    recorded = json.loads((out / MANIFEST).read_text())["outputs"]
    assert len(recorded) == 80 and all(len(v) == 1 for v in recorded.values())
    later = OutputFolder(out)
    for tag in ("a", "b"):
        later.claim(f"{tag}7.txt")  # ours: no refusal


def test_a_file_another_run_wrote_since_this_one_started_is_not_taken_for_the_users(tmp_path):
    out = tmp_path / "out"
    first, second = OutputFolder(out), OutputFolder(out)
    first.claim("x.txt").write_text("1")
    first.commit("/inputs/x.jpg", ["x.txt"])
    second.claim("x.txt")  # written by a run into this folder: replaced, not refused
    (out / "mine.txt").write_text("the user's")
    with pytest.raises(ValueError, match="which hmdiff did not write"):
        second.claim("mine.txt")
    assert os.path.exists(out / "mine.txt")


def test_signals_during_the_prior_import_are_held_until_it_is_done():
    """MediaPipe's import turned an interrupt into an ImportError or printed it and went on:
    while it runs, SIGINT and SIGTERM are noted, and the first is raised when it is done."""
    from hmdiff_ros.cli import signals_held

    before = signal.getsignal(signal.SIGINT)  # Python's handler; ignored where the run was started so
    done = []
    with pytest.raises(KeyboardInterrupt) as err:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handlers run here: they must not raise
            done.append(True)
    assert done and err.value.args == (signal.SIGTERM,)
    assert signal.getsignal(signal.SIGINT) is before  # restored
