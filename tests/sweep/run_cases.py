"""Cases of the run surface: ``hmdiff run`` on images and videos a user should not feed it,
interrupts at each stage of a run, re-runs and concurrent runs into one ``--out``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Tuple

import numpy as np

from .context import Ctx, case, cases, hmdiff, refusal_case, refuses
from .judges import BAD, POOR, Reasons, base, interrupted, ok_run, records, refusal
from .runner import Obs, after, after_records, listing, recorded, snapshot, together


def _frames(video: Path) -> float:
    """The frame count a video file reports (0 when there is no file)."""
    import cv2

    return cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) if video.is_file() else 0


refusal_case(
    "run-missing-file",
    "run",
    "run a file that does not exist",
    lambda c: ("run", c.user / "nope.jpg", "--out", c.dir / "out"),
    ["nope.jpg"],
    code=1,
)


@case("run-fifo-input", "run", "run a named pipe called cam.jpg (nothing writes to it)")
def _(c: Ctx):
    os.mkfifo(c.user / "cam.jpg")
    o = c.cli("run", c.user / "cam.jpg", "--out", c.dir / "out", timeout=20)
    return o, refusal(o, c.s, 1, ["cam.jpg"]) if o.rc != 2 else refusal(o, c.s, 2, ["cam.jpg"])


@case("run-dangling-link", "run", "run a symbolic link that leads nowhere")
def _(c: Ctx):
    os.symlink(c.user / "gone.jpg", c.user / "link.jpg")
    o = c.cli("run", c.user / "link.jpg", "--out", c.dir / "out")
    return o, refusal(o, c.s, 1, ["link.jpg"])


@case("run-folder-of-garbage", "run", "run a folder of non-images named .jpg/.png only")
def _(c: Ctx):
    c.write("shots/a.jpg", "text, not a JPEG")
    c.write("shots/b.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    o = c.cli("run", c.user / "shots", "--out", c.dir / "out")
    return o, refusal(o, c.s, 1, ["a.jpg", "b.png"])


@case("run-image-10001-wide", "run", "run a 10001x8 PNG (beyond 10,000 pixels a side)")
def _(c: Ctx):
    import cv2

    cv2.imwrite(str(c.user / "wide.png"), np.zeros((8, 10001, 3), np.uint8))
    o = c.cli("run", c.user / "wide.png", "--out", c.dir / "out")
    return o, refusal(o, c.s, 1, ["wide.png"])


@case("run-truncated-jpeg", "run", "run the demo JPEG cut to 40 % of its bytes")
def _(c: Ctx):
    data = c.demo.read_bytes()
    c.write("cut.jpg", data[: int(len(data) * 0.4)])
    o = c.cli("run", c.user / "cut.jpg", "--out", c.dir / "out", "--hypotheses", "1", timeout=90)
    r = base(o)
    if o.rc == 1:
        r += refusal(o, c.s, 1, ["cut.jpg"], quick=False)
    elif o.rc == 0:
        if not [ln for ln in o.lines if "cut.jpg" in ln and ("truncat" in ln or "incomplete" in ln or "WARNING" in ln)]:
            r.append((POOR, "a truncated JPEG is processed as whole, without a warning"))
    else:
        r.append((POOR, f"exit {o.rc}"))
    return o, r


@case("run-text-named-png", "run", "run a text file named photo.png")
def _(c: Ctx):
    c.write("photo.png", "hello\n")
    o = c.cli("run", c.user / "photo.png", "--out", c.dir / "out")
    return o, refusal(o, c.s, 1, ["photo.png"])


@case("run-truncated-video", "run", "run an MP4 cut to half its bytes")
def _(c: Ctx):
    data = c.s.clip(6).read_bytes()
    c.write("half.mp4", data[: len(data) // 2])
    o = c.cli("run", c.user / "half.mp4", "--out", c.dir / "out", "--hypotheses", "1", timeout=90)
    r = base(o)
    if o.rc not in (0, 1):
        r.append((POOR, f"exit {o.rc}"))
    if o.rc == 1:
        r += refusal(o, c.s, 1, ["half.mp4"], quick=False)
    elif o.rc == 0 and "half.mp4" not in o.err:
        r.append((POOR, "a truncated video is processed without a word"))
    return o, r


@case("run-out-below-a-file", "run", "run --out notes.txt/sub (a path through a file)")
def _(c: Ctx):
    c.write("notes.txt", "mine\n")
    photo = c.copy_demo()
    return refuses(c, "run", photo, "--out", c.user / "notes.txt" / "sub", names=["notes.txt"])


@case("run-user-file-in-out", "run", "run into an --out holding the user's own <stem>.json")
def _(c: Ctx):
    photo = c.copy_demo("photo.jpg")
    c.write("out/photo.json", '{"mine": true}\n')
    args = ("run", photo, "--out", c.user / "out", "--hypotheses", "1")
    return refuses(c, *args, code=1, names=["photo.json"], quick=False, timeout=90)


@case("run-rerun-same-out", "run", "run the same photo twice into one --out")
def _(c: Ctx):
    photo = c.copy_demo("photo.jpg")
    out = c.dir / "out"
    first = c.cli("run", photo, "--out", out, "--hypotheses", "1", timeout=90)
    names = listing(out)
    o = c.cli("run", photo, "--out", out, "--hypotheses", "1", timeout=90)
    r = ok_run(first) + ok_run(o)
    now = listing(out)
    if now != names:
        r.append((POOR, f"the re-run left {sorted(set(now) ^ set(names))} beside the first run's files"))
    if "photo.json" not in recorded(out):
        r.append((BAD, "the outputs are not recorded: a later run would refuse them"))
    return o, r


@case("run-sigint-at-0.3s", "run", "SIGINT 0.3 s after start (interpreter start-up, imports)")
def _(c: Ctx):
    o = c.cli("run", c.copy_demo(), "--out", c.dir / "out", trigger=after(0.3))
    return o, interrupted(o, signal.SIGINT, "run")


def _after_model_load(c: Ctx, sig: int) -> Tuple[Obs, Reasons]:
    """The signal as the log says the model loaded: the pose prior (MediaPipe) is imported next."""
    loaded = lambda t, out, err: "onnxruntime backend:" in err or t > 30  # noqa: E731
    out = c.dir / "out"
    o = c.cli("run", c.copy_demo("photo.jpg"), "--out", out, trigger=loaded, sig=sig)
    r = interrupted(o, sig, "run")
    if o.rc == 0:
        r.append(
            (
                POOR,
                "the stop request was lost: the run went on"
                + (" and wrote its result" if (out / "photo.json").is_file() else ""),
            )
        )
    if "needs mediapipe" in o.err:
        r.append((POOR, "the interrupt is reported as a missing or wrong mediapipe install"))
    if out.exists() and not any(out.iterdir()):
        r.append((POOR, "left an empty --out folder"))
    return o, r


def _at_exit(c: Ctx, sig: int) -> Tuple[Obs, Reasons]:
    """The signal as the run prints its summary: its work is done, it is exiting."""
    out = c.dir / "out"
    done = lambda t, o, e: "results in" in o or t > 60  # noqa: E731
    o = c.cli("run", c.copy_demo("photo.jpg"), "--out", out, "--hypotheses", "1", trigger=done, sig=sig, timeout=90)
    r = base(o)
    if o.rc not in (0, 128 + sig, -sig):
        r.append((POOR, f"exit {o.rc}, expected 0 (done) or {128 + sig}"))
    if o.rc == 128 + sig and not (o.last.startswith("hmdiff run") and signal.Signals(sig).name in o.last):
        r.append((POOR, "no line says the run was interrupted"))
    if not (out / "photo.json").is_file() or "photo.json" not in recorded(out):
        r.append((BAD, "the finished result is missing or not recorded"))
    return o, r


def _interrupt_video(c: Ctx, sig: int, again: float | None = None) -> Tuple[Obs, Reasons, Path]:
    """``sig`` (``again``: once more, that many seconds later) once a 40-frame video has
    printed 3 frames; returns the ``--out`` folder too."""
    clip = c.user / "walk.mp4"
    shutil.copy(c.s.clip(40), clip)
    out = c.dir / "out"
    args = ("run", clip, "--out", out, "--json", "--hypotheses", "1")
    o = c.cli(*args, trigger=after_records(3), sig=sig, again=again, timeout=120)
    return o, interrupted(o, sig, "run"), out


def _mid_video(c: Ctx, sig: int) -> Tuple[Obs, Reasons]:
    o, r, out = _interrupt_video(c, sig)
    names = listing(out)
    if o.rc == 128 + sig:
        jsonl = out / "walk.partial.jsonl"
        video = out / "walk_overlay.partial.mp4"
        lines = jsonl.read_text().splitlines() if jsonl.is_file() else []
        if len(lines) < 3:
            r.append((BAD, f"{len(lines)} frames kept of the 3+ printed; folder: {names}"))
        if _frames(video) < 1:
            r.append((BAD, "the partial overlay video is missing or unplayable"))
        if jsonl.is_file() and "walk.partial.jsonl" not in recorded(out):
            r.append((POOR, "the partial result is not recorded in the manifest"))
        if [n for n in names if ".part." in n]:
            r.append((POOR, f"temporary files left: {names}"))
    return o, r


# a signal at three moments of a run: as the model has loaded, as it exits, in the middle of a video
cases(
    "run",
    lambda c, moment, sig: moment(c, sig),
    (
        "run-sigterm-after-model-load",
        "SIGTERM as the log says the model loaded (the prior is imported next)",
        _after_model_load,
        signal.SIGTERM,
    ),
    (
        "run-sigint-after-model-load",
        "SIGINT as the log says the model loaded (the prior is imported next)",
        _after_model_load,
        signal.SIGINT,
    ),
    ("run-sigint-at-exit", "SIGINT as the run prints its summary (its work done)", _at_exit, signal.SIGINT),
    ("run-sigterm-at-exit", "SIGTERM as the run prints its summary (its work done)", _at_exit, signal.SIGTERM),
    ("run-sigint-mid-video", "SIGINT once a 40-frame video has printed 3 frames", _mid_video, signal.SIGINT),
    ("run-sigterm-mid-video", "SIGTERM once a 40-frame video has printed 3 frames", _mid_video, signal.SIGTERM),
)


@case("run-rerun-interrupted-keeps-result", "run", "complete video run, then a re-run SIGINTed after 2 frames")
def _(c: Ctx):
    clip = c.user / "walk.mp4"
    shutil.copy(c.s.clip(6), clip)
    out = c.dir / "out"
    first = c.cli("run", clip, "--out", out, "--hypotheses", "1", timeout=120)
    done = {n: snapshot(out).get(n) for n in ("walk_overlay.mp4", "walk.jsonl")}
    o = c.cli("run", clip, "--out", out, "--json", "--hypotheses", "1", trigger=after_records(2), timeout=120)
    r = ok_run(first) + interrupted(o, signal.SIGINT, "run")
    if None in done.values():
        r.append((POOR, "the first run wrote no complete result"))
    elif {n: snapshot(out).get(n) for n in done} != done:
        r.append((BAD, "the interrupted re-run changed the complete result"))
    return o, r


@case("run-two-at-once-one-out", "run", "two runs of different photos into one --out at the same time")
def _(c: Ctx):
    a, b = c.copy_demo("a.jpg"), c.copy_demo("b.jpg")
    out = c.dir / "out"
    cmd = hmdiff("run", "--out", out, "--hypotheses", "1")
    oa, ob = together([[*cmd, str(a)], [*cmd, str(b)]], c.dir, c.env(), 120)
    r = ok_run(oa) + ok_run(ob)
    names = recorded(out)
    for stem in ("a", "b"):
        if not (out / f"{stem}.json").is_file():
            r.append((BAD, f"{stem}.json missing"))
        if f"{stem}.json" not in names:
            r.append((BAD, f"{stem}'s outputs are not recorded"))
    ob.err = oa.err + ob.err
    return ob, r


@case("run-double-sigint-mid-video", "run", "two SIGINTs 0.1 s apart once a 40-frame video has printed 3 frames")
def _(c: Ctx):
    o, r, out = _interrupt_video(c, signal.SIGINT, again=0.1)
    names = listing(out)
    video = out / "walk_overlay.partial.mp4"
    if video.is_file() and _frames(video) < 1:
        r.append((BAD, "the partial overlay video is unplayable"))
    if not names or [n for n in names if ".part." in n]:
        r.append((POOR, f"output folder after a second Ctrl-C: {names}"))
    return o, r


@case("run-camera-index-absent", "run", "run 7 (no such camera)")
def _(c: Ctx):
    o = c.cli("run", "7", "--out", c.dir / "out", timeout=60)
    code = o.rc if o.rc in (1, 2) else 1
    return o, refusal(o, c.s, code, ["7"])


@case("run-newline-in-name", "run", "run a garbage file whose name holds a newline")
def _(c: Ctx):
    c.write("bad\nname.jpg", "not an image")
    o = c.cli("run", c.user / "bad\nname.jpg", "--out", c.dir / "out")
    r = refusal(o, c.s, 1, ["name.jpg"])
    lines = o.err.rstrip("\n").split("\n")
    heads = [i for i, ln in enumerate(lines) if re.search(r"\bfailed\b", ln)]
    if heads and len(lines) - heads[-1] - 1 > 1:  # one input failed: one line under the header
        r.append((POOR, "the failure spans several lines (the newline is printed raw)"))
    return o, r


@case("run-hfov-inf", "run", "run --hfov inf")
def _(c: Ctx):
    o = c.cli("run", c.copy_demo(), "--hfov", "inf", "--out", c.dir / "out")
    return o, refusal(o, c.s, 2, ["--hfov"])


@case("run-boxes-empty-list", "run", "run --boxes {photo.jpg: []} (a person list with no box)")
def _(c: Ctx):
    photo = c.copy_demo("photo.jpg")
    boxes = c.write("boxes.json", json.dumps({"photo.jpg": []}))
    o = c.cli("run", photo, "--boxes", boxes, "--out", c.dir / "out", "--json", "--hypotheses", "1", timeout=90)
    r = base(o)
    recs = records(o)
    if o.rc == 0 and recs and recs[0].get("people") and "boxes" not in o.err:
        r.append((POOR, "an empty box list silently means 'find one person'"))
    elif o.rc == 2:
        r += refusal(o, c.s, 2, ["boxes.json"])
    elif o.rc not in (0, 2):
        r.append((POOR, f"exit {o.rc}"))
    return o, r


# bench and bench-pipeline ------------------------------------------------------------------------
