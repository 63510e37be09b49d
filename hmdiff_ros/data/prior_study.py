"""How a real pose prior fails on synthetic people (``hmdiff data prior-study``).

The data engine's samples (full-resolution Anny bodies, robot/desk cameras, occluders) are
rendered as images (:mod:`hmdiff_ros.data.people_render`) and given to a real pose prior
(MediaPipe, as the pipeline runs it); each sample keeps the ground truth, what the prior
reported, and what the engine's *simulated* prior reported for the same person, so that the
simulation can be compared with (and fitted to) the real thing.

The study has **its own stream**: chunk ``c`` of seed ``s`` comes from
``SeedSequence([s, c], spawn_key=STUDY_SPAWN_KEY)``, a word sequence no training stream (no
spawn key) nor held-out stream (``(TEST_WORD, 1)``) has; bodies come from the held-out test
bank. A chunk's samples depend only on (seed, chunk index, chunk size, configuration), never
on the number of workers.

A study of **training bodies** (``bodies="train"``, ``--bodies train``) is training data: MediaPipe's
own outputs on renders, for ``hmdiff train --study``. Its bodies come from a training bank
(:data:`TRAIN_STUDY_BANK`: training phenotypes, never the held-out ones) and its stream from
``TRAIN_STUDY_SPAWN_KEY``, so it shares neither bodies nor poses and cameras with the held-out
study, whose val and test parts select and test the model.

On disk (folder ``out``): ``meta.json`` (what was asked: num, seed, chunk size, engine and
render configuration, the prior's settings) and ``chunk_00000.npz``, ... Every file is written
to a temporary name and renamed into place, so a run stopped at any point leaves only whole
chunks; running the same command again skips them (:func:`run_prior_study`). Arrays per
sample (``N`` samples; P = 24 prior joints; J = 25 joints; S = crop size):

- ground truth: ``index`` (N,) sample number; ``joints``/``joints_rel`` (N, J, 3) camera frame /
  pelvis-relative, metres; ``coarse_rel`` (N, 600, 3) the coarse mesh, pelvis-relative (the
  training target; studies made before it was recorded lack it); ``gt_uv`` (N, P, 2) the prior joints projected, image pixels;
  ``gt_in_image`` (N, P); ``joints_outside`` (N,) how many of the P joints lie outside the
  image; ``gt_occluded`` (N, P) behind the occluder; ``gt_surface_depth`` (N, P) the rendered
  body's depth at each joint's pixel (inf: background there, NaN: outside the image; a joint
  much deeper than it is hidden by another body part); ``K`` (N, 3, 3); ``image_size`` (N, 2);
  ``rotation`` (N, 3, 3) body -> camera; ``shape`` (N, 6) phenotypes; ``age`` (N,) years;
  ``height_m`` (N,) rest standing height; ``family`` (N,) pose family; ``pose`` (N, 103, 3);
  ``occluder`` (N, 4) image rectangle, NaN where none; ``person_box`` (N, 4) the projected
  body's extent; ``silhouette_px``/``visible_px`` (N,) body pixels before/after the occluder;
- rendering: ``skin_tone`` (N,) 0 light .. 1 dark; ``background`` (N,) index into
  ``people_render.BACKGROUNDS``; ``light`` (N, 3); ``ambient`` (N,);
- the real prior: ``mp_detected`` (N,) bool; ``mp_uv`` (N, P, 2) image pixels; ``mp_vis`` (N, P);
  ``mp_xyz`` (N, P, 3) pelvis-relative camera-aligned metres; ``mp_score`` (N,); ``mp_mask_iou``
  (N,) IoU of its mask (> 0.5) with the visible silhouette (all NaN where not detected);
- the simulated prior: ``sim_uv`` (N, P, 2), ``sim_vis`` (N, P), ``sim_xyz`` (N, P, 3),
  ``sim_swapped`` (N,);
- masks in the engine's crop ``box`` (N, 3) (cx, cy, size): ``sim_mask``, ``true_mask`` (the
  visible silhouette) and ``mp_mask`` (N, S, S) uint8 0..255;
- timing (seconds of one worker): ``generate_s`` (engine, per sample), ``render_s``, ``prior_s``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import signal
import sys
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np

import hmdiff_ros
from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES, SKELETON_EDGES
from hmdiff_ros.camera import apply_affine, crop_affine, project
from hmdiff_ros.data.engine import SyntheticConfig, SyntheticEngine
from hmdiff_ros.data.people_render import BACKGROUNDS, PeopleRenderConfig, PeopleRenderer, background_counts
from hmdiff_ros.data.poses import FAMILY_NAMES
from hmdiff_ros.data.shapes import TEST_BANK, TEST_WORD, BankConfig, load_or_build_shape_bank
from hmdiff_ros.errors import one_line
from hmdiff_ros.files import made_folder, write_npz
from hmdiff_ros.observation import in_image, in_rect

FORMAT_VERSION = 1
META_FILE = "meta.json"
HELD_OUT_FROM = 0.8  # the samples from this fraction of the study on (by index) are held out
STUDY_SPAWN_KEY = (TEST_WORD, 2)  # the study's stream: apart from training and held-out streams
TRAIN_STUDY_SPAWN_KEY = (TEST_WORD, 3)  # a study of training bodies: apart from the held-out study's too
BODIES = ("test", "train")  # the held-out study (selection and test sets), or training data
TRAIN_STUDY_BANK = BankConfig(size=512, role="train", full=True)  # training phenotypes, full meshes
CHUNK = 32  # samples per chunk file (and per engine call)
P = len(PRIOR_JOINT_INDICES)


def _study_engine(bodies: str = "test") -> SyntheticConfig:
    bank = TRAIN_STUDY_BANK if bodies == "train" else replace(TEST_BANK, full=True)
    return SyntheticConfig(bank=bank, full=True)


@dataclass(frozen=True)
class StudyConfig:
    num: int  # samples
    seed: int = 0
    chunk: int = CHUNK  # samples per chunk; part of what the samples are
    engine: SyntheticConfig = field(default_factory=_study_engine)  # held-out bodies, full meshes
    render: PeopleRenderConfig = field(default_factory=PeopleRenderConfig)

    @classmethod
    def of_bodies(cls, bodies: str, **kwargs) -> "StudyConfig":
        """A study of held-out (``"test"``) or training (``"train"``) bodies."""
        if bodies not in BODIES:
            raise ValueError(f"--bodies must be one of {', '.join(BODIES)}, got {bodies!r}")
        return cls(engine=_study_engine(bodies), **kwargs)

    @property
    def bodies(self) -> str:
        return self.engine.bank.role

    @property
    def spawn_key(self) -> tuple:
        return TRAIN_STUDY_SPAWN_KEY if self.bodies == "train" else STUDY_SPAWN_KEY

    def __post_init__(self) -> None:
        if isinstance(self.num, bool) or not isinstance(self.num, int) or self.num < 1:
            raise ValueError(f"--num must be an integer >= 1, got {self.num!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"--chunk must be an integer >= 1, got {self.chunk!r}")
        if not self.engine.full:
            raise ValueError("the prior study renders full-resolution meshes: its engine needs full=True")

    @property
    def num_chunks(self) -> int:
        return (self.num + self.chunk - 1) // self.chunk

    def chunk_size(self, index: int) -> int:
        return min(self.chunk, self.num - index * self.chunk)


def chunk_rngs(seed: int, index: int, spawn_key: tuple = STUDY_SPAWN_KEY) -> tuple:
    """The generators of chunk ``index``: one for the engine, one for the rendering."""
    seq = np.random.SeedSequence([seed, index], spawn_key=spawn_key)
    return tuple(np.random.default_rng(s) for s in seq.spawn(2))


def chunk_path(out: Path, index: int) -> Path:
    return Path(out) / f"chunk_{index:05d}.npz"


def prior_settings(factory: Callable, kwargs: Dict) -> Dict:
    """The prior's settings for ``meta.json``: its class and every constructor argument, the
    defaults filled in."""
    settings = {"class": f"{factory.__module__}.{factory.__qualname__}"}
    try:
        params = inspect.signature(factory).parameters
        settings.update({k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty})
    except (TypeError, ValueError):  # no signature to read
        pass
    settings.update(kwargs)
    return json.loads(json.dumps(settings, default=str))


def package_versions() -> Dict:
    """Versions of what makes the images and reads them (recorded, not compared on resume)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"hmdiff_ros": hmdiff_ros.__version__, "opencv": cv2.__version__, "numpy": np.__version__}
    try:
        out["mediapipe"] = version("mediapipe")
    except PackageNotFoundError:
        out["mediapipe"] = None
    return out


