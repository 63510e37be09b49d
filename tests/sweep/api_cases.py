"""Cases of the Python API: ``Pipeline.__call__`` on arrays, camera matrices and boxes a caller
may pass, ``build_pipeline``, ``load_model``, ``load_checkpoint`` and ``PipelineConfig``. Each
runs a snippet (``Ctx.py``) that reports what one call returned or raised."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from .context import Ctx, case, cases
from .judges import BAD, POOR, Reasons, api, base
from .runner import Obs

# snippet lines: the demo photo as ``rgb`` (RGB, uint8) and its size
DEMO = "rgb = demo_rgb()\nh, w = rgb.shape[:2]\n"
CRASHED = (BAD, "the snippet printed no result (crashed)")
LOAD_MODEL = "from hmdiff_ros.runtime.backends import load_model\n"


def _attempt(c: Ctx, lines: str, call: str, timeout: float = 60) -> Obs:
    """A snippet: ``lines``, then a report of what ``call`` returned or raised."""
    return c.py(lines + f"report(call=attempt(lambda: {call}))\n", timeout=timeout)


def _pipe(c: Ctx, lines: str, call: str) -> Obs:
    """The people that ``call`` finds with the pipeline ``pipe`` (after ``lines``)."""
    return _attempt(c, "pipe = pipeline()\n" + lines, f"people_summary({call})")


def _same(c: Ctx, lines: str, call: str, twin: str, refused: str, differs: str) -> Tuple[Obs, Reasons]:
    """``call`` must work and find what ``twin`` finds (``refused``, ``differs``: the reasons
    when it does not)."""
    o = c.py(
        "pipe = pipeline()\n"
        + lines
        + f"a = attempt(lambda: people_summary({call}))\n"
        + f"b = attempt(lambda: people_summary({twin}))\n"
        + 'report(call=a, same=a.get("value") == b.get("value"), people=len(a.get("value") or []))\n'
    )
    res = o.result()
    r = base(o) + api(res, [], error=False)
    if res and not res["call"]["ok"]:
        r.append((POOR, f"{refused}: {res['call'].get('msg')}"))
    elif res and not res.get("same"):
        r.append((BAD, differs))
    return o, r


def _api_or_missing(res: dict, words: Sequence[str]) -> Reasons:
    """``api``, where a FileNotFoundError (the documented error for a missing path) is as
    good as a ValueError."""
    r = api(res, words)
    if res.get("call", {}).get("exc") == "FileNotFoundError":
        r = [x for x in r if "not a ValueError" not in x[1]]
    return r


def _api_image(c: Ctx, expr: str, words: Sequence[str]) -> Tuple[Obs, Reasons]:
    o = _pipe(c, f"image = {expr}\n", "pipe(image)")
    res = o.result()
    r = base(o) + api(res, words)
    if res.get("maxrss_mb", 0) > 3000:
        r.append((BAD, f"peak memory {res['maxrss_mb']} MB"))
    return o, r


cases(
    "api",
    _api_image,
    (
        "api-huge-zero-stride",
        "Pipeline(image) with a 20001x20001 zero-stride view",
        "np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20001, 20001, 3))",
        ["20001", "10000"],
    ),
    (
        "api-tall-zero-stride",
        "Pipeline(image) with a 10001x64 zero-stride view",
        "np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10001, 64, 3))",
        ["10001"],
    ),
    ("api-float-image", "Pipeline(image) with a float64 image in [0, 1]", "demo_rgb() / 255.0", ["uint8", "float64"]),
    ("api-gray-2d", "Pipeline(image) with a 2-D grayscale array", "demo_rgb()[..., 0]", ["(H, W, 3)"]),
    ("api-empty-image", "Pipeline(image) with a (0, 0, 3) array", "np.zeros((0, 0, 3), np.uint8)", ["small"]),
    ("api-uint16-image", "Pipeline(image) with a uint16 RGB image", "demo_rgb().astype(np.uint16) * 257", ["uint16"]),
    (
        "api-list-image",
        "Pipeline(image) with a nested list instead of an array",
        "demo_rgb()[:64, :64].tolist()",
        ["list"],
    ),
)


@case("api-strided-views", "api", "Pipeline(image) on flipped and strided views against their copies")
def _(c: Ctx):
    o = c.py(
        """
        pipe = pipeline()
        rgb = demo_rgb()
        out = {}
        for name, view in (("flipped", rgb[:, ::-1]), ("strided", rgb[::2, ::2]), ("bgr_view", rgb[..., ::-1])):
            a = attempt(lambda: people_summary(pipe(view)))
            b = attempt(lambda: people_summary(pipe(np.ascontiguousarray(view))))
            out[name] = {"view": a, "copy": b}
        report(call={"ok": True, "value": "3 views compared with their copies"}, views=out)
        """,
        timeout=120,
    )
    res = o.result()
    r = base(o) + ([] if res else [CRASHED])
    for name, pair in res.get("views", {}).items():
        a, b = pair["view"], pair["copy"]
        if not a["ok"] or not b["ok"]:
            r.append((POOR, f"{name}: {a.get('msg') or b.get('msg')}"))
        elif a["value"] != b["value"]:
            r.append((BAD, f"{name}: a view gives another result than its copy"))
    return o, r


def _api_K(c: Ctx, expr: str, words: Sequence[str]) -> Tuple[Obs, Reasons]:
    o = _pipe(c, DEMO + f"K = {expr}\n", "pipe(rgb, K)")
    return o, base(o) + api(o.result(), words)


cases(
    "api",
    _api_K,
    (
        "api-K-nan",
        "Pipeline(image, K) with a NaN focal length",
        "np.array([[np.nan, 0, w / 2], [0, 500, h / 2], [0, 0, 1]])",
        ["K", "NaN"],
    ),
    (
        "api-K-2x3",
        "Pipeline(image, K) with a 2x3 matrix",
        "np.array([[500.0, 0, w / 2], [0, 500, h / 2]])",
        ["K", "3x3"],
    ),
    (
        "api-K-negative-focal",
        "Pipeline(image, K) with fx = -500",
        "np.array([[-500.0, 0, w / 2], [0, 500, h / 2], [0, 0, 1]])",
        ["K", "focal"],
    ),
    (
        "api-K-principal-point-outside",
        "Pipeline(image, K) with the principal point 10 widths away",
        "np.array([[500.0, 0, 10 * w], [0, 500, h / 2], [0, 0, 1]])",
        ["K", "principal"],
    ),
    ("api-K-strings", "Pipeline(image, K) with K a string", "'500 0 256 0 500 256 0 0 1'", ["K"]),
)


@case("api-K-list-valid", "api", "Pipeline(image, K) with a valid K as nested lists (must equal the array's result)")
def _(c: Ctx):
    return _same(
        c,
        DEMO + "K = [[500.0, 0, w / 2], [0, 500.0, h / 2], [0, 0, 1]]\n",
        "pipe(rgb, K)",
        "pipe(rgb, np.array(K))",
        "a valid list K is refused",
        "a list K gives another result than the same K as an array",
    )


def _api_boxes(c: Ctx, expr: str, words: Sequence[str]) -> Tuple[Obs, Reasons]:
    o = _pipe(c, DEMO + f"boxes = {expr}\n", "pipe(rgb, None, boxes)")
    res = o.result()
    r = base(o)
    a = res.get("call", {})
    if not res:
        r.append(CRASHED)
    elif a.get("ok"):
        people = a.get("value") or []
        if any(not p["joints_finite"] or not all(np.isfinite(p["box"])) for p in people):
            r.append((BAD, "returned a person with non-finite joints or box"))
        elif people:
            r.append((POOR, f"accepted the bad box silently ({len(people)} people returned)"))
        elif "WARNING" not in o.err and "box" not in o.err:
            r.append((POOR, "returned no people without a word about the box"))
    else:
        r += api(res, words)
    return o, r


cases(
    "api",
    _api_boxes,
    ("api-box-nan", "Pipeline(image, boxes=[[nan, 0, 100, 100]])", "[[np.nan, 0, 100, 100]]", ["box"]),
    ("api-box-three-numbers", "Pipeline(image, boxes=[[0, 0, 100]])", "[[0, 0, 100]]", ["box"]),
    ("api-box-reversed", "Pipeline(image, boxes=[[400, 400, 10, 10]]) (u1 < u0)", "[[400, 400, 10, 10]]", ["box"]),
    ("api-box-inf", "Pipeline(image, boxes=[[0, 0, inf, inf]])", "[[0, 0, np.inf, np.inf]]", ["box"]),
)


@case("api-box-outside", "api", "Pipeline(image, boxes=[[5000, 5000, 5100, 5100]]) (outside the image)")
def _(c: Ctx):
    o = _pipe(c, "rgb = demo_rgb()\n", "pipe(rgb, None, [[5000, 5000, 5100, 5100]])")
    res = o.result()
    a = res.get("call", {})
    r = base(o)
    if not res:
        r.append(CRASHED)
    elif a.get("ok") and a.get("value"):
        r.append((BAD, "a person returned for a box outside the image"))
    elif a.get("ok") and "outside" not in o.err:
        r.append((POOR, "skipped without a warning"))
    elif not a.get("ok"):
        r += api(res, ["box"])
    return o, r


@case("api-box-flat", "api", "Pipeline(image, boxes=[0, 0, 100, 100]) (one box, not a list of boxes)")
def _(c: Ctx):
    return _api_boxes(c, "[0, 0, 100, 100]", ["box"])


@case("api-readonly-image", "api", "Pipeline(image) on a read-only array (against a writable copy)")
def _(c: Ctx):
    return _same(
        c,
        "rgb = demo_rgb()\nfrozen = rgb.copy()\nfrozen.setflags(write=False)\n",
        "pipe(frozen)",
        "pipe(rgb.copy())",
        "a read-only image is refused",
        "a read-only image gives another result than its copy",
    )


@case("api-load-model-bad-name", "api", "load_model('gpu')")
def _(c: Ctx):
    o = _attempt(c, LOAD_MODEL, 'load_model("gpu") and "loaded"')
    return o, base(o) + api(o.result(), ["gpu", "torch"])


@case("api-load-model-upper-case", "api", "load_model('ONNXRUNTIME')")
def _(c: Ctx):
    o = _attempt(c, LOAD_MODEL, 'load_model("ONNXRUNTIME").backend')
    res = o.result()
    if res.get("call", {}).get("ok"):  # accepted: it must really run what was asked
        return o, base(o) + ([] if res["call"]["value"] == "onnxruntime" else [(POOR, "ran another backend")])
    return o, base(o) + api(res, ["ONNXRUNTIME"])


@case("api-load-model-missing-checkpoint", "api", "load_model('auto', checkpoint='/nonexistent/ckpt')")
def _(c: Ctx):
    o = _attempt(c, LOAD_MODEL, 'load_model("auto", checkpoint="/nonexistent/ckpt") and "loaded"')
    return o, base(o) + _api_or_missing(o.result(), ["/nonexistent/ckpt"])


def _api_ckpt(c: Ctx, prep: str, words: Sequence[str]) -> Tuple[Obs, Reasons]:
    lines = (
        "import json, shutil\n"
        "from pathlib import Path\n"
        "from hmdiff_ros.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint\n"
        f'folder = Path("ckpt")\n{prep}\n'
    )
    o = _attempt(c, lines, 'load_checkpoint(folder) and "loaded"')
    return o, base(o) + _api_or_missing(o.result(), words)


# snippet: the shipped checkpoint copied to ``folder``, to be spoilt
COPY = "shutil.copytree(DEFAULT_CHECKPOINT, folder); "
cases(
    "api",
    _api_ckpt,
    ("api-load-checkpoint-file", "load_checkpoint(a text file)", 'folder.write_text("not a checkpoint")', ["ckpt"]),
    (
        "api-load-checkpoint-empty-dir",
        "load_checkpoint(an empty folder)",
        "folder.mkdir()",
        ["ckpt", "model.safetensors"],
    ),
    (
        "api-load-checkpoint-garbage-config",
        "load_checkpoint(folder whose config.json is not JSON)",
        COPY + '(folder / "config.json").write_text("{oops")',
        ["ckpt", "config.json"],
    ),
    (
        "api-load-checkpoint-other-width",
        "load_checkpoint(folder whose config says another denoiser width)",
        COPY + "m = json.loads((folder / 'config.json').read_text()); "
        "m['model']['denoiser']['width'] = 64; (folder / 'config.json').write_text(json.dumps(m))",
        ["ckpt", "model.safetensors"],
    ),
    (
        "api-load-checkpoint-config-list",
        "load_checkpoint(folder whose config.json is a JSON list)",
        COPY + '(folder / "config.json").write_text("[1, 2]")',
        ["ckpt", "config.json"],
    ),
)


@case("api-config-bad-backend", "api", "PipelineConfig(backend='gpu')")
def _(c: Ctx):
    o = _attempt(c, "from hmdiff_ros.pipeline.config import PipelineConfig\n", 'str(PipelineConfig(backend="gpu"))')
    return o, base(o) + api(o.result(), ["backend", "gpu"])


# rosbag2 processing without ROS -------------------------------------------------------------------
