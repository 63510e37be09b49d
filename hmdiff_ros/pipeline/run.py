"""``hmdiff run`` and ``hmdiff demo``: the pipeline over images, folders, videos and cameras.

Per input it writes ``<stem>_overlay.jpg`` (mesh and skeleton over the frame),
``<stem>_person<i>.obj`` (full mesh, camera frame, metres) and ``<stem>.json``; videos and
cameras give ``<stem>_overlay.mp4`` (at the input's frame rate) and ``<stem>.jsonl`` (one
record per frame). ``<stem>`` is unique per input (:func:`~hmdiff_ros.pipeline.outputs.output_stems`).
A bad input or frame is reported and skipped; the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np

from hmdiff_ros.camera import intrinsics_from_fov
from hmdiff_ros.errors import one_line
from hmdiff_ros.image import to_rgb8
from hmdiff_ros.pipeline.config import PipelineConfig
from hmdiff_ros.pipeline.io import (
    VIDEO_SUFFIXES,
    collect_inputs,
    dump_json,
    input_problem,
    overlay,
    person_json,
    read_image,
    write_obj,
)
from hmdiff_ros.pipeline.outputs import OutputFolder, is_camera, output_stems
from hmdiff_ros.pipeline.pipeline import Pipeline, build_pipeline
from hmdiff_ros.pipeline.stream import overlapped
from hmdiff_ros.pipeline.tracking import Tracker, TrackerConfig

log = logging.getLogger(__name__)
MAX_BOX_COORDINATE = 100_000  # pixels: ten times the largest image side accepted
DEMO_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "demo" / "astronaut_eileen_collins.jpg"


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


class _Video:
    """A video file or camera opened with OpenCV: its frame rate, its length when known, and
    ``frames()``: ``(index, stamp in seconds, RGB frame)`` (file time for videos, the clock
    for cameras)."""

    def __init__(self, source: str) -> None:
        self.source, self.camera = source, is_camera(source)
        self.cap = cv2.VideoCapture(int(source) if self.camera else source)
        if not self.cap.isOpened():
            self.cap.release()
            raise ValueError(f"{source}: cannot open {'camera' if self.camera else 'video'}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if np.isfinite(fps) and 0 < fps <= 1000 else 25.0
        count = 0 if self.camera else self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.length = int(count) if np.isfinite(count) and count > 0 else None
        self.read = 0

    def frames(self, max_frames: int | None) -> Iterator[Tuple[int, float, np.ndarray]]:
        try:
            while max_frames is None or self.read < max_frames:
                ok, frame = self.cap.read()
                if not ok:
                    break
                i, self.read = self.read, self.read + 1
                stamp = time.monotonic() if self.camera else i / self.fps
                yield i, stamp, to_rgb8(frame, f"{self.source} frame {i}")
        finally:
            self.cap.release()


def process_image(
    pipe: Pipeline, path: str, out: OutputFolder, stem: str, hfov: float, boxes: Sequence | None = None
) -> Dict:
    image = read_image(path)
    K = intrinsics_from_fov(image.shape[1], image.shape[0], hfov)
    people = pipe(image, K, boxes=boxes)
    faces = pipe.topology.full_faces
    names = [f"{stem}_overlay.jpg", *(f"{stem}_person{i}.obj" for i in range(len(people))), f"{stem}.json"]
    paths = [out.claim(n) for n in names]  # refuse before writing anything
    record = {
        "path": str(path),
        "backend": pipe.model.backend,
        "people": [person_json(p, i) for i, p in enumerate(people)],
        "error": None,
    }
    try:
        # written beside, then put in place together: an interrupted or failed re-run leaves the
        # earlier result as it was and no half-written file
        with out.staged(paths) as temps:
            ok, jpeg = cv2.imencode(".jpg", overlay(image, people, K, faces))
            if not ok:
                raise ValueError(f"{path}: OpenCV could not encode the overlay")
            temps[0].write_bytes(jpeg.tobytes())
            for i, p in enumerate(people):
                write_obj(
                    temps[1 + i],
                    p.vertices if p.vertices is not None else p.coarse_vertices,
                    faces if p.vertices is not None else pipe.topology.coarse_faces,
                )
            dump_json(temps[-1], record)
    except OSError as exc:  # disk full, no permission
        raise ValueError(f"{path}: cannot write '{exc.filename or out.path}' ({exc.strerror or exc})") from None
    out.commit(path, names)
    return record


def process_video(
    pipe: Pipeline,
    source: str,
    out: OutputFolder,
    stem: str,
    hfov: float,
    max_frames: int | None,
    progress: bool,
    tracker: Tracker | None = None,
    emit=None,
) -> List[Dict]:
    """One record per frame (a frame that fails is recorded with its error and skipped); the
    overlay video keeps the input's frame rate. A video that ends before the length its header
    gives is reported in a warning."""
    if tracker is not None:
        tracker.reset()
    video = _Video(source)
    with video_prior(pipe):
        records = _process_video(pipe, video, out, stem, hfov, max_frames, progress, tracker, emit)
    if not records:
        raise ValueError(f"{source}: no frame could be read")
    if video.length and video.read < video.length and (max_frames is None or video.read < max_frames):
        log.warning("%s ended after %d of its %d frames (truncated or corrupt?)", source, video.read, video.length)
    return records


def _process_video(pipe, video: _Video, out: OutputFolder, stem, hfov, max_frames, progress, tracker, emit):
    """The frames into temporary files that become ``<stem>_overlay.mp4`` and ``<stem>.jsonl``
    when the video is done. A run that stops early (Ctrl-C, SIGTERM, an error) keeps what it
    wrote as ``<stem>_overlay.partial.mp4`` and ``<stem>.partial.jsonl`` and leaves an
    earlier complete result of the input as it was."""
    from tqdm import tqdm

    source, records, writer, log_file, temps = video.source, [], None, None, []
    done = False
    total = min(video.length or max_frames or 0, max_frames or video.length or 0) or None
    try:
        frames = (
            (image, K, None, (i, stamp, image, K))
            for i, stamp, image in video.frames(max_frames)
            for K in [intrinsics_from_fov(image.shape[1], image.shape[0], hfov)]
        )
        # the prior of frame i+1 runs while the model, the overlay and the files handle frame i
        for (i, stamp, image, K), outcome, _ in tqdm(
            overlapped(pipe, frames), total=total, desc=stem, unit="frame", disable=not progress, file=sys.stderr
        ):
            record = {"path": f"{source}#frame={i}", "backend": pipe.model.backend, "people": [], "error": None}
            if isinstance(outcome, ValueError):  # a bad frame: recorded, the video goes on
                people, record["error"] = [], _named(f"{source} frame {i}", outcome)
            else:
                people = outcome.people
            if tracker is not None:
                people = tracker(people, stamp, K)
            frame = overlay(image, people, K, pipe.topology.full_faces)
            if writer is None:  # files are made at the first frame: a video that never opens leaves none
                paths = [out.claim(n) for n in (f"{stem}_overlay.mp4", f"{stem}.jsonl")]
                temps = [p.with_name(f".{p.stem}.{os.getpid()}.part{p.suffix}") for p in paths]
                writer = cv2.VideoWriter(str(temps[0]), cv2.VideoWriter_fourcc(*"mp4v"), video.fps, frame.shape[1::-1])
                if not writer.isOpened():
                    writer = None
                    raise ValueError(f"{source}: cannot write the overlay video '{paths[0]}'")
                log_file = temps[1].open("w")
            writer.write(frame)
            record["people"] = [person_json(p, k) for k, p in enumerate(people)]
            log_file.write(json.dumps(record) + "\n")
            records.append(record)
            if emit is not None:
                emit(record)
            if len(records) == 1:
                first = time.perf_counter()  # the rate counts from the first result: start-up excluded
        if len(records) > 1:
            fps = (len(records) - 1) / (time.perf_counter() - first)
            log.info("%s: %d frames, %.1f FPS (overlay video and JSON lines written)", source, len(records), fps)
        done = True
    finally:
        if writer is not None:
            writer.release()
            log_file.close()
            _keep_video(out, source, stem, temps, len(records), done)
    return records


def _keep_video(out: OutputFolder, source: str, stem: str, temps: List[Path], frames: int, done: bool) -> None:
    """Put a video's temporary files (overlay, JSON lines) in place: as ``<stem>_overlay.mp4``
    and ``<stem>.jsonl`` when the video is ``done``, else (a run stopped early) as
    ``<stem>_overlay.partial.mp4`` and ``<stem>.partial.jsonl``, recorded beside the input's
    earlier files, which stay. Never raises: it runs while an interrupt unwinds."""
    try:
        before = out.previous(source)
        names = [f"{stem}_overlay.mp4", f"{stem}.jsonl"]
        partial = [f"{stem}_overlay.partial.mp4", f"{stem}.partial.jsonl"]
        final = names if done else partial
        paths = [out.claim(n) for n in final]
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
        # done: the input's files are these (an earlier partial result goes); stopped early:
        # these are added to what it had
        out.commit(source, names if done else sorted({*before, *partial}))
        if not done:
            kept = all(n in before for n in names)
            log.warning(
                "%s: stopped after %d frames; they are in %s (marked partial)%s",
                source,
                frames,
                " and ".join(str(p) for p in paths),
                "; the earlier complete result is kept as it was" if kept else "",
            )
    except (OSError, ValueError) as exc:
        log.warning("%s: the frames written could not be kept (%s)", source, one_line(exc))
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _named(source: str, exc: Exception) -> str:
    """The error's message, starting with the input's name when it does not say it already."""
    text = one_line(exc, 600)
    return text if source in text else f"{source}: {text}"


def load_boxes(path: "str | Path") -> Dict[str, list]:
    """Read a boxes file: JSON ``{"image path or file name": [[u0, v0, u1, v1], ...]}`` of
    finite numbers (not booleans) with ``u1 > u0`` and ``v1 > v0``; errors name the file and
    the entry."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"boxes file '{path}' is a folder; expected a JSON file")
    if not path.is_file():
        raise ValueError(f"boxes file '{path}' does not exist")

    def unique_keys(pairs):
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"boxes file '{path}' names {twice[0]!r} more than once")
        return dict(pairs)

    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=unique_keys)  # a BOM is fine
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"boxes file '{path}' is not valid JSON: {exc}") from None
    except OSError as exc:
        raise ValueError(f"boxes file '{path}' cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"boxes file '{path}' must map image names to lists of [u0, v0, u1, v1] boxes")
    for key, value in data.items():
        why = box_list_error(value)
        if why:
            raise ValueError(f"boxes file '{path}': entry '{key}' {why}")
    return data


def box_list_error(value) -> str | None:
    """Why ``value`` is not a list of ``[u0, v0, u1, v1]`` pixel boxes, or None."""
    if not isinstance(value, list):
        return f"must be a list of [u0, v0, u1, v1] boxes, got {type(value).__name__}"
    for box in value:
        if not isinstance(box, list) or len(box) != 4:
            return f"must be a list of [u0, v0, u1, v1] boxes, got {json.dumps(box)[:60]}"
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box):
            return f"has a box whose coordinates are not all finite numbers: {json.dumps(box)[:60]}"
        if max(abs(v) for v in box) > MAX_BOX_COORDINATE:
            return f"has a box coordinate beyond +-{MAX_BOX_COORDINATE} pixels: {json.dumps(box)[:60]}"
        if box[2] <= box[0] or box[3] <= box[1]:
            return f"has a box with u1 <= u0 or v1 <= v0: {box}"
    return None


