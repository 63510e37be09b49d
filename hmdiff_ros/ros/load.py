"""The node under load: a camera-like publisher against a running ``hmdiff_node``.

:func:`run_load` starts the node in its own process (as ``ros2 run`` does, in a private
namespace), publishes ``Image`` + ``CameraInfo`` at a fixed rate with the wall clock as the
stamp (the demo photo, an image or the frames of a video, looped), and measures what a user
of the node sees: results per second, the age of each result (its image stamp to its
arrival), the node's own counters from ``/diagnostics`` (received, processed, dropped,
failed) and the node process's memory. ``hmdiff bench-node`` prints the figures; the
real-core test asserts bounds that a queue or a leak would break.

The soak (``hmdiff bench-node --faults``, :mod:`hmdiff_ros.ros.soak`) starts, probes and stops
the node with the helpers here: :func:`node_command`, :func:`spin_probe`,
:func:`settled_counters`, :func:`rss_mib` and :func:`stop_node`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np

from hmdiff_ros import defaults

WARMUP_S = 3.0  # after the first result: the prior's tracker and the caches settle
FIRST_RESULT_S = 180.0  # the model loads within this (torch import, checkpoint, MediaPipe)
TAIL_S = 10.0  # the first and last this-many seconds give the latency trend
COUNTERS = ("received", "processed", "dropped", "failed")  # the node's frame counts in /diagnostics


@dataclass
class LoadResult:
    """What one run measured: counts over the measured window, result ages (image stamp to
    arrival at the subscriber, seconds) and the node's memory samples (seconds, MiB)."""

    source: str
    fps: float
    seconds: float
    size: tuple = (0, 0)
    published: int = 0
    node: Dict[str, int] = field(default_factory=dict)  # received/processed/dropped/failed in the window
    results: List[tuple] = field(default_factory=list)  # (arrival, age) per HumanArray
    people: int = 0  # people in the results
    memory: List[tuple] = field(default_factory=list)  # (seconds into the window, RSS MiB)
    exit_code: int | None = None
    failed_reasons: str = ""
    # the ROS 2 the run used, as its sourced setup says (the node runs in the same environment)
    ros: str = field(
        default_factory=lambda: (
            f"{os.environ.get('ROS_DISTRO', '?')}, {os.environ.get('RMW_IMPLEMENTATION', 'default rmw')}"
        )
    )

    def figures(self) -> Dict:
        ages = np.array([a for _, a in self.results]) * 1000.0
        t = np.array([t for t, _ in self.results])
        first = ages[t < t[0] + TAIL_S] if len(t) else ages
        last = ages[t > t[-1] - TAIL_S] if len(t) else ages
        pct = lambda a, q: round(float(np.percentile(a, q)), 1) if len(a) else None  # noqa: E731
        mem = np.array([m for _, m in self.memory]) if self.memory else np.zeros(1)
        settled = mem[len(mem) // 3 :] if len(mem) >= 3 else mem
        return {
            "source": self.source,
            "ros": self.ros,
            "image": f"{self.size[1]}x{self.size[0]}",
            "fps_published": round(self.published / self.seconds, 1),
            "seconds": self.seconds,
            "published": self.published,
            **{k: self.node.get(k) for k in COUNTERS},
            "results": len(self.results),
            "results_per_s": round(len(self.results) / self.seconds, 2),
            "people_per_result": round(self.people / max(len(self.results), 1), 2),
            "latency_p50_ms": pct(ages, 50),
            "latency_p90_ms": pct(ages, 90),
            "latency_p99_ms": pct(ages, 99),
            "latency_max_ms": pct(ages, 100),
            "latency_first_p50_ms": pct(first, 50),
            "latency_last_p50_ms": pct(last, 50),
            "rss_start_mib": round(float(mem[0]), 1),
            "rss_end_mib": round(float(mem[-1]), 1),
            "rss_growth_mib": round(float(settled[-1] - settled[0]), 1),
            "node_exit_code": self.exit_code,
            "failed_reasons": self.failed_reasons,
        }


def load_frames(source: str, max_side: int = 0, max_frames: int = 300) -> List[np.ndarray]:
    """RGB frames: ``demo`` (the shipped photo), an image file, or up to ``max_frames`` frames
    of a video file; scaled down to at most ``max_side`` pixels (0: as they are)."""
    import cv2

    from hmdiff_ros.pipeline.io import VIDEO_SUFFIXES, read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    if source == "demo":
        frames = [read_image(DEMO_IMAGE)]
    elif Path(source).suffix.lower() in VIDEO_SUFFIXES:
        cap, frames = cv2.VideoCapture(source), []
        while len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        cap.release()
        if not frames:
            raise ValueError(f"{source}: no frames could be read (a video file OpenCV can open was expected)")
    else:
        frames = [read_image(source)]
    scale = max_side / max(frames[0].shape[:2]) if max_side else 1.0
    if scale < 1.0:
        size = (round(frames[0].shape[1] * scale), round(frames[0].shape[0] * scale))
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def rss_mib(pid: int) -> float | None:
    """The resident memory (VmRSS) of process ``pid``, MiB; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def node_command(name: str, namespace: str, params: Dict[str, object]) -> List[str]:
    """The node's process: this Python running the node's ``main``, as ``ros2 run`` would."""
    args = ["--ros-args", "-r", f"__node:={name}", "-r", f"__ns:={namespace}"]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return [sys.executable, "-c", "from hmdiff_ros.ros import node_main; node_main()", *args]


def run_load(
    source: str = "demo",
    fps: float = 30.0,
    seconds: float = 60.0,
    params: Dict[str, object] | None = None,
    max_side: int = 0,
    log=None,
) -> LoadResult:
    """Publish ``source`` at ``fps`` for ``seconds`` (after the node's first result and a
    warm-up) to a fresh node with the parameters ``params``, frames scaled to at most
    ``max_side`` pixels (0: as they are); ``log``: a callable for progress
    lines. Needs a sourced ROS 2 workspace with hmdiff_msgs."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from hmdiff_msgs.msg import HumanArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from hmdiff_ros.camera import intrinsics_from_fov
    from hmdiff_ros.ros.bridge import camera_info_msg, image_msg
    from hmdiff_ros.ros.convert import MessageFactory, header

    log = log or (lambda text: None)
    frames = load_frames(source, max_side)
    h, w = frames[0].shape[:2]
    tag = f"{os.getpid()}_{int(time.time() * 1000) % 100000}"
    name, namespace = f"hmdiff_load_{tag}", f"/hmdiff_load_{tag}"
    result = LoadResult(source=source, fps=fps, seconds=seconds, size=(h, w))
    f = MessageFactory.for_rclpy()
    K = intrinsics_from_fov(w, h, defaults.HFOV_DEG)
    images = [image_msg(f, header(f, 0, 0, "camera_optical_frame"), rgb) for rgb in frames]
    info = camera_info_msg(f, header(f, 0, 0, "camera_optical_frame"), K, w, h)

    proc = subprocess.Popen(
        node_command(name, namespace, params or {}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output: List[bytes] = []
    threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, b"")), daemon=True).start()
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node(f"hmdiff_load_probe_{tag}", context=context)
    lock, state = threading.Lock(), {"measuring": False, "stop": False}
    arrivals: List[tuple] = []
    counters: Dict[str, Dict[str, str]] = {}

    def on_humans(msg) -> None:
        now = time.time()
        with lock:
            age = now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
            arrivals.append((now, age, len(msg.humans), now - age))  # (arrival, age, people, stamp)

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name.startswith(name):
                counters["last"] = {kv.key: kv.value for kv in status.values}

    probe.create_subscription(HumanArray, f"{namespace}/{name}/humans", on_humans, QoSProfile(depth=10))
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    pub = probe.create_publisher(Image, f"{namespace}/image", qos_profile_sensor_data)
    info_pub = probe.create_publisher(CameraInfo, f"{namespace}/camera_info", qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    spinner = threading.Thread(target=lambda: spin_probe(executor, state), daemon=True)
    spinner.start()

    def publish_for(duration: float, until=None) -> int:
        """Publish at ``fps`` for ``duration`` seconds (or until ``until()``); frames published."""
        n, start = 0, time.monotonic()
        while time.monotonic() - start < duration and not (until and until()):
            target = start + n / fps
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            sec, nanosec = int(now), int((now % 1) * 1e9)
            msg = images[n % len(images)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            info.header.stamp = msg.header.stamp
            info_pub.publish(info)
            pub.publish(msg)
            n += 1
            if proc.poll() is not None:
                raise RuntimeError(f"the node exited with {proc.returncode}: {b''.join(output).decode()[-2000:]}")
        return n

    try:
        log(f"starting the node ({name}); publishing {w}x{h} frames of {source} at {fps:g} FPS")
        publish_for(FIRST_RESULT_S, until=lambda: bool(arrivals))
        if not arrivals:
            raise RuntimeError(
                f"no result from the node within {FIRST_RESULT_S:.0f} s: {b''.join(output).decode()[-2000:]}"
            )
        publish_for(WARMUP_S)
        # the window starts with nothing in flight: every frame received so far is accounted for
        before = settled_counters(counters)
        state["measuring"] = True
        start, first_stamp = time.monotonic(), time.time()
        sampler = threading.Thread(target=_sample_memory, args=(proc.pid, start, result.memory, state), daemon=True)
        sampler.start()
        log(f"measuring for {seconds:g} s")
        result.published = publish_for(seconds)
        state["measuring"] = False
        time.sleep(1.0)  # the last frame's result arrives; a later diagnostics update has it
        after = settled_counters(counters)
        result.node = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in COUNTERS}
        result.failed_reasons = after.get("failed_reasons", "")
        with lock:  # the results of the frames published in the window
            kept = [a for a in arrivals if a[3] >= first_stamp]
        result.results = [(t, age) for t, age, _, _ in kept]
        result.people = sum(n for _, _, n, _ in kept)
    finally:
        state["stop"] = True
        result.exit_code = stop_node(proc, executor, probe, context)
    return result


def stop_node(proc, executor, probe, context) -> int:
    """Stop the node as Ctrl-C does (killed if it has not ended in 30 s) and the probe's ROS
    context; the node's exit code."""
    import rclpy

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    executor.shutdown()
    probe.destroy_node()
    rclpy.shutdown(context=context)
    return proc.returncode


def spin_probe(executor, state) -> None:
    """Run the probe's callbacks until ``state["stop"]``."""
    while not state["stop"]:
        executor.spin_once(timeout_sec=0.1)


def _sample_memory(pid: int, start: float, into: List[tuple], state) -> None:
    while not state["stop"] and state["measuring"]:
        rss = rss_mib(pid)
        if rss is not None:
            into.append((time.monotonic() - start, rss))
        time.sleep(1.0)


def settled_counters(counters, timeout: float = 5.0) -> Dict[str, str]:
    """The node's next diagnostics values in which every frame it received is processed,
    dropped or failed (none in flight); the latest ones at ``timeout``."""
    end, seen = time.monotonic() + timeout, counters.get("last")
    while time.monotonic() < end:
        latest = counters.get("last")
        if latest is not None and latest is not seen:
            n = {k: int(latest.get(k, 0)) for k in COUNTERS}
            if n["received"] == n["processed"] + n["dropped"] + n["failed"]:
                return latest
        time.sleep(0.05)
    return counters.get("last") or {}


def format_load(fig: Dict) -> str:
    lines = [
        f"node under load: {fig['source']} ({fig['image']}), {fig['fps_published']} FPS for {fig['seconds']:g} s "
        f"(ROS 2 {fig.get('ros', '?')})",
        f"  published {fig['published']}, node received {fig['received']}, processed {fig['processed']}, "
        f"dropped {fig['dropped']} (newest frame wins), failed {fig['failed']}",
        f"  results {fig['results']} ({fig['results_per_s']}/s, {fig['people_per_result']} people each)",
        f"  latency image stamp -> result received: p50 {fig['latency_p50_ms']} ms, p90 {fig['latency_p90_ms']}, "
        f"p99 {fig['latency_p99_ms']}, max {fig['latency_max_ms']} "
        f"(p50 first {TAIL_S:g} s {fig['latency_first_p50_ms']}, last {TAIL_S:g} s {fig['latency_last_p50_ms']})",
        f"  node memory (RSS) {fig['rss_start_mib']} -> {fig['rss_end_mib']} MiB "
        f"(growth after the first third: {fig['rss_growth_mib']} MiB); exit code {fig['node_exit_code']}",
    ]
    if fig["failed_reasons"]:
        lines.append(f"  failures: {fig['failed_reasons']}")
    return "\n".join(lines)
