"""Cases of the eval surface: ``hmdiff eval``, ``eval-real`` and ``eval-protocol`` on small
data sets spoilt the ways real ones are (NaN, Infinity, wrong shapes, cut files)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from .context import Ctx, case, refusal_case, refuses
from .judges import BAD, POOR, Reasons, ok_run, refusal, rows_json, unchanged
from .runner import Obs, snapshot


def _split(c: Ctx, edit: Callable[[Dict[str, np.ndarray], Dict], None] | None = None) -> Path:
    src = c.s.split()
    out = c.user / "split"
    out.mkdir()
    with np.load(src / "samples.npz", allow_pickle=False) as d:
        arrays = {k: d[k].copy() for k in d.files}
    meta = json.loads((src / "meta.json").read_text())
    if edit:
        edit(arrays, meta)
    np.savez_compressed(out / "samples.npz", **arrays)
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def _eval(c: Ctx, split: Path, timeout: float = 60) -> Obs:
    return c.cli(
        "eval", "--steps", "2", "--dat", "off", "--hypotheses", "1", "--data", split, "--json", timeout=timeout
    )


def _refuses_split(
    c: Ctx, names: List[str], edit: Callable[[Dict[str, np.ndarray], Dict], None]
) -> Tuple[Obs, Reasons]:
    """``hmdiff eval`` on a split spoilt by ``edit`` must refuse it, naming ``names``."""
    o = _eval(c, _split(c, edit))
    return o, refusal(o, c.s, 2, names)


def _metric(o: Obs, key: str, sound: Callable[[object], bool]) -> Reasons:
    """A valid run's first row carrying ``key`` must hold a ``sound`` number there."""
    rows = [x for x in rows_json(o) if key in x]
    v = rows[0].get(key) if rows else None
    return [(BAD, f"{key} = {v!r}")] if o.rc == 0 and not sound(v) else []


@case("eval-split-nan", "eval", "eval a split with a NaN in prior_xyz of sample 3")
def _(c: Ctx):
    split = _split(c, lambda a, m: a["prior_xyz"].__setitem__((3, 5, 0), np.nan))
    before = snapshot(c.user)
    o = _eval(c, split)
    return o, refusal(o, c.s, 2, ["samples.npz", "prior_xyz", "3"]) + unchanged(before, c.user)


@case("eval-split-inf", "eval", "eval a split with +inf in coarse of sample 0")
def _(c: Ctx):
    return _refuses_split(c, ["samples.npz", "coarse"], lambda a, m: a["coarse"].__setitem__((0, 10, 2), np.inf))


@case("eval-split-wrong-shape", "eval", "eval a split whose uv has 3 columns instead of 2")
def _(c: Ctx):
    return _refuses_split(c, ["uv"], lambda a, m: a.__setitem__("uv", np.zeros((*a["uv"].shape[:2], 3), np.float32)))


@case("eval-split-truncated", "eval", "eval a split whose samples.npz is cut in half")
def _(c: Ctx):
    split = _split(c)
    f = split / "samples.npz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    o = _eval(c, split)
    return o, refusal(o, c.s, 2, ["samples.npz"])


@case("eval-split-count-mismatch", "eval", "eval a split whose meta.json says 100 samples (8 stored)")
def _(c: Ctx):
    return _refuses_split(c, ["100"], lambda a, m: m.__setitem__("num", 100))


@case("eval-split-missing-array", "eval", "eval a split without joints_rel")
def _(c: Ctx):
    return _refuses_split(c, ["joints_rel"], lambda a, m: a.pop("joints_rel"))


@case("eval-split-strings", "eval", "eval a split whose vis holds strings")
def _(c: Ctx):
    return _refuses_split(c, ["vis"], lambda a, m: a.__setitem__("vis", a["vis"].astype(str)))


@case("eval-data-is-a-file", "eval", "eval --data a text file")
def _(c: Ctx):
    notes = c.write("notes.txt", "mine\n")
    o = _eval(c, notes)
    return o, refusal(o, c.s, 2, ["notes.txt"])


@case("eval-split-valid-tiny", "eval", "eval a valid 8-sample split (the numbers must be finite)")
def _(c: Ctx):
    split = _split(c)
    o = _eval(c, split, timeout=120)
    return o, ok_run(o) + _metric(
        o, "mpjpe_mm", lambda v: isinstance(v, (int, float)) and np.isfinite(v) and 0 < v < 2000
    )


def _coco(c: Ctx, annotations: List[Dict] | None = None, image: bool = True) -> Path:
    root = c.user / "real"
    (root / "coco").mkdir(parents=True)
    if image:
        shutil.copy(c.demo, root / "coco" / "photo.jpg")
    if annotations is None:
        kp = []
        for k in range(17):
            kp += [200.0 + 5 * k, 100.0 + 20 * k, 2]
        annotations = [{"image_id": 1, "bbox": [100.0, 40.0, 300.0, 460.0], "keypoints": kp}]
    data = {"images": [{"id": 1, "file_name": "photo.jpg"}], "annotations": annotations}
    (root / "coco" / "test_coco.json").write_text(json.dumps(data))
    return root