# -- one worker ---------------------------------------------------------------------------


class StudyWorker:
    """Makes chunks: the engine, the renderer and one prior, built once per process."""

    def __init__(self, cfg: StudyConfig, prior: Callable, prior_kwargs: Dict) -> None:
        self.cfg = cfg
        self.engine = SyntheticEngine(cfg.engine)
        self.renderer = PeopleRenderer(self.engine.bank, self.engine.topology.full_faces, cfg.render)
        self.prior = prior(**prior_kwargs)
        bank = self.engine.bank
        self.bank_row = {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(bank.phenotypes))}

    def close(self) -> None:
        self.prior.close()

    def make_chunk(self, index: int, images: list | None = None) -> Dict[str, np.ndarray]:
        """The arrays of chunk ``index`` (see the module docstring); the rendered RGB images
        are appended to ``images`` when given."""
        cfg = self.cfg
        gen, ren = chunk_rngs(cfg.seed, index, cfg.spawn_key)
        n = cfg.chunk_size(index)
        start = time.perf_counter()
        b = self.engine.generate(gen, n, proxy=False)
        generate_s = (time.perf_counter() - start) / n
        s = cfg.engine.proxy.crop_size
        bank = self.engine.bank
        ids = np.array([self.bank_row[row.tobytes()] for row in np.ascontiguousarray(b["shape"])])
        joints = b["joints"].astype(np.float64)
        gt_uv = project(joints[:, list(PRIOR_JOINT_INDICES)], b["K"].astype(np.float64))  # (n, P, 2)
        inside = in_image(gt_uv, b["image_size"])
        out = {
            "index": index * cfg.chunk + np.arange(n, dtype=np.int64),
            "joints": b["joints"],
            "joints_rel": b["joints_rel"],
            "coarse_rel": b["coarse_rel"].astype(np.float32),
            "gt_uv": gt_uv.astype(np.float32),
            "gt_in_image": inside,
            "joints_outside": (~inside).sum(1).astype(np.int16),
            "gt_occluded": in_rect(gt_uv, b["occluder"]),
            "gt_surface_depth": np.full((n, P), np.nan, np.float32),
            "K": b["K"],
            "image_size": b["image_size"],
            "rotation": b["rotation"],
            "shape": b["shape"],
            "age": bank.ages[ids].astype(np.float32),
            "height_m": self.engine.heights[ids].astype(np.float32),
            "family": b["family"],
            "pose": b["pose"].astype(np.float32),
            "occluder": b["occluder"],
            "person_box": np.zeros((n, 4), np.float32),
            "silhouette_px": np.zeros(n, np.int64),
            "visible_px": np.zeros(n, np.int64),
            "skin_tone": np.zeros(n, np.float32),
            "background": np.zeros(n, np.int16),
            "light": np.zeros((n, 3), np.float32),
            "ambient": np.zeros(n, np.float32),
            "mp_detected": np.zeros(n, bool),
            "mp_uv": np.full((n, P, 2), np.nan, np.float32),
            "mp_vis": np.full((n, P), np.nan, np.float32),
            "mp_xyz": np.full((n, P, 3), np.nan, np.float32),
            "mp_score": np.full(n, np.nan, np.float32),
            "mp_mask_iou": np.full(n, np.nan, np.float32),
            "sim_uv": b["prior_uv"],
            "sim_vis": b["vis"],
            "sim_xyz": b["prior_xyz"],
            "sim_swapped": b["swapped"],
            "box": b["box"],
            "sim_mask": np.round(b["mask"] * 255).astype(np.uint8),
            "true_mask": np.zeros((n, s, s), np.uint8),
            "mp_mask": np.zeros((n, s, s), np.uint8),
            "generate_s": np.full(n, generate_s, np.float32),
            "render_s": np.zeros(n, np.float32),
            "prior_s": np.zeros(n, np.float32),
        }
        affine = crop_affine(b["box"].astype(np.float64), s)  # (n, 2, 3) image -> crop
        for i in range(n):
            start = time.perf_counter()
            r = self.renderer.render(ren, b["full"][i], b["K"][i], b["image_size"][i], b["occluder"][i])
            out["render_s"][i] = time.perf_counter() - start
            if images is not None:
                images.append(r.image)
            start = time.perf_counter()
            person = self.prior.detect(r.image)
            out["prior_s"][i] = time.perf_counter() - start
            body = np.isfinite(r.depth)
            rows, cols = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
            if len(rows):
                out["person_box"][i] = (cols[0], rows[0], cols[-1], rows[-1])
            out["silhouette_px"][i], out["visible_px"][i] = body.sum(), r.silhouette.sum()
            out["skin_tone"][i], out["background"][i] = r.skin_tone, r.background
            out["light"][i], out["ambient"][i] = r.light, r.ambient
            px = np.round(gt_uv[i]).astype(np.int64)
            ok = inside[i]
            out["gt_surface_depth"][i, ok] = r.depth[px[ok, 1], px[ok, 0]]
            out["true_mask"][i] = _to_crop(r.silhouette.astype(np.float32), affine[i], s)
            if person is None:
                continue
            out["mp_detected"][i] = True
            out["mp_uv"][i], out["mp_vis"][i], out["mp_xyz"][i] = person.uv, person.visibility, person.xyz
            out["mp_score"][i] = person.score
            if person.mask is not None:
                mask = person.mask > 0.5
                union = (mask | r.silhouette).sum()
                out["mp_mask_iou"][i] = (mask & r.silhouette).sum() / union if union else np.nan
                out["mp_mask"][i] = _to_crop(person.mask.astype(np.float32), affine[i], s)
        return out


