"""Cases of the bag surface: ``hmdiff bag`` (rosbag2 in, rosbag2 out, no ROS needed) on
missing, cut and foreign inputs, outputs over the user's files, and interrupts."""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path
from typing import Tuple

from .context import Ctx, case, cases, refusal_case, refuses, write_bag
from .judges import BAD, POOR, Reasons, base, interrupted, ok_run, refusal, summary_row, unchanged
from .runner import Obs, snapshot


def _metadata(out: Path) -> str:
    """The text of an output bag's metadata.yaml ('' when there is none)."""
    return (out / "metadata.yaml").read_text() if (out / "metadata.yaml").is_file() else ""


def _bag_copy(c: Ctx, frames: int = 3, storage: str = "mcap") -> Path:
    dst = c.user / "in"
    shutil.copytree(c.s.bag(frames, storage), dst)
    return dst


refusal_case(
    "bag-input-missing",
    "bag",
    "bag a path that does not exist",
    lambda c: ("bag", c.user / "nobag", c.dir / "out"),
    ["nobag"],
)


@case("bag-output-exists-no-force", "bag", "bag into an existing folder of the user's files")
def _(c: Ctx):
    src = _bag_copy(c)
    c.write("mine/notes.txt", "mine\n")
    return refuses(c, "bag", src, c.user / "mine", names=["mine"])


@case("bag-force-over-user-folder", "bag", "bag --force into a folder of the user's files (not a bag)")
def _(c: Ctx):
    src = _bag_copy(c)
    c.write("mine/notes.txt", "mine\n")
    c.write("mine/data.mcap.txt", "also mine\n")
    return refuses(c, "bag", src, c.user / "mine", "--force", names=["mine"], timeout=90)


@case("bag-output-is-a-file", "bag", "bag --force with the output a user's file")
def _(c: Ctx):
    src = _bag_copy(c)
    notes = c.write("notes.txt", "mine\n")
    return refuses(c, "bag", src, notes, "--force", names=["notes.txt"])


@case("bag-output-inside-input", "bag", "bag IN IN/out")
def _(c: Ctx):
    src = _bag_copy(c)
    return refuses(c, "bag", src, src / "out", names=["out"])


@case("bag-output-is-input", "bag", "bag IN IN --force")
def _(c: Ctx):
    src = _bag_copy(c)
    return refuses(c, "bag", src, src, "--force", names=[str(src)])


@case("bag-text-named-mcap", "bag", "bag a text file named recording.mcap")
def _(c: Ctx):
    f = c.write("recording.mcap", "this is not a bag\n")
    o = c.cli("bag", f, c.dir / "out")
    r = refusal(o, c.s, 2, ["recording.mcap"])
    if (c.dir / "out").exists():
        r.append((POOR, "made the output before refusing the input"))
    return o, r


def _truncated(c: Ctx, storage: str) -> Tuple[Obs, Reasons]:
    src = _bag_copy(c, 6, storage)
    (f,) = [p for p in src.iterdir() if p.suffix in (".mcap", ".db3")]
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * 0.6)])
    before = snapshot(c.user)
    out = c.dir / "out"
    o = c.cli("bag", src, out, "--hypotheses", "1", timeout=120)
    r = base(o) + unchanged(before, c.user)
    if o.rc == 2:  # the input as given (the bag folder) or its file
        r += refusal(o, c.s, 2, [f.name if f.name in o.last else str(src)], quick=False)
    elif o.rc in (0, 1):
        meta = _metadata(out)
        if "hmdiff.partial" not in meta:
            r.append((POOR, "the output is not marked partial or complete"))
        elif o.rc == 0 and "true" in meta.split("hmdiff.partial")[1][:20]:
            r.append((POOR, "exit 0 for a run that stopped early"))
        if f.name not in o.err and "truncat" not in o.err:
            r.append((POOR, "no message names the truncated file"))
    else:
        r.append((POOR, f"exit {o.rc}"))
    return o, r


cases(
    "bag",
    _truncated,
    ("bag-truncated-mcap", "bag an MCAP bag cut to 60 % of its bytes", "mcap"),
    ("bag-truncated-db3", "bag a sqlite3 bag cut to 60 % of its bytes", "sqlite3"),
)


@case("bag-wrong-image-topic", "bag", "bag --image-topic /nope")
def _(c: Ctx):
    o = c.cli("bag", _bag_copy(c), c.dir / "out", "--image-topic", "/nope")
    return o, refusal(o, c.s, 2, ["/nope", "/camera/image_raw"])


@case("bag-camera-info-topic-is-image", "bag", "bag --camera-info-topic the image topic")
def _(c: Ctx):
    o = c.cli("bag", _bag_copy(c), c.dir / "out", "--camera-info-topic", "/camera/image_raw")
    return o, refusal(o, c.s, 2, ["/camera/image_raw", "CameraInfo"])


