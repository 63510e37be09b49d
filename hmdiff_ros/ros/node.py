"""The rclpy node: a thin, managed (lifecycle) adapter over the ROS-free frame pipeline.

Topics (relative names; remap them in the launch file):

- subscribes ``image`` (``sensor_msgs/Image``, or ``image/compressed`` as
  ``sensor_msgs/CompressedImage`` when ``compressed`` is true) and ``camera_info``, best effort
  with depth 1 (``image_qos``: ``sensor_data``, the default, or ``reliable``), and, when
  ``use_detections`` is true, ``detections`` (``vision_msgs/Detection2DArray``: one person per
  box, for several people);
- publishes ``~/humans`` (``hmdiff_msgs/HumanArray``), ``~/markers``
  (``visualization_msgs/MarkerArray``), ``~/debug_image`` (``sensor_msgs/Image``, rgb8),
  TF frames ``hmdiff_body_<id>`` (and per joint, optionally) and ``/diagnostics``.
  Every output carries the input image's stamp, and its frame unless ``target_frame`` is set:
  then the 3D outputs are moved into that frame through TF at the image stamp (never "latest"),
  and a frame without that transform is dropped and counted.

Only the newest frame is processed, on a worker thread; frames that arrive while it is busy
replace the waiting one and are counted as dropped. The model loads in ``on_configure``,
subscriptions start in ``on_activate``; with ``autostart`` (the default) the node configures
and activates itself, so ``ros2 run hmdiff_ros hmdiff_node`` just works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
import rclpy
import rclpy.executors
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from hmdiff_ros.ros.convert import (
    HRI_IDS_LIST,
    HRI_TRACKED_TOPIC,
    HUMAN_ARRAY,
    MessageFactory,
    hri_ids_msg,
    human_array_msg,
    image_msg,
    image_to_rgb,
    intrinsics_for_image,
    marker_array_msg,
    people_in_frame,
    rigid_from_transform,
    transforms,
)
from hmdiff_ros.ros.health import FrameHealth
from hmdiff_ros.ros.params import PARAMETERS, parameter_error


class HMDiffNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("hmdiff", **kwargs)
        for name, (default, text, read_only, rng) in PARAMETERS.items():
            desc = ParameterDescriptor(description=text, read_only=read_only)
            if rng is not None and isinstance(default, int) and not isinstance(default, bool):
                desc.integer_range = [IntegerRange(from_value=rng[0], to_value=rng[1], step=1)]
            elif rng is not None:
                desc.floating_point_range = [FloatingPointRange(from_value=rng[0], to_value=rng[1], step=0.0)]
            self.declare_parameter(name, default, desc)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.factory = MessageFactory.for_rclpy()
        self.pipe = self.tracker = None
        self._lock, self._wake, self._stop = threading.Lock(), threading.Event(), threading.Event()
        self._pending = None  # (image msg, receive time)
        self._detections = None
        self._info = None  # the latest CameraInfo
        self._worker = None
        self._subs = []
        self.stats = FrameHealth()  # received / processed / dropped / failed (with reasons)
        self._latency, self._times = deque(maxlen=100), deque(maxlen=100)
        self._frame = 0
        self._cfg_key = None  # the run-time parameters the pipeline's config was built from
        self.tf = self.updater = self.tf_buffer = self.tf_listener = self.hri_pub = None
        self._pubs = []

    def p(self, name: str):
        return self.get_parameter(name).value

    # ---- parameters -------------------------------------------------------------------
    def _values(self) -> dict:
        return {name: self.p(name) for name in PARAMETERS}

    def _check_parameters(self, params) -> SetParametersResult:
        values = self._values()
        for prm in params:
            reason = parameter_error(prm.name, prm.value, values)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            values[prm.name] = prm.value
        limit = self.pipe.batch_limit() if self.pipe is not None else None
        if limit and values["hypotheses"] > limit:
            return SetParametersResult(
                successful=False,
                reason=f"hypotheses {values['hypotheses']} exceed the {self.pipe.model.backend} backend's largest "
                f"batch of {limit}",
            )
        # the worker notices the new values before its next frame (see _apply_parameters)
        return SetParametersResult(successful=True)

    def _pipeline_config(self):
        from hmdiff_ros.pipeline.config import pipeline_config

        return pipeline_config(
            steps=self.p("ddim_steps"),
            dat_mode=self.p("dat_mode"),
            dat_tau=self.p("dat_tau"),
            dat_lambda=self.p("dat_lambda"),
            hypotheses=self.p("hypotheses"),
            hfov_deg=self.p("hfov_deg"),
            full_mesh=self.p("mesh_resolution") == "full" or self.p("publish_debug_image"),
            backend=self.p("backend"),
            engines=self.p("engines"),
        )

    # ---- lifecycle --------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from hmdiff_ros.pipeline.config import build_pipeline
        from hmdiff_ros.pipeline.tracking import Tracker

        values = self._values()  # values given at start (a params file) skip the set-parameters callback
        for name, value in values.items():
            reason = parameter_error(name, value, values)
            if reason:
                self.get_logger().error(f"parameter {reason}")
                return TransitionCallbackReturn.FAILURE
        try:
            # one camera stream: the prior follows the person (video mode) unless boxes come from detections
            self.pipe = build_pipeline(
                self._pipeline_config(), self.p("checkpoint") or None, video=not self.p("use_detections")
            )
        except Exception as exc:  # rclpy would turn it into a silent ERROR transition
            self.get_logger().error(f"cannot load the model: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            self.pipe.max_people_per_call()  # hypotheses within the backend's largest batch
        except ValueError as exc:
            self.get_logger().error(f"parameter hypotheses: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._cfg_key = self._config_key()
        self.tracker = Tracker()
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        from sensor_msgs.msg import Image
        from tf2_ros import TransformBroadcaster
        from visualization_msgs.msg import MarkerArray

        self.humans_pub = self.create_publisher(self.factory._cls_of(HUMAN_ARRAY), "~/humans", reliable)
        self.markers_pub = self.create_publisher(MarkerArray, "~/markers", reliable)
        self.debug_pub = self.create_publisher(Image, "~/debug_image", reliable)
        self._pubs = [self.humans_pub, self.markers_pub, self.debug_pub]
        self.hri_pub = None
        if self.p("publish_hri"):
            try:
                self.hri_pub = self.create_publisher(self.factory._cls_of(HRI_IDS_LIST), HRI_TRACKED_TOPIC, reliable)
                self._pubs.append(self.hri_pub)
            except ImportError as exc:
                self.get_logger().error(
                    f"publish_hri needs the hri_msgs package (ROS4HRI): {exc}; not publishing {HRI_TRACKED_TOPIC}"
                )
        # made once per node: a second configure (after cleanup) must not declare or create them again
        if self.tf is None:
            self.tf = TransformBroadcaster(self)
        if self.p("target_frame") and self.tf_buffer is None:
            from tf2_ros import Buffer, TransformListener

            self.tf_buffer = Buffer(node=self)  # the node's clock: sim time and bag loops clear it
            self.tf_listener = TransformListener(self.tf_buffer, self)
        if self.updater is None:
            self._setup_diagnostics()
        backend = self.pipe.model.backend  # the one that loaded, not only the one asked for
        self.updater.setHardwareID(f"hmdiff_{backend}")
        if backend != self.p("backend"):
            reasons = "; ".join(getattr(self.pipe.model, "fallback_reasons", [])) or "see above"
            self.get_logger().warning(f"backend {self.p('backend')} asked for, {backend} runs: {reasons}")
        self.get_logger().info(
            f"model ready (backend {backend}); images with QoS {self.p('image_qos')} "
            f"({IMAGE_QOS[self.p('image_qos')]}, depth 1), outputs reliable depth 5, in frame "
            f"{self.p('target_frame') or 'of the image'}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        qos = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            durability=DurabilityPolicy.VOLATILE,
            reliability=IMAGE_QOS[self.p("image_qos")],
        )
        if self.p("compressed"):
            self._subs.append(self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos))
        else:
            self._subs.append(self.create_subscription(Image, "image", self._on_image, qos))
        self._subs.append(self.create_subscription(CameraInfo, "camera_info", self._on_info, qos))
        if self.p("use_detections"):
            from vision_msgs.msg import Detection2DArray

            self._subs.append(self.create_subscription(Detection2DArray, "detections", self._on_detections, qos))
        self._stop.clear()
        self._worker = threading.Thread(target=self._loop, name="hmdiff-worker", daemon=True)
        self._worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_inputs(self) -> None:
        self._stop_worker()
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []

    def _stop_worker(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    def _release(self) -> None:
        if self.pipe is not None:
            self.pipe.prior.close()
            self.pipe = None
        for pub in self._pubs:
            self.destroy_publisher(pub)
        self._pubs = []

    # ---- inputs -----------------------------------------------------------------------
    def _on_info(self, msg) -> None:
        self._info = msg  # checked against each image's size in _process

    def _on_detections(self, msg) -> None:
        boxes = []
        for d in msg.detections[: self.p("max_people")]:
            c, sx, sy = d.bbox.center, d.bbox.size_x, d.bbox.size_y
            cx, cy = (c.position.x, c.position.y) if hasattr(c, "position") else (c.x, c.y)  # Humble+ / Foxy
            boxes.append(np.array([cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2]))
        self._detections = (msg.header.stamp, boxes)

    def _on_image(self, msg) -> None:
        with self._lock:
            self.stats.count("received")
            if self._pending is not None:
                self.stats.count("dropped")  # newest frame wins
            self._pending = (msg, time.monotonic())
        self._wake.set()

    # ---- worker -----------------------------------------------------------------------
    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            with self._lock:
                item, self._pending = self._pending, None
            if item is None:
                continue
            rate = self.p("max_rate_hz")
            if rate > 0 and time.monotonic() - last < 1.0 / rate:
                self.stats.count("dropped")
                continue
            last = time.monotonic()
            try:
                self._process(*item)
            except Exception as exc:  # a bad frame is dropped and counted, never a crash
                self.stats.fail(str(exc) or type(exc).__name__)
                self.get_logger().warning(f"frame dropped: {exc}", throttle_duration_sec=5.0)

    def _config_key(self) -> tuple:
        return tuple(
            self.p(n)
            for n in (
                "ddim_steps",
                "dat_mode",
                "dat_tau",
                "dat_lambda",
                "hypotheses",
                "hfov_deg",
                "mesh_resolution",
                "publish_debug_image",
            )
        )

    def _apply_parameters(self) -> None:
        """Rebuild the pipeline's config when run-time parameters changed. Compared with a
        snapshot, not flagged by the set-parameters callback: that runs before rclpy stores
        the new values, so a flag could be consumed with the old ones."""
        key = self._config_key()
        if key != self._cfg_key:
            self._cfg_key, self.pipe.cfg = key, self._pipeline_config()

    def _boxes_for(self, stamp):
        """The detections' boxes when they belong to this image (within 0.5 s), else None."""
        if not self.p("use_detections") or self._detections is None:
            return None
        det_stamp, boxes = self._detections
        gap = abs((stamp.sec - det_stamp.sec) + (stamp.nanosec - det_stamp.nanosec) * 1e-9)
        return boxes if gap <= DETECTIONS_MAX_AGE_S else None

    def _process(self, msg, received: float) -> None:
        from hmdiff_ros.camera import intrinsics_from_fov

        t0 = time.monotonic()
        self._apply_parameters()
        rgb = _to_rgb(msg)
        h, w = rgb.shape[:2]
        K, why = intrinsics_for_image(self._info, w, h)  # the bag tool's check: size and plausibility
        if why:
            self.stats.count("camera_info_unused")
            self.get_logger().warning(f"camera_info not used ({why}): using hfov_deg", throttle_duration_sec=10.0)
        if K is None:
            K = intrinsics_from_fov(w, h, self.p("hfov_deg"))
        boxes = self._boxes_for(msg.header.stamp)
        people = self.pipe(rgb, K, boxes=boxes)
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if self.p("tracking"):
            people = self.tracker(people, stamp, K)
        f, hdr, image_people = self.factory, msg.header, people
        if self.tf_buffer is not None:
            hdr, people = self._to_target_frame(hdr, people)
        self.humans_pub.publish(human_array_msg(f, hdr, people, with_vertices=self.p("publish_vertices")))
        self._frame += 1
        if self.p("publish_markers"):
            mesh = self.p("mesh_resolution") if self._frame % self.p("mesh_every_n") == 0 else "none"
            topo = self.pipe.topology
            self.markers_pub.publish(
                marker_array_msg(
                    f,
                    hdr,
                    people,
                    topo.coarse_faces,
                    topo.full_faces,
                    mesh=mesh,
                    lifetime_s=self.p("marker_lifetime_s"),
                )
            )
        prefix = self.p("tf_prefix")
        if self.p("publish_tf") and people:
            self.tf.sendTransform(transforms(f, hdr, people, joints=self.p("publish_joint_tf"), prefix=prefix))
        if self.hri_pub is not None:
            self.hri_pub.publish(hri_ids_msg(f, hdr, people))
        if self.p("publish_debug_image") and self.debug_pub.get_subscription_count() > 0:
            import cv2

            from hmdiff_ros.pipeline.io import overlay

            faces = (
                self.pipe.topology.full_faces
                if people and people[0].vertices is not None
                else self.pipe.topology.coarse_faces
            )
            bgr = overlay(rgb, image_people, K, faces)  # drawn in the image's own frame
            self.debug_pub.publish(image_msg(f, msg.header, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        self.stats.count("processed")
        now = time.monotonic()
        self._times.append(now)
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp  # image stamp to publish (node clock; sim time too)
        self._latency.append((now - received, now - t0, age))

    def _to_target_frame(self, hdr, people):
        """The header and people moved into ``target_frame`` through TF at the image stamp."""
        from rclpy.duration import Duration
        from rclpy.time import Time
        from std_msgs.msg import Header
        from tf2_ros import TransformException

        target = self.p("target_frame")
        try:
            tr = self.tf_buffer.lookup_transform(
                target, hdr.frame_id, Time.from_msg(hdr.stamp), timeout=Duration(seconds=self.p("tf_timeout_s"))
            )
        except TransformException as exc:
            raise ValueError(
                f"no transform from '{hdr.frame_id}' to target_frame '{target}' at the image stamp "
                f"{hdr.stamp.sec}.{hdr.stamp.nanosec:09d}: {exc}"
            ) from None
        R, t = rigid_from_transform(tr.transform)
        return Header(stamp=hdr.stamp, frame_id=target), people_in_frame(people, R, t)

    # ---- diagnostics ------------------------------------------------------------------
    def _setup_diagnostics(self) -> None:
        from diagnostic_updater import Updater

        self.updater = Updater(self, period=1.0)
        self.updater.add("hmdiff pipeline", self._diagnose)

    def _diagnose(self, stat):
        from diagnostic_msgs.msg import DiagnosticStatus

        recent = [t for t in self._times if time.monotonic() - t < 5.0]  # falls to 0 when frames stop
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        lat, proc, age = np.median(np.array(self._latency), axis=0) * 1000 if self._latency else (float("nan"),) * 3
        s = self.stats
        level, message = s.level()
        stat.summary({0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}[level], message)
        backend = self.pipe.model.backend if self.pipe is not None else "not loaded"
        for key, value in (
            ("rate_hz", f"{rate:.1f}"),
            ("latency_ms (receive to publish)", f"{lat:.1f}"),
            ("processing_ms", f"{proc:.1f}"),
            ("age_ms (image stamp to publish)", f"{age:.1f}"),
            ("received", s["received"]),
            ("processed", s["processed"]),
            ("dropped", s["dropped"]),
            ("failed", s["failed"]),
            ("failed_reasons", s.reasons_text()),
            ("camera_info_unused", s["camera_info_unused"]),
            ("last_error", s["last_error"]),
            ("backend", backend),
            ("backend_asked", self.p("backend")),
        ):
            stat.add(key, str(value))
        return stat


DETECTIONS_MAX_AGE_S = 0.5  # boxes older or newer than this (vs. the image stamp) are not used
IMAGE_QOS = {"sensor_data": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
_BRIDGE = None


def _to_rgb(msg) -> np.ndarray:
    """RGB uint8 from an Image or CompressedImage: cv_bridge where it converts the encoding,
    :func:`~hmdiff_ros.ros.convert.image_to_rgb` (numpy and OpenCV only; the bag tool's
    decoder, tested for every accepted encoding) otherwise."""
    global _BRIDGE
    from hmdiff_ros.pipeline.io import to_rgb8

    try:
        from cv_bridge import CvBridge, CvBridgeError
    except ImportError:
        return image_to_rgb(msg)
    _BRIDGE = _BRIDGE or CvBridge()
    try:
        if hasattr(msg, "format"):
            return to_rgb8(_BRIDGE.compressed_imgmsg_to_cv2(msg, "bgr8"), "compressed image")
        if msg.encoding in ("mono16", "16UC1"):
            return image_to_rgb(msg)
        return to_rgb8(np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, "bgr8")), f"{msg.encoding} image")
    except Exception as exc:  # CvBridgeError, or cv_bridge's own bugs (NumPy/OpenCV versions): our decoder
        if not isinstance(exc, CvBridgeError):
            logging.getLogger(__name__).debug("cv_bridge failed (%s: %s); decoding without it", type(exc).__name__, exc)
        return image_to_rgb(msg)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = HMDiffNode()
    try:
        if node.p("autostart"):
            # a failed transition is logged and the node stays up, unconfigured, for a lifecycle manager
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("configure failed (see above); the node stays unconfigured")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("activate failed; the node stays inactive")
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        node._release()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
