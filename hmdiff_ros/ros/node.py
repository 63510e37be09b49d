"""The rclpy node: a thin, managed (lifecycle) adapter over the ROS-free frame pipeline.

Subscribes ``image`` (or ``image/compressed``), ``camera_info`` and, with ``use_detections``,
``detections``; publishes ``~/humans``, ``~/markers``, ``~/debug_image``, TF per person and
``/diagnostics``, all with the image's stamp and frame (or ``target_frame``, through TF at
that stamp). The newest frame is processed in two stages on two worker threads (the prior of
frame t+1 runs while the model finishes frame t, :mod:`.worker`); frames that arrive meanwhile
replace the waiting one and are counted as dropped. With ``autostart`` the node configures
(loads the model) and activates (subscribes) itself. Inputs are read (:mod:`.bridge`; images
through cv_bridge where it imports, see :class:`.bridge.ImageReader`) and outputs built
(:func:`.convert.frame_messages`) as in the bag tool; topics, QoS and parameters are described
in README ("With a camera in ROS 2"), docs/ros.md and :mod:`.params`. This file is the ROS
plumbing around them.
"""

from __future__ import annotations

import signal
import time
from typing import NamedTuple

import rclpy
import rclpy.executors
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import Updater
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tf2_ros import Buffer, TransformBroadcaster, TransformException, TransformListener

from hmdiff_ros.pipeline.pipeline import build_pipeline
from hmdiff_ros.pipeline.stream import model_thread_count
from hmdiff_ros.pipeline.tracking import Tracker
from hmdiff_ros.ros import health
from hmdiff_ros.ros.bridge import ImageReader, boxes_for_image, choose_intrinsics, detection_boxes
from hmdiff_ros.ros.convert import HRI_IDS_LIST, HRI_TRACKED_TOPIC, HUMAN_ARRAY, MessageFactory, frame_messages
from hmdiff_ros.ros.frames import body_id, rigid_from_transform
from hmdiff_ros.ros.hri_bodies import HriBodies
from hmdiff_ros.ros.params import PARAMETERS, frame_options, parameters_error, pipeline_config_of
from hmdiff_ros.ros.worker import NewestFrameWorker

