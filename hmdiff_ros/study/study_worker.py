"""The prior study's chunks: each sample made by the data engine, rendered as an image
(:mod:`hmdiff_ros.study.people_render`) and given to a real pose prior, in this process or in
worker processes (:func:`run_workers`). What a chunk holds: :mod:`hmdiff_ros.data.study_reader`."""

from __future__ import annotations

import pickle
import signal
import time
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np

from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES
from hmdiff_ros.camera import crop_affine, project
from hmdiff_ros.data.engine import SyntheticEngine
from hmdiff_ros.data.study_reader import chunk_path
from hmdiff_ros.errors import one_line
from hmdiff_ros.files import write_npz
from hmdiff_ros.observation import in_image, in_rect
from hmdiff_ros.study.people_render import PeopleRenderer
from hmdiff_ros.study.study_config import StudyConfig, chunk_rngs

P = len(PRIOR_JOINT_INDICES)


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
                results.put(("done", chunk_stats(index, arrays)))
        finally:
            worker.close()
    except Exception as exc:
        try:
            pickle.dumps(exc)
        except Exception:  # an error that cannot travel: its type and message do
            exc = RuntimeError(f"{type(exc).__name__}: {one_line(exc)}")
        results.put(("error", exc))


def run_workers(out: Path, cfg: StudyConfig, todo: List[int], prior: Callable, prior_kwargs: Dict, workers: int):
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


def chunk_stats(index: int, arrays: Dict[str, np.ndarray]) -> Dict:
    """What the run reports of a chunk made: its samples, detections and seconds per stage."""
    return {
        "chunk": index,
        "num": int(len(arrays["index"])),
        "detected": int(arrays["mp_detected"].sum()),
        "generate_s": float(arrays["generate_s"].sum()),
        "render_s": float(arrays["render_s"].sum()),
        "prior_s": float(arrays["prior_s"].sum()),
    }
