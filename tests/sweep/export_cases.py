"""Cases of the export surface: the ONNX export cache, ``hmdiff export``, ``--engines`` and
``HMDIFF_CACHE`` pointed at what a user may have lying around."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from typing import List, Tuple

from .context import Ctx, case, hmdiff, refusal_case, refuses
from .judges import (
    BAD,
    POOR,
    Reasons,
    base,
    found_a_person,
    interrupted,
    ok_run,
    records,
    refusal,
    rows_json,
    unchanged,
)
from .runner import Obs, listing, snapshot, together

# a short onnxruntime benchmark: enough to load (and check) the export
ORT_BENCH = ("bench", "--backend", "onnxruntime", "--repeats", "1", "--warmup", "0")


def _made_out(c: Ctx) -> Reasons:
    """A refused export must not have made its --out folder (``x`` in the case's folder)."""
    return [(POOR, "made the --out folder")] if (c.dir / "x").exists() else []


def _run_demo(c: Ctx, *extra, env=None, timeout: float = 90) -> Tuple[Obs, Reasons]:
    """``hmdiff run`` on a copy of the demo photo (``extra``: more options), which must work
    and leave the user's files as they were."""
    photo = c.copy_demo()
    before = snapshot(c.user)
    o = c.cli("run", photo, *extra, "--out", c.dir / "out", "--json", "--hypotheses", "1", env=env, timeout=timeout)
    return o, ok_run(o) + unchanged(before, c.user)


@case("export-out-user-folder", "export", "export --out a folder of the user's files, no --force")
def _(c: Ctx):
    c.write("engines/readme.txt", "my own notes\n")
    return refuses(c, "export", "--out", c.user / "engines", names=["engines", "--force"])


@case("export-out-is-a-file", "export", "export --out an existing file")
def _(c: Ctx):
    c.write("notes.txt", "mine\n")
    return refuses(c, "export", "--out", c.user / "notes.txt", names=["notes.txt"])


@case("export-steps-zero", "export", "export --steps 0")
def _(c: Ctx):
    o = c.cli("export", "--out", c.dir / "x", "--steps", "0")
    return o, refusal(o, c.s, 2, ["--steps"]) + _made_out(c)


refusal_case(
    "export-steps-mixed",
    "export",
    "export --steps 2,-1,abc",
    lambda c: ("export", "--out", c.dir / "x", "--steps", "2,-1,abc"),
    ["--steps"],
)


@case("export-checkpoint-is-a-file", "export", "export --checkpoint a text file")
def _(c: Ctx):
    c.write("ckpt.txt", "not a checkpoint\n")
    o = c.cli("export", "--out", c.dir / "x", "--checkpoint", c.user / "ckpt.txt")
    return o, refusal(o, c.s, 2, ["ckpt.txt"]) + _made_out(c)


@case("export-force-keeps-user-files", "export", "export --force into a folder holding an old export and a user's file")
def _(c: Ctx):
    out = c.user / "engines"
    shutil.copytree(c.s.cache_entry(c.cache()), out)
    (out / "sampler_k2_off.onnx").write_bytes(b"stale")  # the old export's file: replaced
    c.write("engines/my_notes.txt", "keep me\n")
    keep = {"my_notes.txt": snapshot(out)["my_notes.txt"]}
    o = c.cli("export", "--out", out, "--force", "--steps", "2", "--dat", "off", timeout=120)
    r = ok_run(o)
    if {k: v for k, v in snapshot(out).items() if k in keep} != keep:
        r.append((BAD, "--force changed or removed the user's my_notes.txt"))
    m = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    for name, rec in m.get("files", {}).items():
        p = out / name
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != rec.get("sha256"):
            r.append((BAD, f"{name} does not match the new manifest"))
    if o.rc == 0 and not m:
        r.append((BAD, "exit 0 but no manifest.json"))
    return o, r


@case("export-sigint-mid-export", "export", "SIGINT while an export writes its files, then the same export again")
def _(c: Ctx):
    out = c.dir / "exp"
    seen: List[float] = []

    def moment(t, o, e):  # writing has begun: the --out folder exists (or 4 s have passed)
        if out.exists() and not seen:
            seen.append(t)
        return (seen and t >= seen[0] + 0.3) or t >= 4.0

    o = c.cli("export", "--out", out, "--steps", "1,2,4,8,16", trigger=moment, timeout=90)
    r = interrupted(o, signal.SIGINT, "export")
    left = listing(out)
    if (out / "manifest.json").exists():
        m = json.loads((out / "manifest.json").read_text())
        missing = [n for n in m.get("files", {}) if not (out / n).is_file()]
        if missing:
            r.append((BAD, f"a manifest lists files the interrupt left missing: {missing}"))
    elif left:
        again = c.cli("export", "--out", out, timeout=120)
        if again.rc != 0:
            r.append((POOR, f"leaves {left} behind, and the same export then fails: {again.last[:100]}"))
    return o, r


@case("cache-file-truncated", "export", "HMDIFF_CACHE whose sampler file is cut in half; bench onnxruntime")
def _(c: Ctx):
    entry = c.s.cache_entry(c.cache())
    f = entry / "sampler_k2_off.onnx"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    o = c.cli(*ORT_BENCH, "--json", timeout=120)
    r = ok_run(o)
    rows = rows_json(o)
    if o.rc == 0 and not all(row.get("backend") == "onnxruntime" for row in rows):
        r.append((BAD, f"rows name {sorted({row.get('backend') for row in rows})}"))
    m = json.loads((entry / "manifest.json").read_text())
    if hashlib.sha256(f.read_bytes()).hexdigest() != m["files"][f.name]["sha256"]:
        r.append((BAD, "the cut file is still in the cache and does not match its manifest"))
    return o, r


@case("cache-manifest-hand-edited", "export", "HMDIFF_CACHE whose manifest was edited (opset); bench onnxruntime")
def _(c: Ctx):
    entry = c.s.cache_entry(c.cache())
    m = json.loads((entry / "manifest.json").read_text())
    m["opset"] = m["opset"] + 1
    (entry / "manifest.json").write_text(json.dumps(m))
    o = c.cli(*ORT_BENCH, "--json", timeout=150)
    r = ok_run(o)
    if o.rc == 0 and json.loads((entry / "manifest.json").read_text()).get("opset") == m["opset"]:
        r.append((BAD, "the edited manifest is still used"))
    return o, r


@case("cache-root-is-user-file-bench", "export", "HMDIFF_CACHE set to a user's file; bench onnxruntime")
def _(c: Ctx):
    notes = c.write("notes.txt", "my file, not a cache\n")
    return refuses(c, *ORT_BENCH, names=["notes.txt"], quick=False, env=c.env(notes))


@case("cache-root-is-user-file-run", "export", "HMDIFF_CACHE set to a user's file; run the demo photo (auto)")
def _(c: Ctx):
    notes = c.write("notes.txt", "my file, not a cache\n")
    o, r = _run_demo(c, env=c.env(notes))
    r += found_a_person(o)
    if o.rc == 0 and "notes.txt" not in o.err:
        r.append((POOR, "ran without saying that the cache cannot be used"))
    return o, r


@case("cache-relative-path", "export", "HMDIFF_CACHE=relative folder holding a whole export; bench onnxruntime")
def _(c: Ctx):
    shutil.copytree(c.cache(), c.dir / "relcache")
    o = c.cli(*ORT_BENCH, "--json", env=c.env("relcache"))
    r = ok_run(o)
    if "making the ONNX export" in o.err:
        r.append((POOR, "made a new export beside a whole one"))
    return o, r


@case("cache-two-fresh-at-once", "export", "two bench onnxruntime at once on an empty HMDIFF_CACHE")
def _(c: Ctx):
    cache = c.dir / "fresh"
    cmd = hmdiff(*ORT_BENCH, "--json")
    oa, ob = together([cmd, cmd], c.dir, c.env(cache), 180)
    r = ok_run(oa) + ok_run(ob)
    entries = [p for p in (cache / "engines").iterdir() if p.is_dir()] if (cache / "engines").is_dir() else []
    made = oa.err.count("making the ONNX export") + ob.err.count("making the ONNX export")
    if len(entries) != 1 or made != 1:
        r.append((POOR, f"{len(entries)} cache entries, {made} exports made (expected one of each)"))
    ob.err = oa.err + ob.err
    return ob, r


@case("engines-user-export-tampered", "export", "run --engines a user's export with a changed denoiser.onnx")
def _(c: Ctx):
    mine = c.user / "myexport"
    shutil.copytree(c.s.cache_entry(c.cache()), mine)
    f = mine / "denoiser.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    o, r = _run_demo(c, "--engines", mine)
    recs = records(o)
    backend = recs[0].get("backend") if recs else None
    if backend == "onnxruntime" and "cached export" not in o.err:
        r.append((BAD, "ran the changed export"))
    if "denoiser.onnx" not in o.err:
        r.append((POOR, "no warning names denoiser.onnx"))
    return o, r


@case("engines-manifest-garbage", "export", "bench --backend onnxruntime --engines a folder whose manifest is not JSON")
def _(c: Ctx):
    c.write("broken/manifest.json", "{ not json")
    args = ("bench", "--backend", "onnxruntime", "--engines", c.user / "broken", "--repeats", "1")
    return refuses(c, *args, names=["manifest.json"], quick=False)


@case("engines-is-a-file", "export", "bench --backend onnxruntime --engines a text file")
def _(c: Ctx):
    notes = c.write("notes.txt", "mine\n")
    before = snapshot(c.user)
    o = c.cli("bench", "--backend", "onnxruntime", "--engines", notes, "--repeats", "1", "--warmup", "0", "--json")
    r = unchanged(before, c.user) + base(o)
    if o.rc == 0 and "notes.txt" not in o.err:
        r.append((POOR, "--engines is a file: silently ignored"))
    elif o.rc not in (0, 2):
        r.append((POOR, f"exit {o.rc}"))
    elif o.rc == 2:
        r += refusal(o, c.s, 2, ["notes.txt"])
    return o, r


@case("cache-root-is-user-folder", "export", "HMDIFF_CACHE set to a folder of the user's photos; bench onnxruntime")
def _(c: Ctx):
    c.copy_demo("photos/a.jpg")
    c.write("photos/notes.txt", "mine\n")
    before = snapshot(c.user)
    o = c.cli(*ORT_BENCH, "--json", env=c.env(c.user / "photos"))
    return o, ok_run(o) + unchanged(before, c.user)


@case("engines-foreign-manifest", "export", "run --engines a user's folder whose manifest.json is another program's")
def _(c: Ctx):
    c.write("webapp/manifest.json", json.dumps({"name": "my web app", "icons": []}))
    o, r = _run_demo(c, "--engines", c.user / "webapp", timeout=60)
    r += found_a_person(o)
    if "manifest.json" not in o.err:
        r.append((POOR, "no warning names the foreign manifest.json"))
    return o, r


refusal_case(
    "export-opset-text",
    "export",
    "export --opset seventeen",
    lambda c: ("export", "--out", c.dir / "x", "--opset", "seventeen"),
    ["--opset"],
)