def _nan_keypoint() -> List[Dict]:
    """COCO annotations whose first keypoint is NaN (written as the JSON literal NaN)."""
    kp = [float("nan"), 10.0, 2] + [10.0, 10.0, 2] * 16
    return [{"image_id": 1, "bbox": [0, 0, 50, 50], "keypoints": kp}]


def _h36m(c: Ctx, S: np.ndarray | None = None, scale: float = 2.0, cams: bytes | None = None) -> Path:
    root = c.user / "real"
    folder = root / "h36m"
    name = "S9/S9_Walking.54138969/S9_Walking.54138969_000001.jpg"
    (folder / name).parent.mkdir(parents=True)
    shutil.copy(c.demo, folder / name)
    good = np.concatenate([np.random.default_rng(0).normal(0, 0.3, (1, 17, 3)) + [0, 0, 4], np.ones((1, 17, 1))], 2)
    np.savez(
        folder / "test_h36m_body3d.npz",
        imgname=np.array([name]),
        S=good if S is None else S,
        center=np.array([[256.0, 256.0]]),
        scale=np.array([scale]),
    )
    camera = {("S9", "54138969"): {"f": np.array([[1145.0], [1144.0]]), "c": np.array([[256.0], [256.0]])}}
    (folder / "cameras.pkl").write_bytes(cams if cams is not None else pickle.dumps(camera))
    return root


def _eval_real(c: Ctx, root: Path, *extra, timeout: float = 60) -> Obs:
    return c.cli("eval-real", "--data", root, "--json", *extra, timeout=timeout)


def _refuses_real(c: Ctx, root: Path, names: List[str]) -> Tuple[Obs, Reasons]:
    """``hmdiff eval-real --data ROOT`` must refuse it, naming ``names``."""
    o = _eval_real(c, root)
    return o, refusal(o, c.s, 2, names)


@case("eval-real-coco-nan-keypoint", "eval", "eval-real: a NaN keypoint in test_coco.json")
def _(c: Ctx):
    root = _coco(c, _nan_keypoint())
    return refuses(c, "eval-real", "--data", root, "--json", names=["test_coco.json", "annotation 0", "keypoints"])


@case("eval-real-coco-bbox-inf", "eval", "eval-real: an Infinity in a bbox")
def _(c: Ctx):
    annotations = [{"image_id": 1, "bbox": [0, 0, float("inf"), 50], "keypoints": [100.0, 100.0, 2] * 17}]
    return _refuses_real(c, _coco(c, annotations), ["test_coco.json", "bbox"])


@case("eval-real-h36m-S-short", "eval", "eval-real: h36m S of 12 joints instead of 17")
def _(c: Ctx):
    return _refuses_real(c, _h36m(c, S=np.ones((1, 12, 4))), ["test_h36m_body3d.npz"])