def _to_crop(mask: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """A [0, 1] image mask warped into the crop as uint8, the way the pipeline warps its prior's mask."""
    crop = cv2.warpAffine(mask, affine, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return np.round(np.clip(crop, 0.0, 1.0) * 255).astype(np.uint8)


def write_chunk(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """Write ``path`` whole or not at all (:func:`~hmdiff_ros.files.write_npz`)."""
    write_npz(path, arrays)


def _worker_main(cfg: StudyConfig, prior: Callable, prior_kwargs: Dict, out: Path, tasks, results) -> None:
    """A worker process: chunk indices from ``tasks`` (``None``: stop), stats or an error to
    ``results``. Ctrl-C reaches the whole process group and the main process stops the
    workers, so they ignore SIGINT; one thread each (the processes use the cores)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import torch

        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        worker = StudyWorker(cfg, prior, prior_kwargs)
        try:
            for index in iter(tasks.get, None):
                arrays = worker.make_chunk(index)
                write_chunk(chunk_path(out, index), arrays)
                results.put(("done", _chunk_stats(index, arrays)))
        finally:
            worker.close()
    except Exception as exc:
        try:
            pickle.dumps(exc)
        except Exception:  # an error that cannot travel: its type and message do
            exc = RuntimeError(f"{type(exc).__name__}: {one_line(exc)}")
        results.put(("error", exc))


def _run_workers(out: Path, cfg: StudyConfig, todo: List[int], prior: Callable, prior_kwargs: Dict, workers: int):
    """Stats of the chunks ``todo`` as worker processes finish them; an error of a worker is
    raised here, and a worker that dies (killed, out of memory) stops the run too. On any exit
    the workers are ended."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")  # not forked: torch's and MediaPipe's threads do not survive a fork
    tasks, results = ctx.Queue(), ctx.Queue()
    for index in todo:
        tasks.put(index)
    count = min(workers, len(todo))
    for _ in range(count):
        tasks.put(None)
    procs = [
        ctx.Process(target=_worker_main, args=(cfg, prior, prior_kwargs, out, tasks, results), daemon=True)
        for _ in range(count)
    ]
    try:
        for p in procs:
            p.start()
        pending = len(todo)
        while pending:
            try:
                kind, value = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode is not None]
                if any(dead) or len(dead) == len(procs):
                    raise RuntimeError(
                        f"a study worker stopped (exit code {max(dead, key=abs)}) before its chunks were done; "
                        "the chunks made are kept: run the command again to go on"
                    ) from None
                continue
            if kind == "error":
                raise value
            pending -= 1
            yield value
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
        tasks.cancel_join_thread()
        results.cancel_join_thread()


def _chunk_stats(index: int, arrays: Dict[str, np.ndarray]) -> Dict:
    return {
        "chunk": index,
        "num": int(len(arrays["index"])),
        "detected": int(arrays["mp_detected"].sum()),
        "generate_s": float(arrays["generate_s"].sum()),
        "render_s": float(arrays["render_s"].sum()),
        "prior_s": float(arrays["prior_s"].sum()),
    }


# -- the run ------------------------------------------------------------------------------


def _identity(meta: Dict) -> Dict:
    """What makes two studies the same (package versions are recorded, not compared)."""
    return {k: v for k, v in meta.items() if k not in ("versions", "complete")}


def _differs(there, here) -> bool:
    """Whether a recorded setting ``there`` differs from the asked one ``here``. A key the
    record lacks is a setting added to the package since, at a default that keeps the old
    behaviour (e.g. ``PriorNoiseConfig.kind``), and weights appended at 0 are options added
    since, not drawn (new pose families): neither makes the study another one."""
    if isinstance(there, dict) and isinstance(here, dict):
        return any(k not in here for k in there) or any(k in there and _differs(there[k], v) for k, v in here.items())
    if isinstance(there, list) and isinstance(here, list) and len(here) > len(there):
        return here[: len(there)] != there or any(v != 0 for v in here[len(there) :])
    return there != here


def _write_json(path: Path, data: Dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_study_meta(out: "str | Path") -> Dict:
    """The ``meta.json`` of the study in folder ``out``."""
    path = Path(out) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read '{path}' ({type(exc).__name__}: {one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"'{path}' is not the meta data of a prior study of format {FORMAT_VERSION}")
    return meta


def run_prior_study(
    out: "str | Path",
    cfg: StudyConfig,
    prior: Callable,
    prior_kwargs: Dict | None = None,
    workers: int = 1,
    force: bool = False,
    progress: str = "none",
    held_out_only: bool = False,
) -> Dict:
    """Make the chunks of study ``cfg`` in folder ``out`` that are not there yet
    (``held_out_only``: only those holding held-out samples, index >= ``HELD_OUT_FROM`` x num;
    the same run without it later makes the rest).

    ``prior(**prior_kwargs)`` builds the pose prior (one per worker process; it must be
    picklable by reference, e.g. a class, and offer ``detect(rgb_image) -> PriorPerson | None``
    and ``close()``). ``workers`` processes (spawned: no state is shared with this one; 1: in
    this process) make chunks in parallel. An ``out`` that holds another study (other num,
    seed, chunk size or configuration) is refused unless ``force``, which removes its chunks
    and meta data first (nothing else). ``progress``: ``"bar"`` (tqdm on stderr), ``"lines"``
    (a line per chunk on stderr) or ``"none"``.

    Returns a summary: chunks made now and found done, the study's detection rate, and the
    milliseconds per sample of one worker (engine, rendering, prior) over the chunks made now.
    Ctrl-C (or SIGTERM, which the command line raises as ``KeyboardInterrupt``) stops the
    workers; whole chunks stay, the next run goes on from them.
    """
    if progress not in ("bar", "lines", "none"):
        raise ValueError(f"progress must be one of bar, lines, none; got {progress!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")
    prior_kwargs = dict(prior_kwargs or {})
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; expected a folder for the study")
    bank = load_or_build_shape_bank(cfg.engine.bank)  # once, here: the workers then read the cache
    meta = {
        "format": FORMAT_VERSION,
        "num": cfg.num,
        "seed": cfg.seed,
        "chunk": cfg.chunk,
        "num_chunks": cfg.num_chunks,
        "stream": {"seed": cfg.seed, "spawn_key": list(cfg.spawn_key)},
        "bodies": {"role": cfg.engine.bank.role, "size": bank.size, "phenotypes_sha1": bank.phenotypes_sha1()},
        "engine": asdict(cfg.engine),
        "render": asdict(cfg.render),
        "backgrounds": background_counts(),
        "prior": prior_settings(prior, prior_kwargs),
        "versions": package_versions(),
        "complete": False,
    }
    meta = json.loads(json.dumps(meta))  # tuples as lists, as read back
    with made_folder(out):
        old = out / META_FILE
        if force:  # only the study's own files go
            for path in out.glob("chunk_*.npz"):
                path.unlink()
            old.unlink(missing_ok=True)
        elif old.exists():
            there = _identity(read_study_meta(out))
            differ = [k for k in _identity(meta) if _differs(there.get(k), meta[k])]
            differ = [k for k in differ if k not in ("num_chunks", "stream")] or differ  # these follow num, seed
            if differ:
                what = ", ".join(
                    f"{k} {there.get(k)} there, {meta[k]} asked" if k in ("num", "seed", "chunk") else f"another {k}"
                    for k in differ
                )
                raise ValueError(
                    f"--out '{out}' holds another prior study ({what}); use --force to replace it or choose another --out"
                )
        elif any(p for p in out.iterdir() if not p.name.startswith(".chunk_")):
            raise ValueError(f"--out '{out}' is not empty and holds no prior study; choose another --out")
        for path in out.glob(".chunk_*.tmp.npz"):  # left by a run that was killed mid-write
            path.unlink()
        if not old.exists():
            _write_json(old, meta)
        first = held_out_chunk(cfg.num, cfg.chunk) if held_out_only else 0
        todo = [c for c in range(first, cfg.num_chunks) if not chunk_path(out, c).is_file()]
        done = cfg.num_chunks - first - len(todo)
        stats = _make(out, cfg, todo, prior, prior_kwargs, workers, progress)
        if len(stats) == len(todo) and first == 0:
            _write_json(old, {**read_study_meta(out), "complete": True})
        detected = []
        for c in range(first, cfg.num_chunks):  # the study's rate (npz members load one at a time)
            with np.load(chunk_path(out, c)) as data:
                detected.append(data["mp_detected"])
    made = sum(s["num"] for s in stats)
    return {
        "out": str(out),
        "num": cfg.num,
        "seed": cfg.seed,
        "chunks": cfg.num_chunks,
        "chunks_made": len(stats),
        "chunks_skipped": done,
        "workers": workers,
        "made": made,
        "detection_rate": float(np.concatenate(detected).mean()),
        "generate_ms": 1000 * sum(s["generate_s"] for s in stats) / made if made else None,
        "render_ms": 1000 * sum(s["render_s"] for s in stats) / made if made else None,
        "prior_ms": 1000 * sum(s["prior_s"] for s in stats) / made if made else None,
    }


def _make(
    out: Path, cfg: StudyConfig, todo: List[int], prior: Callable, prior_kwargs: Dict, workers: int, progress: str
) -> List[Dict]:
    """Make the chunks ``todo``; the stats of those made (all of them unless interrupted)."""
    stats: List[Dict] = []
    if not todo:
        return stats
    bar = None
    if progress == "bar":
        from tqdm import tqdm

        done = cfg.num - sum(cfg.chunk_size(c) for c in todo)
        bar = tqdm(total=cfg.num, initial=done, desc="prior-study", unit="sample", file=sys.stderr)

    def report(s: Dict) -> None:
        stats.append(s)
        if bar is not None:
            bar.update(s["num"])
            bar.set_postfix(detected=f"{sum(x['detected'] for x in stats) / sum(x['num'] for x in stats):.0%}")
        elif progress == "lines":
            print(
                f"prior-study: chunk {s['chunk'] + 1}/{cfg.num_chunks}: {s['num']} samples, {s['detected']} detected",
                file=sys.stderr,
                flush=True,
            )

    try:
        if workers == 1:
            import torch

            threads = torch.get_num_threads(), cv2.getNumThreads()
            torch.set_num_threads(1)  # as in a worker process: the same numbers to the last bit
            cv2.setNumThreads(1)
            worker = StudyWorker(cfg, prior, prior_kwargs)
            try:
                for c in todo:
                    arrays = worker.make_chunk(c)
                    write_chunk(chunk_path(out, c), arrays)
                    report(_chunk_stats(c, arrays))
            finally:
                worker.close()
                torch.set_num_threads(threads[0])
                cv2.setNumThreads(threads[1])
        else:
            with contextlib.closing(_run_workers(out, cfg, todo, prior, prior_kwargs, workers)) as made:
                for stat in made:
                    report(stat)
    finally:
        if bar is not None:
            bar.close()
        for path in out.glob(".chunk_*.tmp.npz"):  # a chunk being written when the workers were stopped
            path.unlink(missing_ok=True)
    return stats


# -- the reader ---------------------------------------------------------------------------

_UNREADABLE = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def held_out_chunk(num: int, chunk: int) -> int:
    """The first chunk that holds a held-out sample (index >= ``HELD_OUT_FROM`` x ``num``)."""
    return int(round(HELD_OUT_FROM * num)) // chunk


def load_prior_study(folder: "str | Path", partial: bool = False, held_out_only: bool = False) -> Dict[str, np.ndarray]:
    """The arrays of the study in ``folder`` (see the module docstring), chunks in order, so
    row ``i`` is sample ``index[i]`` (an array that not every chunk holds is left out). A study still missing chunks is refused unless
    ``partial`` (then the chunks there are read); ``held_out_only``: only the chunks of the
    held-out part must be there (``hmdiff data prior-study --held-out-only``), and only they are read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prior study '{folder}' does not exist; make one with 'hmdiff data prior-study'")
    if not (folder / META_FILE).is_file():
        raise FileNotFoundError(
            f"'{folder}' is not a prior study (no {META_FILE}); make one with 'hmdiff data prior-study'"
        )
    meta = read_study_meta(folder)
    first = held_out_chunk(int(meta["num"]), int(meta["chunk"])) if held_out_only else 0
    paths = [chunk_path(folder, c) for c in range(first, int(meta["num_chunks"]))]
    missing = [p.name for p in paths if not p.is_file()]
    if missing and not partial:
        raise ValueError(
            f"prior study '{folder}' lacks {len(missing)} of {len(paths)} chunks (first: {missing[0]}); "
            "run the same 'hmdiff data prior-study' command again to finish it"
        )
    parts: Dict[str, list] = {}
    read = 0
    for path in paths:
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except _UNREADABLE as exc:
            raise ValueError(
                f"'{path}' is truncated or corrupt ({type(exc).__name__}: {one_line(exc)}); delete it and run the "
                "command again"
            ) from None
        for k, v in arrays.items():
            parts.setdefault(k, []).append(v)
        read += 1
    if not parts:
        raise ValueError(f"prior study '{folder}' holds no chunks yet; run 'hmdiff data prior-study' to make them")
    # an array that only some chunks hold (recorded since the others were made) is left out, so
    # that row i of every array is the same sample
    return {k: np.concatenate(v) for k, v in parts.items() if len(v) == read}


def observed(study: Dict[str, np.ndarray], rows: np.ndarray, crop_size: int) -> Dict[str, np.ndarray]:
    """MediaPipe's observation of samples ``rows``, as the data engine gives its simulated
    prior's: ``uv`` (N, P, 2) crop pixels, ``vis`` (N, P) (0 where none), ``prior_xyz`` (N, P, 3)
    U, ``mask`` (N, S, S) uint8 0..255 and ``valid`` (N, S, S) float32, the crop pixels inside
    the image; cropped by each sample's ``box`` as the engine crops."""
    box = study["box"][rows].astype(np.float64)  # (N, 3) cx, cy, side
    size = study["image_size"][rows].astype(np.float64)  # (N, 2) width, height
    affine = crop_affine(box, crop_size)
    uv = apply_affine(affine, study["mp_uv"][rows].astype(np.float64)).astype(np.float32)
    # the crop pixels that fall inside the image: (crop - offset) / scale is the image pixel
    grid = np.arange(crop_size, dtype=np.float64)
    scale, offset = affine[:, 0, 0], affine[:, :, 2]

    def inside(axis: int) -> np.ndarray:  # (N, S): crop pixels along ``axis`` within the image
        image = (grid[None] - offset[:, axis, None]) / scale[:, None]
        return (image >= 0) & (image <= size[:, axis, None] - 1)

    valid = (inside(1)[:, :, None] & inside(0)[:, None, :]).astype(np.float32)  # (N, S, S) rows are v
    return {
        "uv": uv,
        "vis": np.nan_to_num(study["mp_vis"][rows].astype(np.float32)),
        "prior_xyz": study["mp_xyz"][rows].astype(np.float32),
        "mask": study["mp_mask"][rows],
        "valid": valid,
    }


TRAINING_KEYS = ("uv", "vis", "prior_xyz", "mask", "valid", "coarse_rel", "joints_rel")


def study_training_set(folder: "str | Path", crop_size: int) -> Dict[str, np.ndarray]:
    """The samples of a study of training bodies (``hmdiff data prior-study --bodies train``)
    that MediaPipe detected, as training data: :data:`TRAINING_KEYS`, MediaPipe's observation
    (:func:`observed`) with the ground truth, in the form the training stream gives its
    batches (:func:`~hmdiff_ros.data.engine.compact`: ``mask`` uint8 0..255, ``valid`` bool).
    A study of held-out bodies is refused: its bodies, poses and cameras are those of the
    selection and test sets."""
    meta = read_study_meta(folder)
    role = meta.get("bodies", {}).get("role")
    if role != "train":
        raise ValueError(
            f"prior study '{folder}' is of held-out bodies (bodies: {role}), the selection and test sets; "
            "training needs a study of training bodies: hmdiff data prior-study --bodies train"
        )
    study = load_prior_study(folder)
    if "coarse_rel" not in study:
        raise ValueError(f"prior study '{folder}' lacks the coarse mesh (coarse_rel); make it again with this version")
    rows = np.flatnonzero(study["mp_detected"])
    if len(rows) == 0:
        raise ValueError(f"prior study '{folder}': MediaPipe detected no one; nothing to train on")
    out = observed(study, rows, crop_size)
    out["valid"] = out["valid"] > 0.5
    out["coarse_rel"] = study["coarse_rel"][rows].astype(np.float32)
    out["joints_rel"] = study["joints_rel"][rows].astype(np.float32)
    return out


# -- a look at the images -----------------------------------------------------------------

_BONES = [(PRIOR_JOINT_NAMES.index(a), PRIOR_JOINT_NAMES.index(b)) for a, b in SKELETON_EDGES if b != "head_top"]


def study_sheet(
    path: "str | Path",
    cfg: StudyConfig,
    prior: Callable,
    prior_kwargs: Dict | None = None,
    num: int = 12,
    tile: int = 256,
) -> Path:
    """A PNG contact sheet of the study's first ``num`` samples (made again here, the same
    as in the study's chunks) as the prior saw them: the ground-truth skeleton in white, the
    prior's keypoints in green (visibility >= 0.5) or orange (below), and a caption (pose
    family, age, background, and the prior's detection with its mask IoU). Written whole,
    over ``path`` if it exists."""
    path = Path(path)
    num = min(num, cfg.num)
    worker = StudyWorker(cfg, prior, dict(prior_kwargs or {}))
    images: list = []
    try:
        parts = [worker.make_chunk(c, images) for c in range((num + cfg.chunk - 1) // cfg.chunk)]
    finally:
        worker.close()
    s = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    tiles, high = [], tile * 3 // 4
    for i in range(num):
        w, h = (int(v) for v in s["image_size"][i])
        scale = min(tile / w, high / h)  # fitted into a 4:3 tile, black bars where it is wider
        img = cv2.resize(images[i], (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        img = np.pad(img, ((0, high - img.shape[0]), (0, tile - img.shape[1]), (0, 0)))
        gt = s["gt_uv"][i] * scale
        for a, b in _BONES:
            cv2.line(img, _pt(gt[a]), _pt(gt[b]), (255, 255, 255), 1, cv2.LINE_AA)
        if s["mp_detected"][i]:
            for uv, vis in zip(s["mp_uv"][i] * scale, s["mp_vis"][i], strict=True):
                cv2.circle(img, _pt(uv), 2, (0, 230, 0) if vis >= 0.5 else (255, 140, 0), -1, cv2.LINE_AA)
        seen = f"MediaPipe: IoU {s['mp_mask_iou'][i]:.2f}" if s["mp_detected"][i] else "MediaPipe: nobody"
        caption = f"{FAMILY_NAMES[s['family'][i]]}, {s['age'][i]:.0f}y, {BACKGROUNDS[s['background'][i]]}; {seen}"
        cv2.rectangle(img, (0, 0), (tile, 13), (0, 0, 0), -1)
        cv2.putText(img, caption, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.29, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    cols = min(4, num)
    tiles += [np.zeros_like(tiles[0])] * (-num % cols)
    sheet = np.vstack([np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)])
    sheet = sheet // 8 * 8 + 4  # 32 levels per channel: a third of the PNG's size, the same to the eye
    ok, data = cv2.imencode(".png", sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"cannot encode the sheet '{path}' as PNG")
    with made_folder(path.parent):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data.tobytes())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _pt(uv: np.ndarray) -> tuple:
    return (int(round(float(uv[0]))), int(round(float(uv[1])))) if np.isfinite(uv).all() else (-99, -99)
