"""Cases of the bench surface: ``hmdiff bench`` and ``hmdiff bench-pipeline`` with options
out of range, backends that are not there, inputs that are not images, and interrupts."""

from __future__ import annotations

import os
import shutil
import signal

import numpy as np

from .context import Ctx, case, refusal_case, refuses
from .judges import BAD, base, interrupted, ok_run, refusal, rows_json
from .runner import after


@case("bench-default-auto", "bench", "bench with its default backend (auto), 2 repeats, --json")
def _(c: Ctx):
    o = c.cli("bench", "--repeats", "2", "--warmup", "0", "--json", timeout=90)
    r = ok_run(o)
    rows = rows_json(o)
    names = sorted({str(x.get("backend")) for x in rows})
    if o.rc == 0 and (not rows or any(n not in ("torch", "onnxruntime", "tensorrt") for n in names)):
        r.append((BAD, f"rows name backends {names}: not the one that ran"))
    return o, r


refusal_case("bench-people-zero", "bench", "bench --people 0", ("bench", "--people", "0"), ["--people"])


refusal_case("bench-steps-51", "bench", "bench --steps 51", ("bench", "--steps", "51"), ["--steps"])


@case("bench-device-cuda-no-gpu", "bench", "bench --backend torch --device cuda on a machine without CUDA")
def _(c: Ctx):
    o = c.cli("bench", "--backend", "torch", "--device", "cuda", "--repeats", "1", timeout=60)
    if o.rc == 0:
        return o, ok_run(o)  # a machine with CUDA
    return o, refusal(o, c.s, 2, ["cuda"])


@case("bench-tensorrt-missing", "bench", "bench --backend tensorrt without TensorRT")
def _(c: Ctx):
    o = c.cli("bench", "--backend", "tensorrt", "--repeats", "1", timeout=60)
    r = refusal(o, c.s, 2, ["tensorrt"], quick=False)
    if o.rc == 0 and "tensorrt" not in {x.get("backend") for x in rows_json(o)}:
        r.append((BAD, "rows relabel another backend"))
    return o, r


refusal_case("bench-warmup-negative", "bench", "bench --warmup -1", ("bench", "--warmup", "-1"), ["--warmup"])


refusal_case(
    "bench-dat-full-onnx",
    "bench",
    "bench --backend onnxruntime --dat full",
    ("bench", "--backend", "onnxruntime", "--dat", "full", "--repeats", "1"),
    ["--dat"],
)


@case("bench-report-is-a-file", "bench", "bench --report an existing file")
def _(c: Ctx):
    notes = c.write("notes.txt", "mine\n")
    return refuses(c, "bench", "--report", notes, "--repeats", "1", names=["notes.txt"])


@case("bench-engines-truncated-encoder", "bench", "bench --backend onnxruntime --engines an export with a cut encoder")
def _(c: Ctx):
    mine = c.user / "myexport"
    shutil.copytree(c.s.cache_entry(c.cache()), mine)
    f = mine / "encoder.onnx"
    f.write_bytes(f.read_bytes()[:1000])
    args = ("bench", "--backend", "onnxruntime", "--engines", mine, "--repeats", "1")
    o, r = refuses(c, *args, names=["encoder.onnx"], quick=False)
    if o.rc == 0:
        r.append((BAD, "benchmarked a broken export"))
    return o, r


@case("bench-sigint-at-2s", "bench", "SIGINT 2 s into bench")
def _(c: Ctx):
    o = c.cli("bench", "--repeats", "200", trigger=after(2.0), timeout=60)
    return o, interrupted(o, signal.SIGINT, "bench")


@case("bench-pipeline-image-text", "bench", "bench-pipeline --image a text file named .jpg")
def _(c: Ctx):
    img = c.write("photo.jpg", "not an image")
    o = c.cli("bench-pipeline", "--image", img, "--repeats", "1")
    return o, refusal(o, c.s, 2, ["photo.jpg"])


@case("bench-pipeline-image-1px", "bench", "bench-pipeline --image a 1x1 PNG")
def _(c: Ctx):
    import cv2

    cv2.imwrite(str(c.user / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    o = c.cli("bench-pipeline", "--image", c.user / "dot.png", "--repeats", "1")
    return o, refusal(o, c.s, 2, ["dot.png"])


@case("bench-pipeline-image-nobody", "bench", "bench-pipeline --image a grey image with no person")
def _(c: Ctx):
    import cv2

    cv2.imwrite(str(c.user / "grey.png"), np.full((240, 320, 3), 90, np.uint8))
    o = c.cli("bench-pipeline", "--image", c.user / "grey.png", "--repeats", "2", "--compare", "", timeout=90)
    r = refusal(o, c.s, 2, ["grey.png"], quick=False)
    if o.rc == 0:
        r = [(BAD, "benchmarked a frame with nobody in it as the pipeline's speed")] + base(o)
    return o, r


refusal_case(
    "bench-pipeline-people-zero",
    "bench",
    "bench-pipeline --people 0",
    ("bench-pipeline", "--people", "0"),
    ["--people"],
)


refusal_case(
    "bench-pipeline-compare-bogus",
    "bench",
    "bench-pipeline --compare gpu",
    ("bench-pipeline", "--compare", "gpu", "--repeats", "1"),
    ["gpu"],
)


@case("bench-pipeline-report-over-user", "bench", "bench-pipeline --report a folder with the user's bench.md")
def _(c: Ctx):
    c.write("rep/bench.md", "my notes\n")
    return refuses(c, "bench-pipeline", "--report", c.user / "rep", "--repeats", "1", names=["bench.md"])


@case("bench-pipeline-image-fifo", "bench", "bench-pipeline --image a named pipe")
def _(c: Ctx):
    os.mkfifo(c.user / "pipe.jpg")
    o = c.cli("bench-pipeline", "--image", c.user / "pipe.jpg", "--repeats", "1", timeout=20)
    return o, refusal(o, c.s, 2, ["pipe.jpg"])


@case("bench-pipeline-sigterm-at-4s", "bench", "SIGTERM 4 s into bench-pipeline")
def _(c: Ctx):
    o = c.cli("bench-pipeline", "--repeats", "200", trigger=after(4.0), sig=signal.SIGTERM, timeout=60)
    return o, interrupted(o, signal.SIGTERM, "bench-pipeline")


@case("bench-pipeline-minimal", "bench", "bench-pipeline --repeats 2 --compare '' --json (a valid run)")
def _(c: Ctx):
    o = c.cli("bench-pipeline", "--repeats", "2", "--compare", "", "--json", timeout=120)
    r = ok_run(o)
    fps = [x.get("fps") for x in rows_json(o) if x.get("stage") == "frame"]
    if o.rc == 0 and not (fps and all(isinstance(f, (int, float)) and f > 0 for f in fps)):
        r.append((BAD, f"no positive frame rate in the rows: {fps}"))
    return o, r


# eval, eval-real, eval-protocol on small bad data ------------------------------------------------