IMAGE_QOS = {"sensor_data": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
OUTPUTS = {  # FrameMessages field: (message type, topic); the hri ids only with publish_hri
    "humans": (HUMAN_ARRAY, "~/humans"),
    "markers": ("visualization_msgs/msg/MarkerArray", "~/markers"),
    "debug_image": ("sensor_msgs/msg/Image", "~/debug_image"),
    "hri": (HRI_IDS_LIST, HRI_TRACKED_TOPIC),
}


class _Frame(NamedTuple):
    """A frame between the worker's two stages (:meth:`HMDiffNode._prepare`, ``_finish``)."""

    msg: object
    received: float
    t0: float
    values: dict
    rgb: object
    K: object
    prepared: object
    debug_wanted: bool
    markers_wanted: bool


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
        self.pipe = self.tracker = self._cfg = None  # _cfg: the pipeline config the parameters gave last
        self._detections = self._info = self._worker = None
        self._subs, self._pubs, self._frame = [], {}, 0  # _pubs: FrameMessages field -> its publisher
        self.stats = health.FrameHealth()  # received / processed / dropped / failed (with reasons), timings
        # images -> RGB through cv_bridge where it imports, else numpy (the same image; see ImageReader)
        self.images = ImageReader.create(warn=lambda text: self.get_logger().warning(text, throttle_duration_sec=10.0))
        self.tf = self.updater = self.tf_buffer = self.tf_listener = None
        self.hri_bodies = None  # REP-155 bodies (publish_hri with hri_msgs)

    def p(self, name: str):
        return self.get_parameter(name).value

    # ---- parameters -------------------------------------------------------------------
    def _values(self) -> dict:
        return {name: self.p(name) for name in PARAMETERS}

    def _check_parameters(self, params) -> SetParametersResult:
        limit, backend = (self.pipe.batch_limit(), self.pipe.model.backend) if self.pipe is not None else (None, "")
        reason = parameters_error(self._values(), {prm.name: prm.value for prm in params}, limit, backend)
        # the worker notices the new values before its next frame (see _prepare)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    # ---- lifecycle --------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        values = self._values()
        reason = parameters_error(values)  # values given at start (a params file) skip the set-parameters callback
        if reason:
            self.get_logger().error(f"parameter {reason}")
            return TransitionCallbackReturn.FAILURE
        try:
            # one camera stream: the prior follows the person (video mode) unless boxes come from detections
            self._cfg = pipeline_config_of(values)
            self.pipe = build_pipeline(self._cfg, self.p("checkpoint") or None, video=not self.p("use_detections"))
        except Exception as exc:  # rclpy would turn it into a silent ERROR transition
            self.get_logger().error(f"cannot load the model: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            self.pipe.max_people_per_call()  # hypotheses within the backend's largest batch
        except ValueError as exc:
            self.get_logger().error(f"parameter hypotheses: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.tracker = Tracker()
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        for field, (kind, topic) in OUTPUTS.items():
            if field != "hri" or self.p("publish_hri"):
                self._create_publisher(field, kind, topic, reliable)
        if "hri" in self._pubs:
            self.hri_bodies = HriBodies(self, self.factory, reliable)
        # made once per node: a second configure (after cleanup) must not declare or create them again
        if self.tf is None:
            self.tf = TransformBroadcaster(self)
        if self.p("target_frame") and self.tf_buffer is None:
            self.tf_buffer = Buffer(node=self)  # the node's clock: sim time and bag loops clear it
            self.tf_listener = TransformListener(self.tf_buffer, self)
        if self.updater is None:
            self.updater = Updater(self, period=1.0)
            self.updater.add("hmdiff pipeline", self._diagnose)
        backend = self.pipe.model.backend  # the one that loaded, not only the one asked for
        self.updater.setHardwareID(f"hmdiff_{backend}")
        if backend != self.p("backend"):
            reasons = "; ".join(getattr(self.pipe.model, "fallback_reasons", [])) or "see above"
            # auto skipping what is not here is its job; another backend asked for and not run is a warning
            say = self.get_logger().info if self.p("backend") == "auto" else self.get_logger().warning
            say(f"backend {self.p('backend')} asked for, {backend} runs: {reasons}")
        self.get_logger().info(
            f"model ready (backend {backend}); images with QoS {self.p('image_qos')} "
            f"({IMAGE_QOS[self.p('image_qos')]}, depth 1), outputs reliable depth 5, in frame "
            f"{self.p('target_frame') or 'of the image'}; images read through {self.images.describe()}"
        )
        return TransitionCallbackReturn.SUCCESS

    def _create_publisher(self, field: str, kind: str, topic: str, qos: QoSProfile) -> None:
        try:
            self._pubs[field] = self.create_publisher(self.factory.type_of(kind), topic, qos)
        except ImportError as exc:
            if field != "hri":
                raise
            self.get_logger().error(f"publish_hri needs the hri_msgs package (ROS4HRI): {exc}; not publishing {topic}")

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        keep_last, volatile = HistoryPolicy.KEEP_LAST, DurabilityPolicy.VOLATILE
        qos = QoSProfile(depth=1, history=keep_last, durability=volatile, reliability=IMAGE_QOS[self.p("image_qos")])
        image = (CompressedImage, "image/compressed") if self.p("compressed") else (Image, "image")
        inputs = [(*image, self._on_image), (CameraInfo, "camera_info", self._on_info)]
        if self.p("use_detections"):
            from vision_msgs.msg import Detection2DArray

            inputs.append((Detection2DArray, "detections", self._on_detections))
        self._subs = [self.create_subscription(kind, topic, callback, qos) for kind, topic, callback in inputs]
        # two stages on two threads: the prior of frame t+1 beside the model on frame t, the model
        # on half of the cores (the stages are looked up per frame: tests may replace them)
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(model_thread_count())
        self._worker = NewestFrameWorker(
            lambda msg, received: self._prepare(msg, received),
            self.stats,
            lambda: self.p("max_rate_hz"),
            self._failed,
            finish=lambda frame: self._finish(frame),
        )
        self._worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        if self.hri_bodies is not None:
            self.hri_bodies.close()  # an inactive node tracks nobody
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stops the worker before the publishers go (rclpy's own destroy_node would leave it
        publishing on destroyed ones), then destroys the node."""
        self._stop_inputs()
        self._release()
        super().destroy_node()

    def _stop_inputs(self) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=5.0)
            self._worker = None
            torch.set_num_threads(self._threads_before)
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []

    def _release(self) -> None:
        if self.pipe is not None:
            try:
                self.pipe.prior.close()
            except Exception as exc:  # a MediaPipe graph that failed raises again on close: shutting down anyway
                self.get_logger().warning(f"closing the pose prior: {type(exc).__name__}: {exc}")
            self.pipe = None
        if self.hri_bodies is not None:
            self.hri_bodies.close()
            self.hri_bodies = None
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}

    # ---- inputs -----------------------------------------------------------------------
    def _on_info(self, msg) -> None:
        self._info = msg  # checked against each image's size in _prepare

    def _on_detections(self, msg) -> None:
        self._detections = (msg.header.stamp, detection_boxes(msg, self.p("max_people")))

    def _on_image(self, msg) -> None:
        worker = self._worker
        if worker is not None:
            worker.put(msg)  # newest frame wins; processed on the worker threads by _prepare, _finish

    # ---- worker -----------------------------------------------------------------------
    def _failed(self, exc: Exception) -> None:
        self.get_logger().warning(f"frame dropped: {exc}", throttle_duration_sec=5.0)

    def _prepare(self, msg, received: float) -> _Frame:
        """The first stage of a frame: the parameters, the image, the intrinsics, the prior."""
        t0, values = time.monotonic(), self._values()
        # run-time parameters: compared with the last config, not flagged by the set-parameters
        # callback (it runs before rclpy stores the new values: a flag could meet the old ones)
        # the full mesh, the overlay and the markers only for subscribers (they cost a frame's time)
        debug_wanted = self._pubs["debug_image"].get_subscription_count() > 0
        markers_wanted = self._pubs["markers"].get_subscription_count() > 0
        cfg = pipeline_config_of(values, debug_wanted)
        if cfg != self._cfg:
            self._cfg = self.pipe.cfg = cfg
        rgb = self.images(msg)
        K, why = choose_intrinsics(self._info, rgb.shape[1], rgb.shape[0], values["hfov_deg"])  # as the bag tool
        if why:
            self.stats.count("camera_info_unused")
            self.get_logger().warning(f"camera_info not used ({why}): using hfov_deg", throttle_duration_sec=10.0)
        boxes = boxes_for_image(self._detections, msg.header.stamp) if values["use_detections"] else None
        prepared = self.pipe.prepare(rgb, K, boxes)
        return _Frame(msg, received, t0, values, rgb, K, prepared, debug_wanted, markers_wanted)

    def _finish(self, frame: _Frame) -> None:
        """The second stage: the model, tracking, the messages, publishing, the counts."""
        msg, values, K = frame.msg, frame.values, frame.K
        people = self.pipe.finish(frame.prepared).people
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if values["tracking"]:
            people = self.tracker(people, stamp, K)
        target = self._target_transform(msg.header) if self.tf_buffer is not None else None
        self._frame += 1
        options = frame_options(
            values,
            self._frame,
            "hri" in self._pubs,
            frame.debug_wanted,
            frame.markers_wanted,
            self.stats.frame_interval(),
        )
        out = frame_messages(self.factory, msg.header, people, self.pipe.topology, options, frame.rgb, K, target)
        for field, pub in self._pubs.items():
            if getattr(out, field) is not None:
                pub.publish(getattr(out, field))
        if out.transforms:
            self.tf.sendTransform(out.transforms)
        if self.hri_bodies is not None:
            ids = [body_id(p, i) for i, p in enumerate(out.people)]
            self.hri_bodies.publish(msg.header, out.people, ids, frame.rgb.shape[1], frame.rgb.shape[0])
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp  # image stamp to publish (node clock; sim time too)
        self.stats.processed(time.monotonic(), frame.received, frame.t0, age)

    def _target_transform(self, hdr):
        """``(target_frame, R, t)``: TF's transform from the image's frame at its stamp."""
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
        return (target, *rigid_from_transform(tr.transform))

    # ---- diagnostics ------------------------------------------------------------------
    def _diagnose(self, stat):
        level, message = self.stats.level()
        stat.summary(getattr(DiagnosticStatus, health.LEVEL_NAMES[level]), message)
        backend = self.pipe.model.backend if self.pipe is not None else "not loaded"
        for key, value in self.stats.values(time.monotonic(), backend, self.p("backend")):
            stat.add(key, value)
        for key, value in self.images.values():
            stat.add(key, value)
        return stat


def main(args=None, stop_requested=lambda: False) -> None:
    """Run the node until shut down. ``stop_requested``: a SIGINT that came before rclpy.init
    installed its handler (the entry point's own handler noted it); the node then stops at once."""
    rclpy.init(args=args)
    node = None
    try:
        if stop_requested():
            return
        node = HMDiffNode()
        if node.p("autostart"):
            # a failed transition is logged and the node stays up, unconfigured, for a lifecycle manager
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("configure failed (see above); the node stays unconfigured")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("activate failed; the node stays inactive")
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C during start-up: rclpy's signal handler has shut the context down while the node
        # was being made or in a transition, which then fails; that is a requested stop, not an error
    finally:
        # a terminal's Ctrl-C reaches ros2 launch and the node, and launch forwards it again:
        # a second SIGINT must not interrupt the clean-up (SIGTERM and launch's escalation still do)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