@case("eval-real-h36m-cameras-truncated", "eval", "eval-real: h36m cameras.pkl cut short")
def _(c: Ctx):
    good = pickle.dumps({("S9", "54138969"): {"f": np.ones((2, 1)), "c": np.ones((2, 1))}})
    return _refuses_real(c, _h36m(c, cams=good[: len(good) // 2]), ["cameras.pkl"])


@case("eval-real-h36m-scale-zero", "eval", "eval-real: h36m box scale 0")
def _(c: Ctx):
    return _refuses_real(c, _h36m(c, scale=0.0), ["test_h36m_body3d.npz", "scale"])


@case("eval-real-mpii-not-a-list", "eval", "eval-real: mpii/test_mpii.json holds an object, not a list")
def _(c: Ctx):
    root = c.user / "real"
    (root / "mpii").mkdir(parents=True)
    (root / "mpii" / "test_mpii.json").write_text(json.dumps({"image": "a.jpg", "joints": [[1, 2]] * 16}))
    return _refuses_real(c, root, ["test_mpii.json"])


@case("eval-real-mpii-nan-center", "eval", "eval-real: mpii record with center NaN (JSON NaN literal)")
def _(c: Ctx):
    root = c.user / "real"
    (root / "mpii").mkdir(parents=True)
    shutil.copy(c.demo, root / "mpii" / "a.jpg")
    record = {
        "image": "a.jpg",
        "joints": [[100 + 10 * k, 100 + 10 * k] for k in range(16)],
        "joints_vis": [1] * 16,
        "center": [float("nan"), 200],  # json.dumps writes the NaN literal
        "scale": 2.0,
    }
    text = json.dumps([record])
    (root / "mpii" / "test_mpii.json").write_text(text)
    return _refuses_real(c, root, ["test_mpii.json", "center"])


@case("eval-real-data-is-a-file", "eval", "eval-real --data a text file")
def _(c: Ctx):
    return _refuses_real(c, c.write("notes.txt", "mine\n"), ["notes.txt"])


@case("eval-real-images-missing", "eval", "eval-real: annotations fine, the image file absent")
def _(c: Ctx):
    return _refuses_real(c, _coco(c, image=False), ["photo.jpg"])


@case("eval-real-out-user-folder", "eval", "eval-real --out a folder of the user's files")
def _(c: Ctx):
    root = _coco(c)
    c.write("mine/notes.txt", "mine\n")
    return refuses(c, "eval-real", "--data", root, "--json", "--out", c.user / "mine", names=["mine"])


@case("eval-real-truncated-json", "eval", "eval-real: test_coco.json cut in the middle")
def _(c: Ctx):
    root = _coco(c)
    f = root / "coco" / "test_coco.json"
    f.write_text(f.read_text()[:40])
    return _refuses_real(c, root, ["test_coco.json"])


@case("eval-real-empty-folder", "eval", "eval-real --data an empty folder")
def _(c: Ctx):
    (c.user / "empty").mkdir()
    return _refuses_real(c, c.user / "empty", ["empty"])


@case("eval-real-valid-tiny", "eval", "eval-real on one COCO person in the demo photo (valid data)")
def _(c: Ctx):
    root = _coco(c)
    o = _eval_real(c, root, timeout=120)
    return o, ok_run(o) + _metric(o, "pck_at_0.1", lambda v: isinstance(v, (int, float)) and 0 <= v <= 1)


def _protocol(c: Ctx, *extra, limit: int = 4, timeout: float = 90) -> Obs:
    """``--limit``: the first samples of each synthetic set; bad data named after those ran
    shows as time (at the defaults, 512 samples x 3 seeds, minutes)."""
    cmd = ["eval-protocol", "--seeds", "0", "--limit", str(limit), "--hypotheses", "1", *extra]
    return c.cli(*cmd, timeout=timeout)


@case("eval-protocol-real-with-selection", "eval", "eval-protocol --sets selection --real DIR")
def _(c: Ctx):
    o = _protocol(c, "--sets", "selection", "--real", _coco(c))
    return o, refusal(o, c.s, 2, ["--real"])


refusal_case(
    "eval-protocol-seeds-text",
    "eval",
    "eval-protocol --seeds one,two",
    ("eval-protocol", "--sets", "selection", "--seeds", "one,two"),
    ["--seeds"],
)
refusal_case(
    "eval-protocol-seeds-empty",
    "eval",
    "eval-protocol --seeds ','",
    ("eval-protocol", "--sets", "selection", "--seeds", ",", "--limit", "2"),
    ["seed"],
    timeout=90,
)
refusal_case(
    "eval-protocol-limit-negative",
    "eval",
    "eval-protocol --limit -1",
    ("eval-protocol", "--sets", "selection", "--limit", "-1"),
    ["--limit"],
    timeout=90,
)


def _checked_first(c: Ctx, *args) -> Tuple[Obs, Reasons, Obs]:
    """The same bad data with ``--limit 1`` and with every synthetic sample (``--limit 0``,
    one seed): when the data is checked first both refuse in the same time; a gap is the
    synthetic sets run before the data was read (at the defaults, 3 seeds: three times it)."""
    quick = _protocol(c, *args, limit=1, timeout=120)
    full = _protocol(c, *args, limit=0, timeout=240)
    r: Reasons = []
    gap = full.seconds - quick.seconds
    if gap > 3.0:
        r.append(
            (
                POOR,
                f"the data is read after the synthetic sets ran ({full.seconds:.1f} s with all samples, {quick.seconds:.1f} s with --limit 1)",
            )
        )
    return full, r, quick


@case("eval-protocol-real-nan", "eval", "eval-protocol --sets test --real DIR whose COCO keypoints hold NaN")
def _(c: Ctx):
    o, r, _ = _checked_first(c, "--sets", "test", "--real", _coco(c, _nan_keypoint()))
    return o, refusal(o, c.s, 2, ["test_coco.json", "keypoints"], quick=False) + r


@case("eval-protocol-study-bogus", "eval", "eval-protocol --sets selection --study a folder of the user's notes")
def _(c: Ctx):
    c.write("study/notes.txt", "mine\n")
    before = snapshot(c.user)
    o, r, _ = _checked_first(c, "--sets", "selection", "--study", c.user / "study")
    return o, refusal(o, c.s, 2, ["study"], quick=False) + r + unchanged(before, c.user)


@case("eval-protocol-report-over-file", "eval", "eval-protocol --report an existing file of the user's")
def _(c: Ctx):
    rep = c.write("report.md", "my report\n")
    before = snapshot(c.user)
    o = _protocol(c, "--sets", "selection", "--report", rep)
    return o, refusal(o, c.s, 2, ["report.md"]) + unchanged(before, c.user)


# the Python API ----------------------------------------------------------------------------------
