"""``hmdiff run`` and ``hmdiff demo``: the pipeline over images, folders, videos and cameras.

Per input it writes ``<stem>_overlay.jpg`` (mesh and skeleton over the frame),
``<stem>_person<i>.obj`` (full mesh, camera frame, metres) and ``<stem>.json``; videos and
cameras give ``<stem>_overlay.mp4`` and ``<stem>.jsonl`` (one record per frame). A bad input
is reported and skipped; the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np

from hmdiff_ros.camera import intrinsics_from_fov
from hmdiff_ros.pipeline.io import (
    VIDEO_SUFFIXES,
    collect_inputs,
    dump_json,
    overlay,
    person_json,
    read_image,
    to_rgb8,
    write_obj,
)
from hmdiff_ros.pipeline.pipeline import Pipeline, PipelineConfig
from hmdiff_ros.pipeline.tracking import Tracker, TrackerConfig

DEMO_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "demo" / "astronaut_eileen_collins.jpg"


def build_pipeline(cfg: PipelineConfig, checkpoint: str | None = None, video: bool = False) -> Pipeline:
    """The pipeline with the MediaPipe prior; ``video``: the prior follows the person from frame
    to frame (for one video or camera stream; :meth:`MediaPipePrior.reset` between streams)."""
    from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior
    from hmdiff_ros.runtime.backends import load_model

    model = load_model(cfg.backend, checkpoint, cfg.engines)
    return Pipeline(model, MediaPipePrior(static_image_mode=not video), cfg=cfg)


@contextlib.contextmanager
def video_prior(pipe: Pipeline):
    """Within the block the pipeline's prior runs in MediaPipe's video mode (fresh tracking)."""
    from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior

    still, video = pipe.prior, MediaPipePrior(static_image_mode=False)
    pipe.prior = video
    try:
        yield pipe
    finally:
        pipe.prior = still
        video.close()


def _frames(source: str, max_frames: int | None) -> Iterator[Tuple[int, float, np.ndarray]]:
    """``(index, stamp in seconds, RGB frame)``: file time for videos, the clock for cameras."""
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise ValueError(f"{source}: cannot open {'camera' if source.isdigit() else 'video'}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if np.isfinite(fps) and fps > 0 else 25.0
    try:
        i = 0
        while max_frames is None or i < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            stamp = time.monotonic() if source.isdigit() else i / fps
            yield i, stamp, to_rgb8(frame, f"{source} frame {i}")
            i += 1
    finally:
        cap.release()


def process_image(pipe: Pipeline, path: str, out: Path, hfov: float, boxes: Sequence | None = None) -> Dict:
    image = read_image(path)
    K = intrinsics_from_fov(image.shape[1], image.shape[0], hfov)
    people = pipe(image, K, boxes=boxes)
    stem = Path(path).stem
    cv2.imwrite(str(out / f"{stem}_overlay.jpg"), overlay(image, people, K, pipe.topology.full_faces))
    for i, p in enumerate(people):
        write_obj(out / f"{stem}_person{i}.obj", p.vertices if p.vertices is not None else p.coarse_vertices,
                  pipe.topology.full_faces if p.vertices is not None else pipe.topology.coarse_faces)  # fmt: skip
    record = {"path": str(path), "people": [person_json(p, i) for i, p in enumerate(people)], "error": None}
    dump_json(out / f"{stem}.json", record)
    return record


def process_video(
    pipe: Pipeline, source: str, out: Path, hfov: float, max_frames: int | None, progress: bool,
    tracker: Tracker | None = None,
) -> List[Dict]:  # fmt: skip
    if tracker is not None:
        tracker.reset()
    with video_prior(pipe):
        return _process_video(pipe, source, out, hfov, max_frames, progress, tracker)


def _process_video(pipe, source, out, hfov, max_frames, progress, tracker) -> List[Dict]:
    from tqdm import tqdm

    stem = f"camera{source}" if source.isdigit() else Path(source).stem
    records, writer = [], None
    total = None if source.isdigit() else int(cv2.VideoCapture(source).get(cv2.CAP_PROP_FRAME_COUNT)) or None
    with (out / f"{stem}.jsonl").open("w") as log:
        for i, stamp, image in tqdm(
            _frames(source, max_frames), total=total, desc=stem, unit="frame", disable=not progress, file=sys.stderr
        ):
            K = intrinsics_from_fov(image.shape[1], image.shape[0], hfov)
            people = pipe(image, K)
            if tracker is not None:
                people = tracker(people, stamp, K)
            frame = overlay(image, people, K, pipe.topology.full_faces)
            if writer is None:
                writer = cv2.VideoWriter(
                    str(out / f"{stem}_overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, frame.shape[1::-1]
                )
            writer.write(frame)
            record = {
                "path": f"{source}#frame={i}",
                "people": [person_json(p, k) for k, p in enumerate(people)],
                "error": None,
            }
            log.write(json.dumps(record) + "\n")
            records.append(record)
    if writer is not None:
        writer.release()
    return records


def load_boxes(path: "str | Path") -> Dict[str, list]:
    """Read a boxes file: JSON ``{"image path or file name": [[u0, v0, u1, v1], ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"boxes file '{path}' does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"boxes file '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"boxes file '{path}' must map image names to lists of [u0, v0, u1, v1] boxes")
    for key, value in data.items():
        arr = np.asarray(value, dtype=np.float64) if isinstance(value, list) else None
        if arr is None or (arr.size and (arr.ndim != 2 or arr.shape[1] != 4)) or not np.isfinite(arr).all():
            raise ValueError(f"boxes file '{path}': entry '{key}' must be a list of [u0, v0, u1, v1] boxes")
        if arr.size and ((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])).any():
            raise ValueError(f"boxes file '{path}': entry '{key}' has a box with u1 <= u0 or v1 <= v0")
    return data


def _boxes_for(boxes: Dict[str, list] | None, source: str):
    if not boxes:
        return None
    for key in (source, str(Path(source).resolve()), Path(source).name):
        if key in boxes:
            return [np.asarray(b, dtype=np.float64) for b in boxes[key]]
    return None


def run(
    paths: Sequence[str], out: "str | Path", cfg: PipelineConfig = PipelineConfig(), hfov: float | None = None,
    checkpoint: str | None = None, max_frames: int | None = None, progress: bool = True, emit=None,
    tracking: TrackerConfig | None = TrackerConfig(), boxes: Dict[str, list] | None = None,
) -> List[Dict]:  # fmt: skip
    """Process every input; ``emit(record)`` is called per image/frame record. Returns all records.

    ``tracking``: track ids and smoothing over video frames (None: off). ``boxes``: person
    boxes (u0, v0, u1, v1 pixels) per image, keyed by path or file name, for multi-person
    images (one prior per box); images without an entry use the prior's own detection.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hfov = hfov or cfg.hfov_deg
    pipe = build_pipeline(cfg, checkpoint)
    inputs = collect_inputs(paths)
    if not inputs:
        raise ValueError(f"no images or videos found in {list(paths)}")
    records: List[Dict] = []
    for source in tqdm(inputs, desc="run", unit="input", disable=not progress or len(inputs) < 2, file=sys.stderr):
        try:
            if source.isdigit() or Path(source).suffix.lower() in VIDEO_SUFFIXES:
                tracker = Tracker(tracking) if tracking is not None else None
                new = process_video(pipe, source, out, hfov, max_frames, progress, tracker)
            else:
                new = [process_image(pipe, source, out, hfov, _boxes_for(boxes, source))]
        except ValueError as exc:  # a bad input: report, keep going
            new = [{"path": source, "people": [], "error": str(exc)}]
        for r in new:
            if emit is not None:
                emit(r)
        records += new
    pipe.prior.close()
    return records