@case("bag-empty-folder", "bag", "bag an empty folder")
def _(c: Ctx):
    (c.user / "empty").mkdir()
    o = c.cli("bag", c.user / "empty", c.dir / "out")
    return o, refusal(o, c.s, 2, ["empty"])


def _bag_signal(c: Ctx, sig: int, again: float | None = None) -> Tuple[Obs, Reasons]:
    src = _bag_copy(c, 40)
    out = c.dir / "out"

    def moment(t, o, e):  # frames being processed: the progress bar has counted 3
        m = re.findall(r"\b(\d+)/40\b", e)
        return (m and int(m[-1]) >= 3) or t > 45

    before = snapshot(c.user)
    o = c.cli("bag", src, out, "--hypotheses", "1", trigger=moment, sig=sig, again=again, timeout=120)
    r = interrupted(o, sig, "bag") + unchanged(before, c.user)
    meta = _metadata(out)
    if o.signalled_at is not None and not meta:
        r.append((BAD, "no readable output bag after the interrupt"))
    elif meta and not re.search(r"hmdiff\.partial['\"]?:\s*['\"]?true", meta):
        r.append((POOR, "the output is not marked partial"))
    if meta:
        try:
            from rosbags.highlevel import AnyReader
            from rosbags.typesys import Stores, get_typestore

            with AnyReader([out], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
                n = sum(1 for conn, _, _ in reader.messages() if conn.topic.endswith("/humans"))
            if n < 1:
                r.append((POOR, "the partial bag holds no results"))
        except Exception as exc:  # the bag must stay readable
            r.append((BAD, f"the partial bag cannot be read: {type(exc).__name__}: {str(exc)[:80]}"))
    return o, r


cases(
    "bag",
    _bag_signal,
    ("bag-sigint-mid-run", "SIGINT once 3 of 40 bag frames are done", signal.SIGINT),
    ("bag-sigterm-mid-run", "SIGTERM once 3 of 40 bag frames are done", signal.SIGTERM),
)


@case("bag-force-output-holds-input", "bag", "bag IN/rec.mcap IN --force (the output folder holds the input file)")
def _(c: Ctx):
    src = _bag_copy(c)
    (f,) = src.glob("*.mcap")
    return refuses(c, "bag", f, src, "--force", names=[str(src)], timeout=90)


@case("bag-fifo-input", "bag", "bag a named pipe called rec.mcap")
def _(c: Ctx):
    os.mkfifo(c.user / "rec.mcap")
    o = c.cli("bag", c.user / "rec.mcap", c.dir / "out", timeout=20)
    return o, refusal(o, c.s, 2, ["rec.mcap"])


@case("bag-bad-frames", "bag", "bag with frames cut short, of an unknown encoding and 0x0 among good ones")
def _(c: Ctx):
    src = write_bag(c.user / "in", c.demo, 5, "mcap", broken={1: "short", 2: "encoding", 3: "empty"})
    before = snapshot(c.user)
    out = c.dir / "out"
    o = c.cli("bag", src, out, "--hypotheses", "1", "--json", timeout=120)
    r = refusal(o, c.s, 1, ["3 of 5"], quick=False) + unchanged(before, c.user)
    summary = summary_row(o)
    if summary.get("frames") != 2:
        r.append((BAD, f"frames processed: {summary.get('frames')!r}, expected the 2 good ones"))
    if not (out / "metadata.yaml").is_file():
        r.append((BAD, "no output bag for the good frames"))
    return o, r


@case("bag-double-sigint", "bag", "two SIGINTs 0.1 s apart once 3 of 40 bag frames are done")
def _(c: Ctx):
    return _bag_signal(c, signal.SIGINT, again=0.1)


@case("bag-valid-mcap-file", "bag", "bag the .mcap file itself (not its folder), --max-frames 2 --json")
def _(c: Ctx):
    src = _bag_copy(c)
    (f,) = src.glob("*.mcap")
    before = snapshot(c.user)
    o = c.cli("bag", f, c.dir / "out", "--max-frames", "2", "--hypotheses", "1", "--json", timeout=120)
    r = ok_run(o) + unchanged(before, c.user)
    summary = summary_row(o)
    if o.rc == 0 and (summary.get("frames") != 2 or summary.get("people", 0) < 1):
        r.append((BAD, f"summary {dict((k, summary.get(k)) for k in ('frames', 'people', 'dropped'))}"))
    return o, r


@case("bag-max-frames-text", "bag", "bag --max-frames ten")
def _(c: Ctx):
    o = c.cli("bag", _bag_copy(c), c.dir / "out", "--max-frames", "ten")
    return o, refusal(o, c.s, 2, ["--max-frames"])