def _is_video(source: str) -> bool:
    return is_camera(source) or Path(source).suffix.lower() in VIDEO_SUFFIXES


def _warn_about_boxes(boxes: Dict[str, list], inputs: Sequence[str], videos: Sequence[str]) -> None:
    """Name the boxes-file entries that match no input, inputs named by several entries, and
    videos given boxes (boxes are used for images only)."""
    keys = {k for src in inputs for k in _box_keys(src)}
    unmatched = sorted(k for k in boxes if k not in keys)
    if unmatched:
        log.warning("boxes file entries that match no input (ignored): %s", ", ".join(unmatched[:10]))
    for src in inputs:
        matches = [k for k in dict.fromkeys(_box_keys(src)) if k in boxes]
        if len(matches) > 1:
            log.warning("%s: boxes file entries %s all name it: using '%s'", src, matches, matches[0])
    unused = [src for src in videos if boxes_for(boxes, src) is not None]
    if unused:
        log.warning("boxes are used for images only, not for the videos %s", ", ".join(unused[:10]))


def _box_keys(source: str) -> Tuple[str, ...]:
    return (source, str(Path(source).resolve()), Path(source).name)


def boxes_for(boxes: Dict[str, list] | None, source: str):
    """The boxes given for ``source`` (by its path as given, resolved, or its file name), or None."""
    if not boxes:
        return None
    for key in _box_keys(source):
        if key in boxes:
            return [np.asarray(b, dtype=np.float64) for b in boxes[key]]
    return None


