"""``hmdiff bag IN OUT``: run the pipeline over a rosbag2 (sqlite3 or MCAP) without ROS.

The output bag holds every input topic unchanged plus ``<ns>/humans``
(``hmdiff_msgs/msg/HumanArray``), ``<ns>/markers`` (``visualization_msgs/msg/MarkerArray``),
``<ns>/debug_image`` (``sensor_msgs/msg/Image``) and, as the node does, a TF frame per person
on ``/tf`` (``tf2_msgs/msg/TFMessage``), written at the input image's bag time
with its header; our message definitions are stored in the bag, so ``ros2 bag`` and Foxglove
can decode them. Frames that fail (bad encoding, undecodable data) are dropped and counted;
a run in which every frame was dropped is an error.

The user's data is never lost: the input is only read, an existing output is replaced only
with ``force`` and only when it is a rosbag2 folder (nothing but ``metadata.yaml`` and
``.mcap``/``.db3`` files), and an output that overlaps the input is refused. A run that stops
early (SIGINT/Ctrl-C, SIGTERM, a corrupt or truncated input) still closes the output: it is a
readable bag with what was written so far, and its ``metadata.yaml`` (and, for MCAP, the
file's own metadata record) carries ``custom_data`` ``hmdiff.partial: "true"``
(:data:`PARTIAL_KEY`; ``"false"`` for a complete run), which bag readers ignore.

CameraInfo: its ``K`` is used only for images of the size it describes and only when it is
plausible (:func:`~hmdiff_ros.ros.bridge.intrinsics_for_image`); other frames use the field
of view and are counted in the summary.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Dict

import numpy as np

from hmdiff_ros import defaults
from hmdiff_ros.pipeline.stream import overlapped
from hmdiff_ros.ros.bridge import choose_intrinsics, image_to_rgb
from hmdiff_ros.ros.convert import (
    HRI_IDS_LIST,
    HRI_TRACKED_TOPIC,
    HUMAN_ARRAY,
    FrameOptions,
    MessageFactory,
    frame_messages,
    message_definitions,
    typestore_for,
)

log = logging.getLogger(__name__)
IMAGE = "sensor_msgs/msg/Image"
IMAGE_TYPES = (IMAGE, "sensor_msgs/msg/CompressedImage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
STORAGES = ("mcap", "sqlite3")  # the output's storage plugins
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
PARTIAL_KEY = "hmdiff.partial"  # custom_data of the output: "true" when the run stopped early
# what a rosbag2 folder holds (sqlite journals and a metadata file being replaced included)
BAG_FILE_NAMES = ("metadata.yaml", "metadata.yaml.tmp")
BAG_FILE_SUFFIXES = (".mcap", ".db3", ".db3-wal", ".db3-shm", ".db3-journal", ".mcap.zstd", ".db3.zstd")


def _pick(connections, types, given: str | None, what: str) -> str | None:
    option = f"--{what.replace(' ', '-')}-topic"
    topics = sorted({c.topic for c in connections if c.msgtype in types})
    if given is not None:
        kinds = sorted({c.msgtype for c in connections if c.topic == given})
        if not kinds:
            raise ValueError(
                f"{what} topic '{given}' is not in the bag; its topics: {sorted({c.topic for c in connections})}"
            )
        if not set(kinds) & set(types):
            raise ValueError(
                f"{what} topic '{given}' carries {' and '.join(kinds)}, expected {' or '.join(types)}; "
                f"{what} topics in the bag: {topics or 'none'} (choose one with {option})"
            )
        return given
    if len(topics) > 1:
        raise ValueError(f"the bag has several {what} topics {topics}; choose one with {option}")
    return topics[0] if topics else None


def _not_a_bag_folder(path: Path) -> str | None:
    """Why ``path`` is not a rosbag2 folder that may be replaced, or None when it is one."""
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.is_dir():
        return "it is a file, not a bag folder"
    others = sorted(
        e.name
        for e in path.iterdir()
        if e.is_symlink() or not e.is_file() or not (e.name in BAG_FILE_NAMES or e.name.endswith(BAG_FILE_SUFFIXES))
    )
    if others:
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        return f"it holds more than a rosbag2 folder does ({', '.join(others[:5])}{more})"
    return None


def _check_paths(src: Path, dst: Path, force: bool) -> bool:
    """Refuse outputs that overlap the input or exist (unless ``force`` and a bag folder);
    True when ``dst`` exists and is to be replaced."""
    src_r, dst_r = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if dst_r == src_r or src_r in dst_r.parents:
        raise ValueError(f"output bag '{dst}' is the input bag or inside it; choose a path outside '{src}'")
    if dst_r in src_r.parents:
        raise ValueError(f"output bag '{dst}' holds the input bag '{src}'; choose another path")
    if not (dst.exists() or dst.is_symlink()):
        return False
    if not force:
        raise ValueError(f"output bag '{dst}' already exists; choose a new path, or pass --force to replace it")
    why = _not_a_bag_folder(dst)
    if why:
        raise ValueError(f"output '{dst}' is not replaced, even with --force: {why}")
    return True


def _remove_bag_folder(path: Path) -> None:
    why = _not_a_bag_folder(path)  # checked again: time has passed since _check_paths
    if why:
        raise ValueError(f"output '{path}' is not replaced, even with --force: {why}")
    for entry in path.iterdir():
        entry.unlink()
    path.rmdir()


class _StopOnSignal:
    """While entered (from the main thread only): SIGINT and SIGTERM set :attr:`signum`, so the
    bag loop stops after its current frame and closes the output; a second signal while
    :attr:`hard` raises ``KeyboardInterrupt`` (stop now, the frame in progress is lost). Signals
    that were ignored stay ignored; the previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.hard = True
        self._previous: Dict = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) not in (signal.SIG_IGN, None):  # None: set outside Python; keep it
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("%s: stopping after the current frame (again to stop at once)", signal.Signals(signum).name)
        elif self.hard:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def _check_options(src: Path, dst: Path, storage: str, namespace: str, tf_prefix: str, max_frames, force: bool) -> bool:
    """The options and paths of :func:`process_bag`, checked before anything is read; True when
    an existing ``dst`` is to be replaced."""
    from hmdiff_ros.ros.params import namespace_error, parameter_error

    bad = parameter_error("tf_prefix", tf_prefix, {})
    bad = f"--tf-prefix: {bad}" if bad else namespace_error(namespace)
    if bad:
        raise ValueError(bad)
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"--max-frames must be an integer >= 1, got {max_frames!r}")
    if not src.exists():
        raise ValueError(f"input bag '{src}' does not exist")
    replace = _check_paths(src, dst, force)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
    return replace


