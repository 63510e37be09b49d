"""``hmdiff bag IN OUT``: run the pipeline over a rosbag2 (sqlite3 or MCAP) without ROS.

The output bag holds every input topic unchanged plus ``<ns>/humans``
(``hmdiff_msgs/msg/HumanArray``), ``<ns>/markers`` (``visualization_msgs/msg/MarkerArray``),
``<ns>/debug_image`` (``sensor_msgs/msg/Image``) and, as the node does, a TF frame per person
on ``/tf`` (``tf2_msgs/msg/TFMessage``), written at the input image's bag time
with its header; our message definitions are stored in the bag, so ``ros2 bag`` and Foxglove
can decode them. Frames that fail (bad encoding, undecodable data) are dropped and counted;
a corrupt or truncated input stops the run, and what was processed is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

import numpy as np

from hmdiff_ros.camera import intrinsics_from_fov
from hmdiff_ros.ros.convert import (
    HRI_IDS_LIST,
    HRI_TRACKED_TOPIC,
    HUMAN_ARRAY,
    MessageFactory,
    hri_ids_msg,
    human_array_msg,
    image_to_rgb,
    intrinsics_from_camera_info,
    marker_array_msg,
    message_definitions,
    transforms,
    typestore_for,
)

log = logging.getLogger(__name__)
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


def _pick(connections, types, given: str | None, what: str) -> str | None:
    topics = sorted({c.topic for c in connections if c.msgtype in types})
    if given is not None:
        if given not in {c.topic for c in connections}:
            raise ValueError(
                f"{what} topic '{given}' is not in the bag; its topics: {sorted({c.topic for c in connections})}"
            )
        return given
    if len(topics) > 1:
        raise ValueError(
            f"the bag has several {what} topics {topics}; choose one with --{what.replace(' ', '-')}-topic"
        )
    return topics[0] if topics else None


def process_bag(
    src: "str | Path", dst: "str | Path", pipeline, image_topic: str | None = None,
    camera_info_topic: str | None = None, distro: str = "humble", storage: str = "mcap", namespace: str = "/hmdiff",
    mesh: str = "coarse", tracking=None, max_frames: int | None = None, progress: bool = True, tf: bool = True,
    tf_prefix: str = "hmdiff_body", hri: bool = False,
) -> Dict:  # fmt: skip
    """Process ``src`` into the new bag ``dst``; returns a summary (frames, people, dropped, error)."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    from hmdiff_ros.ros.params import parameter_error

    src, dst = Path(src), Path(dst)
    bad_prefix = parameter_error("tf_prefix", tf_prefix, {})
    if bad_prefix:
        raise ValueError(bad_prefix)
    if not src.exists():
        raise ValueError(f"input bag '{src}' does not exist")
    if dst.exists():
        raise ValueError(f"output bag '{dst}' already exists; choose a new path")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {sorted(plugins)}, got {storage!r}")
    store = typestore_for(distro)
    f = MessageFactory.for_rosbags(store)
    try:
        reader = AnyReader([src], default_typestore=store)
        reader.open()
    except Exception as exc:  # rosbags raises its own error types for unreadable bags
        raise ValueError(f"cannot read bag '{src}': {exc}") from None
    summary: Dict = {"out": str(dst), "frames": 0, "people": 0, "dropped": 0, "error": None, "dropped_reasons": {}}
    try:
        image_topic = _pick(reader.connections, IMAGE_TYPES, image_topic, "image")
        if image_topic is None:
            raise ValueError(f"no image topic in '{src}' (looked for {list(IMAGE_TYPES)})")
        info_topic = _pick(reader.connections, (CAMERA_INFO,), camera_info_topic, "camera info")
        image_conns = [c for c in reader.connections if c.topic == image_topic]
        total = sum(c.msgcount for c in image_conns)
        summary.update(image_topic=image_topic, camera_info_topic=info_topic)
        with Writer(dst, version=8, storage_plugin=plugins[storage]) as writer:
            out_conns = {}
            for c in reader.connections:
                try:
                    out_conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=store)
                except Exception as exc:  # a type we cannot describe: leave that topic out
                    log.warning("topic %s (%s) is not copied: %s", c.topic, c.msgtype, exc)
            defs = message_definitions()
            ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
            humans_c = writer.add_connection(f"{ns}/humans", HUMAN_ARRAY, typestore=store)
            markers_c = writer.add_connection(f"{ns}/markers", "visualization_msgs/msg/MarkerArray", typestore=store)
            debug_c = writer.add_connection(f"{ns}/debug_image", "sensor_msgs/msg/Image", typestore=store)
            summary["topics"] = [f"{ns}/humans", f"{ns}/markers", f"{ns}/debug_image"]
            tf_c = None
            if tf:  # the input's /tf connection if it has one (one connection per topic and type)
                tf_c = next((out_conns[c.id] for c in reader.connections
                             if c.topic == "/tf" and c.msgtype == TF_MESSAGE and c.id in out_conns), None)  # fmt: skip
                tf_c = tf_c or writer.add_connection("/tf", TF_MESSAGE, typestore=store)
                summary["topics"].append("/tf")
            hri_c = writer.add_connection(HRI_TRACKED_TOPIC, HRI_IDS_LIST, typestore=store) if hri else None
            if hri:
                summary["topics"].append(HRI_TRACKED_TOPIC)
            summary["types"] = sorted(defs)
            K = None
            bar = tqdm(total=min(total, max_frames or total), desc="bag", unit="frame", disable=not progress)
            try:
                for conn, stamp, raw in reader.messages():
                    if conn.id in out_conns:
                        writer.write(out_conns[conn.id], stamp, raw)
                    if conn.topic == info_topic:
                        K = intrinsics_from_camera_info(reader.deserialize(raw, conn.msgtype))
                        continue
                    if conn.topic != image_topic or (max_frames is not None and summary["frames"] >= max_frames):
                        continue
                    bar.update(1)
                    try:
                        msg = reader.deserialize(raw, conn.msgtype)
                        rgb = image_to_rgb(msg)
                        people = _run(pipeline, rgb, K, tracking, msg.header)
                    except ValueError as exc:
                        summary["dropped"] += 1
                        key = str(exc).split(":")[0][:80]
                        summary["dropped_reasons"][key] = summary["dropped_reasons"].get(key, 0) + 1
                        continue
                    hdr = msg.header
                    writer.write(
                        humans_c, stamp, store.serialize_cdr(human_array_msg(f, hdr, people, True), HUMAN_ARRAY)
                    )
                    topo = pipeline.topology
                    markers = marker_array_msg(f, hdr, people, topo.coarse_faces, topo.full_faces, mesh=mesh)
                    writer.write(markers_c, stamp, store.serialize_cdr(markers, "visualization_msgs/msg/MarkerArray"))
                    writer.write(debug_c, stamp, store.serialize_cdr(_debug(f, hdr, rgb, people, pipeline, K),
                                                                     "sensor_msgs/msg/Image"))  # fmt: skip
                    if tf_c is not None and people:
                        tfm = f.make(TF_MESSAGE, transforms=transforms(f, hdr, people, prefix=tf_prefix))
                        writer.write(tf_c, stamp, store.serialize_cdr(tfm, TF_MESSAGE))
                    if hri_c is not None:
                        writer.write(hri_c, stamp, store.serialize_cdr(hri_ids_msg(f, hdr, people), HRI_IDS_LIST))
                    summary["frames"] += 1
                    summary["people"] += len(people)
            except Exception as exc:  # a corrupt or truncated bag: keep what was written
                summary["error"] = f"reading '{src}' stopped after {summary['frames']} frames: {exc}"
                log.error(summary["error"])
            finally:
                bar.close()
    finally:
        reader.close()
    return summary


def _run(pipeline, rgb: np.ndarray, K, tracking, hdr):
    K = K if K is not None else intrinsics_from_fov(rgb.shape[1], rgb.shape[0], pipeline.cfg.hfov_deg)
    people = pipeline(rgb, K)
    if tracking is not None:
        people = tracking(people, hdr.stamp.sec + hdr.stamp.nanosec * 1e-9, K)
    return people


def _debug(f, hdr, rgb, people, pipeline, K):
    import cv2

    from hmdiff_ros.pipeline.io import overlay
    from hmdiff_ros.ros.convert import image_msg

    K = K if K is not None else intrinsics_from_fov(rgb.shape[1], rgb.shape[0], pipeline.cfg.hfov_deg)
    faces = (
        pipeline.topology.full_faces if people and people[0].vertices is not None else pipeline.topology.coarse_faces
    )
    bgr = overlay(rgb, people, K, faces)
    return image_msg(f, hdr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