def run(
    paths: Sequence[str],
    out: "str | Path",
    cfg: PipelineConfig = PipelineConfig(),
    hfov: float | None = None,
    checkpoint: str | None = None,
    max_frames: int | None = None,
    progress: bool = True,
    emit=None,
    tracking: TrackerConfig | None = TrackerConfig(),
    boxes: Dict[str, list] | None = None,
    force: bool = False,
) -> List[Dict]:
    """Process every input; ``emit(record)`` is called per image/frame record. Returns all records.

    ``tracking``: track ids and smoothing over video frames (None: off). ``boxes``: person
    boxes (u0, v0, u1, v1 pixels) per image, keyed by path or file name, for multi-person
    images (one prior per box); images without an entry use the prior's own detection.
    Outputs go to ``out`` under names unique per input (:mod:`~hmdiff_ros.pipeline.outputs`);
    an existing file that no run wrote is never overwritten unless ``force``.
    """
    from tqdm import tqdm

    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {max_frames}")
    urls = [p for p in paths if "://" in str(p)]
    if urls:
        raise ValueError(
            f"{urls[0]}: URLs (network streams) are not inputs of hmdiff run; "
            "give files, folders or a camera index, or use the ROS node"
        )
    folder = OutputFolder(out, force=force)
    inputs = collect_inputs(paths, skip=folder.owned())
    if not inputs:
        raise ValueError(f"no images or videos found in {list(paths)}")
    folder.set_inputs(inputs)
    videos = [src for src in inputs if _is_video(src)]
    if max_frames is not None and not videos:
        log.warning("--max-frames applies to videos and cameras; these inputs are images")
    if boxes:
        _warn_about_boxes(boxes, inputs, videos)
    stems = output_stems(inputs)
    hfov = hfov or cfg.hfov_deg
    # inputs that cannot be processed are named before the model loads (seconds), and where
    # none is left it is not loaded at all
    problems = {src: why for src in inputs if (why := input_problem(src))}
    pipe = build_pipeline(cfg, checkpoint) if len(problems) < len(inputs) else None
    records: List[Dict] = []
    try:
        for source in tqdm(inputs, desc="run", unit="input", disable=not progress or len(inputs) < 2, file=sys.stderr):
            try:
                if source in problems:
                    raise ValueError(problems[source])
                if source in videos:
                    tracker = Tracker(tracking) if tracking is not None else None
                    records += process_video(
                        pipe, source, folder, stems[source], hfov, max_frames, progress, tracker, emit
                    )
                    continue
                new = process_image(pipe, source, folder, stems[source], hfov, boxes_for(boxes, source))
            except (ValueError, OSError, cv2.error) as exc:  # a bad input: report, keep going
                backend = pipe.model.backend if pipe is not None else None  # None: no model was loaded
                new = {"path": source, "backend": backend, "people": [], "error": _named(source, exc)}
            if emit is not None:
                emit(new)
            records.append(new)
    finally:
        if pipe is not None:
            pipe.prior.close()
        folder.close()
    return records
