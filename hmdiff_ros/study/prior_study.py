"""How a real pose prior fails on synthetic people (``hmdiff data prior-study``): the run.

The data engine's samples (full-resolution Anny bodies, robot/desk cameras, occluders) are
rendered as images and given to a real pose prior (MediaPipe, as the pipeline runs it;
:mod:`hmdiff_ros.study.study_worker`); each sample keeps the ground truth, what the prior
reported, and what the engine's *simulated* prior reported for the same person, so that the
simulation can be compared with (and fitted to) the real thing. What a study is made of (its
stream, held-out or training bodies): :mod:`hmdiff_ros.study.study_config`.

On disk (folder ``out``; the arrays: :mod:`hmdiff_ros.data.study_reader`): ``meta.json`` and
``chunk_00000.npz``, ... Every file is written to a temporary name and renamed into place, so
a run stopped at any point leaves only whole chunks; running the same command again skips
them (:func:`run_prior_study`).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np

import hmdiff_ros
from hmdiff_ros.data.shapes import load_or_build_shape_bank
from hmdiff_ros.data.study_reader import FORMAT_VERSION, META_FILE, chunk_path, held_out_chunk, read_study_meta
from hmdiff_ros.files import made_folder
from hmdiff_ros.study.people_render import background_counts
from hmdiff_ros.study.study_config import StudyConfig
from hmdiff_ros.study.study_worker import StudyWorker, chunk_stats, run_workers, write_chunk


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
                    report(chunk_stats(c, arrays))
            finally:
                worker.close()
                torch.set_num_threads(threads[0])
                cv2.setNumThreads(threads[1])
        else:
            with contextlib.closing(run_workers(out, cfg, todo, prior, prior_kwargs, workers)) as made:
                for stat in made:
                    report(stat)
    finally:
        if bar is not None:
            bar.close()
        for path in out.glob(".chunk_*.tmp.npz"):  # a chunk being written when the workers were stopped
            path.unlink(missing_ok=True)
    return stats