def _open(src: Path, store):
    from rosbags.highlevel import AnyReader

    if src.exists() and not (src.is_dir() or src.is_file()):  # opening a pipe would wait for a writer
        raise ValueError(f"input bag '{src}' is not a regular file or folder (a pipe or a device); expected a rosbag2")
    try:
        reader = AnyReader([src], default_typestore=store)
        reader.open()
    except Exception as exc:  # rosbags raises its own error types for unreadable bags
        raise ValueError(f"cannot read bag '{src}': {exc}") from None
    return reader


def _topics(connections, src: Path, image_topic: str | None, camera_info_topic: str | None):
    """``(image topic, camera info topic or None)`` of the bag: the ones given, or its only ones."""
    image_topic = _pick(connections, IMAGE_TYPES, image_topic, "image")
    if image_topic is None:
        raise ValueError(f"no image topic in '{src}' (looked for {list(IMAGE_TYPES)})")
    return image_topic, _pick(connections, (CAMERA_INFO,), camera_info_topic, "camera info")


def check_bag(
    src: "str | Path",
    dst: "str | Path",
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
    distro: str = "humble",
    storage: str = "mcap",
    namespace: str = "/hmdiff",
    tf_prefix: str = defaults.TF_PREFIX,
    max_frames: int | None = None,
    force: bool = False,
) -> None:
    """What :func:`process_bag` checks before its first frame, without a pipeline: the options,
    the paths, that ``src`` opens as a bag and has the topics. ``hmdiff bag`` calls it before
    it loads the model (seconds), so a bad input is named at once; the errors are
    :func:`process_bag`'s."""
    src, dst = Path(src), Path(dst)
    _check_options(src, dst, storage, namespace, tf_prefix, max_frames, force)
    reader = _open(src, typestore_for(distro))
    try:
        _topics(reader.connections, src, image_topic, camera_info_topic)
    finally:
        reader.close()


def process_bag(
    src: "str | Path",
    dst: "str | Path",
    pipeline,
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
    distro: str = "humble",
    storage: str = "mcap",
    namespace: str = "/hmdiff",
    mesh: str = defaults.MESH_RESOLUTION,
    tracking=None,
    max_frames: int | None = None,
    progress: bool = True,
    tf: bool = True,
    tf_prefix: str = defaults.TF_PREFIX,
    hri: bool = False,
    force: bool = False,
) -> Dict:
    """Process ``src`` into the new bag ``dst`` (with ``force``, a rosbag2 folder ``dst`` is
    replaced); returns a summary.

    Summary: ``out``, ``frames`` (processed), ``people``, ``dropped`` and ``dropped_reasons``
    (frames that failed, by reason), ``error`` (None, or one line: the run stopped early or
    processed no frame), ``interrupted`` and ``signal`` (the signal that stopped it, e.g.
    ``"SIGTERM"``), ``partial`` (the output is marked ``hmdiff.partial: "true"``),
    ``replaced`` (an existing ``dst`` was removed),
    ``camera_info_mismatch`` and ``camera_info_reasons`` (frames whose CameraInfo was not
    used, by reason), ``backend`` (the one that ran), ``image_topic``, ``camera_info_topic``,
    ``topics`` (written) and ``types`` (our message definitions stored in the bag).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    options = FrameOptions(vertices=True, mesh=mesh, tf=tf, tf_prefix=tf_prefix, hri=hri)
    replace = _check_options(src, dst, storage, namespace, tf_prefix, max_frames, force)
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    store = typestore_for(distro)
    f = MessageFactory.for_rosbags(store)
    reader = _open(src, store)
    summary: Dict = {
        "out": str(dst),
        "frames": 0,
        "people": 0,
        "dropped": 0,
        "error": None,
        "dropped_reasons": {},
        "interrupted": False,
        "signal": None,
        "partial": False,
        "replaced": replace,
        "removed": False,
        "camera_info_mismatch": 0,
        "camera_info_reasons": {},
        "backend": getattr(getattr(pipeline, "model", None), "backend", "torch"),
    }
    try:
        image_topic, info_topic = _topics(reader.connections, src, image_topic, camera_info_topic)
        image_conns = [c for c in reader.connections if c.topic == image_topic and c.msgtype in IMAGE_TYPES]
        image_ids = {c.id for c in image_conns}
        info_ids = {c.id for c in reader.connections if c.topic == info_topic and c.msgtype == CAMERA_INFO}
        total = sum(c.msgcount for c in image_conns)
        summary.update(image_topic=image_topic, camera_info_topic=info_topic)
        if replace:
            _remove_bag_folder(dst)
            log.warning("replaced the existing output bag '%s' (--force)", dst)
        try:
            with _StopOnSignal() as stop, Writer(dst, version=8, storage_plugin=plugins[storage]) as writer:
                out_conns = {}
                for c in reader.connections:
                    try:
                        out_conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=store)
                    except Exception as exc:  # a type we cannot describe: leave that topic out
                        log.warning("topic %s (%s) is not copied: %s", c.topic, c.msgtype, exc)
                defs = message_definitions()
                ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
                humans_c = writer.add_connection(f"{ns}/humans", HUMAN_ARRAY, typestore=store)
                markers_c = writer.add_connection(f"{ns}/markers", MARKER_ARRAY, typestore=store)
                debug_c = writer.add_connection(f"{ns}/debug_image", IMAGE, typestore=store)
                summary["topics"] = [f"{ns}/humans", f"{ns}/markers", f"{ns}/debug_image"]
                tf_c = None
                if tf:  # the input's /tf connection if it has one (one connection per topic and type)
                    tf_c = next(
                        (
                            out_conns[c.id]
                            for c in reader.connections
                            if c.topic == "/tf" and c.msgtype == TF_MESSAGE and c.id in out_conns
                        ),
                        None,
                    )
                    tf_c = tf_c or writer.add_connection("/tf", TF_MESSAGE, typestore=store)
                    summary["topics"].append("/tf")
                hri_c = writer.add_connection(HRI_TRACKED_TOPIC, HRI_IDS_LIST, typestore=store) if hri else None
                if hri:
                    summary["topics"].append(HRI_TRACKED_TOPIC)
                summary["types"] = sorted(defs)
                info, stopped_by = None, None  # stopped_by: the signal that ended the loop early
                read = 0  # images read for the pipeline (--max-frames)
                bar = tqdm(total=min(total, max_frames or total), desc="bag", unit="frame", disable=not progress)

                copies = []  # input messages read since the last image given to the pipeline

                def frames():
                    """The images; each carries the input messages read since the one before it,
                    written with its result, so that the output never holds input beyond the
                    frames that ended (the pipeline reads ahead of its results)."""
                    nonlocal info, stopped_by, read, copies
                    for conn, stamp, raw in reader.messages():
                        if stop.signum is not None:
                            stopped_by = stop.signum
                            return
                        if conn.id in out_conns:
                            copies.append((out_conns[conn.id], stamp, raw))
                        if conn.id in info_ids:
                            info = reader.deserialize(raw, conn.msgtype)
                            continue
                        if conn.id not in image_ids or (max_frames is not None and read >= max_frames):
                            continue
                        bar.update(1)
                        try:
                            msg = reader.deserialize(raw, conn.msgtype)
                            rgb = image_to_rgb(msg)
                            K = _intrinsics(info, rgb, pipeline, summary)
                        except ValueError as exc:
                            dropped(exc)
                            continue
                        read += 1
                        frame, copies = (stamp, msg, rgb, K, copies), []
                        yield rgb, K, None, frame

                def dropped(exc: ValueError) -> None:
                    summary["dropped"] += 1
                    key = str(exc).split(";")[0].strip()[:200]  # the reason, without the list of choices
                    summary["dropped_reasons"][key] = summary["dropped_reasons"].get(key, 0) + 1

                try:
                    # the prior of the next image runs while the model finishes this one (the order kept)
                    for (stamp, msg, rgb, K, before), outcome, _ in overlapped(pipeline, frames()):
                        for connection, at, raw in before:  # the input up to this image, as it was
                            writer.write(connection, at, raw)
                        if isinstance(outcome, ValueError):
                            dropped(outcome)
                            continue
                        people = outcome.people
                        if tracking is not None:
                            stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                            people = tracking(people, stamp_s, K)
                        out = frame_messages(f, msg.header, people, pipeline.topology, options, rgb, K)
                        written = [
                            (humans_c, out.humans, HUMAN_ARRAY),
                            (markers_c, out.markers, MARKER_ARRAY),
                            (debug_c, out.debug_image, IMAGE),
                        ]
                        if tf_c is not None and out.transforms:
                            written.append((tf_c, f.make(TF_MESSAGE, transforms=out.transforms), TF_MESSAGE))
                        if hri_c is not None:
                            written.append((hri_c, out.hri, HRI_IDS_LIST))
                        for connection, message, msgtype in written:
                            writer.write(connection, stamp, store.serialize_cdr(message, msgtype))
                        summary["frames"] += 1
                        summary["people"] += len(people)
                    for connection, at, raw in copies:  # what followed the last image
                        writer.write(connection, at, raw)
                except KeyboardInterrupt:  # a second signal, or SIGINT where no handler could be installed
                    stopped_by = stop.signum or signal.SIGINT
                except Exception as exc:  # a corrupt or truncated bag: keep what was written
                    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                        raise  # the output, not the input, failed
                    summary["error"] = f"reading '{src}' stopped after {summary['frames']} frames: {exc}"
                    log.debug(summary["error"])  # the summary carries it
                finally:
                    stop.hard = False  # from here on, signals only ask for what is happening anyway
                    bar.close()
                if stopped_by is not None:
                    summary["interrupted"], summary["signal"] = True, signal.Signals(stopped_by).name
                    summary["error"] = (
                        f"interrupted by {signal.Signals(stopped_by).name} after {summary['frames']} frames; "
                        f"'{dst}' holds them and is marked {PARTIAL_KEY}: true"
                    )
                    log.debug(summary["error"])  # the summary carries it
                summary["partial"] = summary["error"] is not None
                writer.set_custom_data(PARTIAL_KEY, "true" if summary["partial"] else "false")
        except OSError as exc:  # the output cannot be written (disk full, no permission): not kept half-made
            with contextlib.suppress(OSError, ValueError):
                _remove_bag_folder(dst)
            raise ValueError(
                f"output bag '{dst}': cannot write ({exc.strerror or exc}); the partial output was removed"
            ) from None
        if summary["frames"] == 0 and not summary["interrupted"]:  # only copies of the input: not kept
            _remove_bag_folder(dst)
            summary["removed"] = True
        if summary["error"] is None and summary["frames"] == 0:
            summary["error"] = _nothing_processed(image_topic, summary) + "; no output bag was kept"
    finally:
        reader.close()
    return summary


def _nothing_processed(topic: str, summary: Dict) -> str:
    """The one-line error of a run that wrote no results."""
    if summary["dropped"] == 0:
        return f"'{topic}' has no image messages: no frame was processed"
    top = sorted(summary["dropped_reasons"].items(), key=lambda kv: -kv[1])[:3]
    reasons = "; ".join(f"{why} ({n})" for why, n in top)
    return f"all {summary['dropped']} frames of '{topic}' were dropped: {reasons}"


def _intrinsics(info, rgb: np.ndarray, pipeline, summary: Dict) -> np.ndarray:
    """The CameraInfo's K where it fits the image, else the field of view's (counted)."""
    h, w = rgb.shape[:2]
    K, why = choose_intrinsics(info, w, h, pipeline.cfg.hfov_deg)
    if why is not None:
        summary["camera_info_mismatch"] += 1
        reasons = summary["camera_info_reasons"]
        if why not in reasons:
            log.warning("camera info not used: %s; using the %g degree field of view", why, pipeline.cfg.hfov_deg)
        reasons[why] = reasons.get(why, 0) + 1
    return K
