"""The node under load: a camera-like publisher against a running ``hmdiff_node``.

:func:`run_load` starts the node in its own process (as ``ros2 run`` does, in a private
namespace), publishes ``Image`` + ``CameraInfo`` at a fixed rate with the wall clock as the
stamp (the demo photo, an image or the frames of a video, looped), and measures what a user
of the node sees: results per second, the age of each result (its image stamp to its
arrival), the node's own counters from ``/diagnostics`` (received, processed, dropped,
failed) and the node process's memory. ``hmdiff bench-node`` prints the figures; the
real-core test asserts bounds that a queue or a leak would break.

:func:`run_soak` (``hmdiff bench-node --faults``) runs the node the same way under a camera
with faults, in cycles of :data:`SOAK_CYCLE` (it stops, changes resolution and CameraInfo, its
publishers restart, frames come out of order and twice, a burst), and judges each result: its
stamp must be one an image had, and its keypoints_2d must be its joints projected with the
intrinsics the node should have used for that image (:meth:`SoakResult.judge`). The verdict:
a correct result within :data:`RECOVERY_S` of each fault's end, the node alive and exiting 0 on
SIGINT, no result that is not of its stamp's frame, memory flat after the warm-up.
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
from hmdiff_ros.ros import health

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


def _rss_mib(pid: int) -> float | None:
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
    spinner = threading.Thread(target=lambda: _spin(executor, state), daemon=True)
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
        before = _settled_counters(counters)
        state["measuring"] = True
        start, first_stamp = time.monotonic(), time.time()
        sampler = threading.Thread(target=_sample_memory, args=(proc.pid, start, result.memory, state), daemon=True)
        sampler.start()
        log(f"measuring for {seconds:g} s")
        result.published = publish_for(seconds)
        state["measuring"] = False
        time.sleep(1.0)  # the last frame's result arrives; a later diagnostics update has it
        after = _settled_counters(counters)
        result.node = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in COUNTERS}
        result.failed_reasons = after.get("failed_reasons", "")
        with lock:  # the results of the frames published in the window
            kept = [a for a in arrivals if a[3] >= first_stamp]
        result.results = [(t, age) for t, age, _, _ in kept]
        result.people = sum(n for _, _, n, _ in kept)
    finally:
        state["stop"] = True
        result.exit_code = _stop(proc, executor, probe, context)
    return result


def _stop(proc, executor, probe, context) -> int:
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


def _spin(executor, state) -> None:
    while not state["stop"]:
        executor.spin_once(timeout_sec=0.1)


def _sample_memory(pid: int, start: float, into: List[tuple], state) -> None:
    while not state["stop"] and state["measuring"]:
        rss = _rss_mib(pid)
        if rss is not None:
            into.append((time.monotonic() - start, rss))
        time.sleep(1.0)


def _settled_counters(counters, timeout: float = 5.0) -> Dict[str, str]:
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
        f"node under load: {fig['source']} ({fig['image']}), {fig['fps_published']} FPS for {fig['seconds']:g} s",
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


# ---- the soak: the node under a camera with faults -------------------------------------------
VGA, HD = (640, 480), (1280, 720)  # the camera's two resolutions (width, height)
BURST = 3.0  # the burst's rate, times the camera's
RECOVERY_S = 1.0  # a fault's end to the first correct result, at most
SOAK_DIAGNOSTICS_S = 0.25  # the node's /diagnostics period in the soak: a phase's counts to within it
SOAK_WARMUP_MIN = 10.0  # memory growth is measured after this many minutes (at most half of the run)
SOAK_RSS_GROWTH_MIB = 50.0  # ... and may be at most this
# ... or this after a shorter warm-up (a run under 20 minutes): in its first cycles the node's RSS
# still settles (its highest went 752 -> 818, 807 -> 833, 810 -> 825 MiB from the first cycle to
# the second in runs without a leak, and stays near 830 after), so a short run catches only a
# leak of 100 MiB a minute or more (a 640x480 frame every 10 frames, or 11 MiB per fault)
SOAK_RSS_SHORT_MIB = 100.0
# one cycle of the schedule, repeated: (phase, what happens, steps). Steps: ("stream", s) at the
# camera's rate, ("pause", s) nothing published, ("disorder", s), ("burst", s), ("size", (w, h))
# with that size's CameraInfo, ("info", "camera" | "other" | None), ("restart", QoS) the image and
# CameraInfo publishers destroyed and made again; ("end",) a fault ends (or a change is made)
# here: the node must give a correct result for a frame published after it within RECOVERY_S
SOAK_CYCLE = (
    ("normal", "640x480 at the camera's rate, with its CameraInfo", (("stream", 4.0),)),
    ("camera_stop", "nothing published for 5 s, then the camera resumes", (("pause", 5.0), ("end",), ("stream", 2.0))),
    ("normal", "", (("stream", 3.0),)),
    (
        "resolution",
        "1280x720 (with its CameraInfo) for 4 s, then 640x480 again",
        (("end",), ("size", HD), ("stream", 4.0), ("end",), ("size", VGA), ("stream", 3.0)),
    ),
    ("normal", "", (("stream", 3.0),)),
    (
        "camera_info",
        "other intrinsics for 3 s, then no CameraInfo for 3 s (the images go on), then the first again",
        (("end",), ("info", "other"), ("stream", 3.0), ("info", None), ("stream", 3.0))
        + (("end",), ("info", "camera"), ("stream", 3.0)),
    ),
    ("normal", "", (("stream", 3.0),)),
    (
        "publisher_restart",
        "the image and CameraInfo publishers destroyed and made again (a driver restart), reliable for 3 s, "
        "then again with the sensor-data QoS",
        (("restart", "reliable"), ("end",), ("stream", 3.0), ("restart", "sensor_data"), ("end",), ("stream", 3.0)),
    ),
    ("normal", "", (("stream", 3.0),)),
    (
        "disorder",
        "for 4 s, of every three frames the first comes after the second (an older stamp after a newer) "
        "and the third twice (the same stamp)",
        (("disorder", 4.0), ("end",), ("stream", 2.0)),
    ),
    ("normal", "", (("stream", 3.0),)),
    ("burst", f"{BURST:g}x the camera's rate for 3 s", (("burst", 3.0), ("end",), ("stream", 3.0))),
)
CYCLE_S = sum(
    step[1] for _, _, steps in SOAK_CYCLE for step in steps if step[0] in ("stream", "pause", "disorder", "burst")
)


class NodeExited(RuntimeError):
    """The node's process ended during a soak."""


def soak_intrinsics(hfov_deg: float = defaults.HFOV_DEG) -> Dict[str, tuple]:
    """The soak camera's intrinsics, ``(w, h, fx, fy, cx, cy)``: per size its CameraInfo's
    (``camera``), the other one of 640x480 (``other``) and the field of view's (``fov``, what
    the node uses without a fitting CameraInfo); all distinct, so a result tells which it used."""
    from hmdiff_ros.camera import intrinsics_from_fov

    keys = {}
    for w, h in (VGA, HD):
        K = intrinsics_from_fov(w, h, hfov_deg)
        f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
        keys[f"fov {w}x{h}"] = (w, h, f, f, cx, cy)
        keys[f"camera {w}x{h}"] = (w, h, 1.1 * f, 1.1 * f, cx + 6.0, cy - 4.0)
    w, h, f, _, cx, cy = keys[f"fov {VGA[0]}x{VGA[1]}"]
    keys[f"other {w}x{h}"] = (w, h, 0.85 * f, 0.85 * f, cx - 10.0, cy + 8.0)
    return {name: tuple(round(float(v), 3) for v in k) for name, k in keys.items()}


def fit_intrinsics(joints: np.ndarray, uv: np.ndarray) -> tuple | None:
    """``(fx, fy, cx, cy)`` that project the 3D ``joints`` ``(N, 3)`` to ``uv`` ``(N, 2)``
    (a HumanArray's keypoints_2d are its joints projected with the frame's K), least squares;
    None without three usable joints."""
    ok = np.isfinite(joints).all(1) & np.isfinite(uv).all(1) & (joints[:, 2] > 1e-3)
    if ok.sum() < 3:
        return None
    j, uv = joints[ok], uv[ok]
    fit = []
    for axis in (0, 1):
        a = np.stack([j[:, axis] / j[:, 2], np.ones(len(j))], axis=1)
        (focal, centre), *_ = np.linalg.lstsq(a, uv[:, axis], rcond=None)
        fit.append((focal, centre))
    return (fit[0][0], fit[1][0], fit[0][1], fit[1][1])


def letterbox(rgb: np.ndarray, size: tuple) -> np.ndarray:
    """``rgb`` scaled to fit ``size`` (w, h) and centred on grey: the same scene at another resolution."""
    import cv2

    w, h = size
    scale = min(w / rgb.shape[1], h / rgb.shape[0])
    sw, sh = round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)
    out = np.full((h, w, 3), 114, np.uint8)
    x0, y0 = (w - sw) // 2, (h - sh) // 2
    out[y0 : y0 + sh, x0 : x0 + sw] = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    return out


@dataclass
class SoakResult:
    """What a soak recorded; :meth:`figures` judges it. Times are wall-clock seconds, stamps
    integer nanoseconds (the images' header stamps)."""

    source: str
    fps: float
    cycles: int
    intrinsics: Dict[str, tuple]  # soak_intrinsics()
    rss_limit_mib: float = SOAK_RSS_GROWTH_MIB
    warmup_cycles: int = 1
    phases: List[dict] = field(default_factory=list)  # per phase run: name, cycle, start, end, events, published
    published: Dict[int, tuple] = field(default_factory=dict)  # stamp -> (phase run, K key the node should use)
    results: List[tuple] = field(default_factory=list)  # (arrival, stamp, people, (fx, fy, cx, cy) | None, box centre)
    diagnostics: List[tuple] = field(default_factory=list)  # (arrival, level, message, counters)
    memory: List[tuple] = field(default_factory=list)  # (time, RSS MiB)
    node: Dict[str, int] = field(default_factory=dict)  # the node's counters over the whole run
    exit_code: int | None = None
    crashed: str = ""  # the node exited during the run: when and its last output

    def judge(self) -> List[tuple]:
        """Per result ``(arrival, stamp, run, verdict)``: ``correct``, or why not; a verdict
        starting with ``violation`` is a result that is not of the frame its stamp names."""
        keys = self.intrinsics
        out = []
        for arrival, stamp, people, K, centre in self.results:
            if stamp not in self.published:
                out.append((arrival, stamp, -1, "violation: a stamp that was not published"))
                continue
            run, expected = self.published[stamp]
            w, h = keys[expected][:2]
            near = [name for name, k in keys.items() if K is not None and _same_k(K, k[2:])]
            if not people:
                why = "no person"
            elif not any(keys[name][:2] == (w, h) for name in near):
                why = "violation: intrinsics of another image size"  # the result is not of this frame
            elif expected not in near:
                why = f"stale intrinsics ({'/'.join(near)} for {expected})"
            elif not (0 <= centre[0] <= w and 0 <= centre[1] <= h):
                why = "box outside the image"
            else:
                why = "correct"
            out.append((arrival, stamp, run, why))
        return out

    def figures(self) -> Dict:
        judged = self.judge()
        by_run: Dict[int, list] = {}
        for item in judged:
            by_run.setdefault(item[2], []).append(item)
        correct = sorted((stamp, arrival) for arrival, stamp, _, why in judged if why == "correct")
        stamps = np.array([s for s, _ in correct], dtype=np.int64)
        arrivals = np.array([a for _, a in correct])
        rows: Dict[str, dict] = {}
        for i, run in enumerate(self.phases):
            row = rows.setdefault(run["name"], _empty_row(run))
            row["runs"] += 1
            row["seconds"] += run["end"] - run["start"]
            row["published"] += run["published"]
            before, after = self._counters_at(run["start"]), self._counters_at(run["end"])
            for k in COUNTERS:
                row[k] += int(after.get(k, 0)) - int(before.get(k, 0))
            for *_, why in by_run.get(i, []):
                row["results"] += 1
                if why == "correct":
                    row["correct"] += 1
                else:
                    row["not_correct"][why] = row["not_correct"].get(why, 0) + 1
                    row["violations"] += why.startswith("violation")
            row["_ages"] += [a - s * 1e-9 for a, s, _, _ in by_run.get(i, [])]
            level, message = self._worst_level(run["start"], run["end"])
            if level > row["_level"][0]:
                row["_level"] = (level, message)
            row["_rss"] += [m for t, m in self.memory if run["start"] <= t < run["end"]]
            for event in run["events"]:  # the first correct result of a frame stamped after it
                j = int(np.searchsorted(stamps, int(event * 1e9)))
                later = arrivals[j:]
                took = float(later.min() - event) if len(later) else None
                row["_recovery"].append((took, run["cycle"]))
        phases = [_finish_row(row) for row in rows.values()]
        unpublished = sum(1 for *_, why in judged if why == "violation: a stamp that was not published")
        memory = self._memory()
        recoveries = [(r["phase"], r["recovery_max_s"], r["recovery_missing"]) for r in phases if r["events"]]
        checks = {
            "recovered": all(m == 0 and t is not None and t <= RECOVERY_S for _, t, m in recoveries),
            "alive": not self.crashed,
            "exit_code_0": self.exit_code == 0,
            "stamps": all(r["violations"] == 0 for r in phases) and unpublished == 0,
            "memory_flat": memory["rss_growth_mib"] is not None and memory["rss_growth_mib"] <= self.rss_limit_mib,
        }
        failures = [
            f"{name}: {'no correct result after ' + str(m) + ' fault end(s)' if m else f'recovered in {t} s'}"
            for name, t, m in recoveries
            if m or t is None or t > RECOVERY_S
        ]
        failures += [f"the node exited during the run: {self.crashed}"] if self.crashed else []
        failures += [f"exit code {self.exit_code} on SIGINT"] if self.exit_code != 0 else []
        failures += [
            f"{r['phase']}: {r['violations']} results not of their stamp's frame" for r in phases if r["violations"]
        ]
        failures += [f"{unpublished} results with a stamp that was not published"] if unpublished else []
        if not checks["memory_flat"]:
            failures.append(
                f"memory grew {memory['rss_growth_mib']} MiB after the warm-up (at most {self.rss_limit_mib:g})"
            )
        return {
            "source": self.source,
            "fps": self.fps,
            "minutes": round(sum(r["end"] - r["start"] for r in self.phases) / 60.0, 2),
            "cycles": self.cycles,
            "cycle_s": CYCLE_S,
            "phases": phases,
            "node": {k: self.node.get(k) for k in COUNTERS} | {"exit_code": self.exit_code},
            "results": len(judged),
            "unpublished_stamps": unpublished,
            "memory": memory,
            "crashed": self.crashed,
            "verdict": {
                "passed": all(checks.values()),
                "checks": checks,
                "criteria": {
                    "recovery_s": RECOVERY_S,
                    "rss_growth_limit_mib": self.rss_limit_mib,
                    "rss_growth_after_cycles": self.warmup_cycles,
                },
                "failures": failures,
            },
        }

    def _counters_at(self, t: float) -> Dict[str, str]:
        """The node's counters in its last diagnostics update before ``t`` (its first if none)."""
        last = self.diagnostics[0][3] if self.diagnostics else {}
        for arrival, _, _, counters in self.diagnostics:
            if arrival > t:
                break
            last = counters
        return last

    def _worst_level(self, start: float, end: float) -> tuple:
        worst = (-1, "")
        for arrival, level, message, _ in self.diagnostics:
            if start < arrival <= end + SOAK_DIAGNOSTICS_S and level > worst[0]:
                worst = (level, message)
        return worst

    def _memory(self) -> Dict:
        """RSS over the run. Growth: the highest RSS of the last ``warmup_cycles`` cycles less
        the highest of the first ``warmup_cycles`` (the warm-up). RSS steps between a low and a
        high level within a cycle (the 1280x720 frames' buffers, handed back to the system at
        times), so a median depends on when; the highest of as many cycles at each end is
        the same phases' plateau, and a leak raises it."""
        per_cycle: Dict[int, float] = {}
        for run in self.phases:
            rss = [m for t, m in self.memory if run["start"] <= t < run["end"]]
            if rss:
                per_cycle[run["cycle"]] = max(per_cycle.get(run["cycle"], 0.0), max(rss))
        k, cycles = self.warmup_cycles, sorted(per_cycle)
        done = len(cycles) >= 2 * k
        ref = max(per_cycle[c] for c in cycles[:k]) if done else None
        last = max(per_cycle[c] for c in cycles[-k:]) if done else None
        t0 = self.memory[0][0] if self.memory else 0.0

        def highest_per(seconds: float) -> List[float]:
            bins: Dict[int, float] = {}
            for t, m in self.memory:
                bins[int((t - t0) // seconds)] = max(bins.get(int((t - t0) // seconds), 0.0), m)
            return [round(bins[b], 1) for b in sorted(bins)]

        return {
            "rss_start_mib": round(self.memory[0][1], 1) if self.memory else None,
            "rss_end_mib": round(self.memory[-1][1], 1) if self.memory else None,
            "rss_warmup_max_mib": round(ref, 1) if done else None,
            "rss_last_max_mib": round(last, 1) if done else None,
            "rss_growth_mib": round(last - ref, 1) if done else None,
            "rss_max_per_minute_mib": highest_per(60.0),
            "rss_max_per_10s_mib": highest_per(10.0),
        }


def _same_k(fit: tuple, k: tuple, tol: float = 1.0) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(fit, k, strict=True))


def _empty_row(run: dict) -> dict:
    return {
        "phase": run["name"],
        "what": run["what"],
        "runs": 0,
        "seconds": 0.0,
        "published": 0,
        **{k: 0 for k in COUNTERS},
        "results": 0,
        "correct": 0,
        "not_correct": {},
        "violations": 0,
        "_ages": [],
        "_rss": [],
        "_level": (-1, ""),
        "_recovery": [],
    }


def _finish_row(row: dict) -> dict:
    ages, rss = np.array(row.pop("_ages")) * 1000.0, row.pop("_rss")
    level, message = row.pop("_level")
    recovery = row.pop("_recovery")
    took = [t for t, _ in recovery if t is not None]
    pct = lambda a, q: round(float(np.percentile(a, q)), 1) if len(a) else None  # noqa: E731
    worst = max(recovery, key=lambda r: float("inf") if r[0] is None else r[0]) if recovery else None
    return {
        **row,
        "seconds": round(row["seconds"], 1),
        "latency_p50_ms": pct(ages, 50),
        "latency_p99_ms": pct(ages, 99),
        "events": len(recovery),
        "recovery_p50_s": round(float(np.median(took)), 3) if took else None,
        "recovery_max_s": round(max(took), 3) if took else None,
        "recovery_missing": len(recovery) - len(took),
        "recovery_worst_cycle": worst[1] if worst else None,
        "rss_max_mib": round(max(rss), 1) if rss else None,
        "diagnostics": health.LEVEL_NAMES[level] if 0 <= level < len(health.LEVEL_NAMES) else "none",
        "diagnostics_message": message if level > 0 else "",
    }


class _Camera:
    """The soak's camera: its publishers, a frame source per size, what it published (the
    stamp of every image, with the K the node should use for it: the last CameraInfo when it
    fits the image's size, else the field of view's, as the node chooses)."""

    def __init__(self, probe, namespace: str, frames, fps: float, keys: Dict[str, tuple], alive) -> None:
        from hmdiff_ros.ros.bridge import camera_info_msg, image_msg
        from hmdiff_ros.ros.convert import MessageFactory, header

        f = MessageFactory.for_rclpy()
        hdr = lambda: header(f, 0, 0, "camera_optical_frame")  # noqa: E731
        self.probe, self.namespace, self.fps, self.keys, self.alive = probe, namespace, fps, keys, alive
        self.images = {size: [image_msg(f, hdr(), letterbox(rgb, size)) for rgb in frames] for size in (VGA, HD)}
        self.infos = {}
        for name, (w, h, fx, fy, cx, cy) in keys.items():
            K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            self.infos[name] = camera_info_msg(f, hdr(), K, w, h)
        self.size, self.info, self.last_info = VGA, "camera", None
        self.published: Dict[int, tuple] = {}
        self.run, self.count, self.n = -1, 0, 0  # the phase run frames belong to, messages in it, frames made
        self.pub = self.info_pub = None
        self.restart("sensor_data")

    def restart(self, qos: str) -> None:
        """The publishers destroyed (if any) and made again with ``qos``: a driver restarting."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        for pub in (self.pub, self.info_pub):
            if pub is not None:
                self.probe.destroy_publisher(pub)
        profile = (
            qos_profile_sensor_data
            if qos == "sensor_data"
            else QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.pub = self.probe.create_publisher(Image, f"{self.namespace}/image", profile)
        self.info_pub = self.probe.create_publisher(CameraInfo, f"{self.namespace}/camera_info", profile)

    def set_size(self, size: tuple) -> None:
        self.size, self.info = size, "camera"

    def send(self, stamp: int, index: int) -> None:
        w, h = self.size
        msg = self.images[self.size][index % len(self.images[self.size])]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        if self.info is not None:
            name = f"{self.info} {w}x{h}"
            info = self.infos[name]
            info.header.stamp = msg.header.stamp
            self.info_pub.publish(info)
            self.last_info = name
        fits = self.last_info is not None and self.keys[self.last_info][:2] == (w, h)
        self.published[stamp] = (self.run, self.last_info if fits else f"fov {w}x{h}")
        self.pub.publish(msg)
        self.count += 1
        self.alive()

    def stream(self, seconds: float, fps: float | None = None, disorder: bool = False) -> None:
        """Frames for ``seconds`` at ``fps`` (the camera's), stamped when made; ``disorder``: of
        every three, the first is sent after the second and the third twice."""
        fps = fps or self.fps
        n, start, held = 0, time.monotonic(), None
        while time.monotonic() - start < seconds:
            delay = start + n / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp, index = time.time_ns(), self.n
            self.n += 1
            if not disorder:
                self.send(stamp, index)
            elif n % 3 == 0:
                held = (stamp, index)
            elif n % 3 == 1:
                self.send(stamp, index)
                self.send(*held)
                held = None
            else:
                self.send(stamp, index)
                self.send(stamp, index)
            n += 1
        if held is not None:
            self.send(*held)

    def pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            self.alive()

    def step(self, step: tuple) -> None:
        kind, arg = step[0], step[1] if len(step) > 1 else None
        if kind == "stream":
            self.stream(arg)
        elif kind == "pause":
            self.pause(arg)
        elif kind == "disorder":
            self.stream(arg, disorder=True)
        elif kind == "burst":
            self.stream(arg, fps=BURST * self.fps)
        elif kind == "size":
            self.set_size(arg)
        elif kind == "info":
            self.info = arg
        elif kind == "restart":
            self.restart(arg)
        else:
            raise ValueError(f"unknown soak step {step!r}")


def run_soak(
    source: str = "demo",
    fps: float = 30.0,
    minutes: float = 60.0,
    params: Dict[str, object] | None = None,
    rss_limit_mib: float | None = None,
    log=None,
) -> SoakResult:
    """The node for ``minutes`` (whole cycles of :data:`SOAK_CYCLE`, at least two) under a
    camera at ``fps`` with faults, after its first result and a warm-up; ``source`` as for
    :func:`run_load` (its frames letterboxed to 640x480 and 1280x720). The node runs with the
    parameters ``params`` and its diagnostics every :data:`SOAK_DIAGNOSTICS_S`; memory growth is
    measured after :data:`SOAK_WARMUP_MIN` minutes (at most half of the run), and may be at most
    ``rss_limit_mib`` (default: :data:`SOAK_RSS_GROWTH_MIB` after the full warm-up, else
    :data:`SOAK_RSS_SHORT_MIB`)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from hmdiff_msgs.msg import HumanArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile

    log = log or (lambda text: None)
    cycles = max(2, round(minutes * 60.0 / CYCLE_S))
    full = round(SOAK_WARMUP_MIN * 60.0 / CYCLE_S)
    warmup = max(1, min(full, cycles // 2))
    if rss_limit_mib is None:
        rss_limit_mib = SOAK_RSS_GROWTH_MIB if warmup == full else SOAK_RSS_SHORT_MIB
    params = dict(params or {})
    keys = soak_intrinsics(float(params.get("hfov_deg", defaults.HFOV_DEG)))
    result = SoakResult(source, fps, cycles, keys, rss_limit_mib, warmup)
    frames = load_frames(source, max_frames=60)
    tag = f"{os.getpid()}_{int(time.time() * 1000) % 100000}"
    name, namespace = f"hmdiff_soak_{tag}", f"/hmdiff_soak_{tag}"
    params["diagnostic_updater.period"] = SOAK_DIAGNOSTICS_S
    proc = subprocess.Popen(node_command(name, namespace, params), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: List[bytes] = []
    threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, b"")), daemon=True).start()
    tail = lambda: b"".join(output).decode(errors="replace")[-2000:]  # noqa: E731
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node(f"hmdiff_soak_probe_{tag}", context=context)
    state = {"measuring": False, "stop": False}
    latest: Dict[str, Dict[str, str]] = {}  # the node's last diagnostics values, as run_load keeps them

    def on_humans(msg) -> None:
        now, stamp = time.time(), msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        K = centre = None
        if msg.humans:
            h = msg.humans[0]
            joints = np.array([(p.x, p.y, p.z) for p in h.joints], dtype=np.float64).reshape(-1, 3)
            uv = np.asarray(h.keypoints_2d, dtype=np.float64).reshape(-1, 2)
            K = fit_intrinsics(joints, uv) if len(joints) == len(uv) else None
            centre = ((h.box[0] + h.box[2]) / 2, (h.box[1] + h.box[3]) / 2)
        result.results.append((now, stamp, len(msg.humans), K, centre))

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name.startswith(name):
                level = status.level if isinstance(status.level, int) else int.from_bytes(status.level, "little")
                values = {kv.key: kv.value for kv in status.values}
                result.diagnostics.append((time.time(), level, status.message, values))
                latest["last"] = values

    def alive() -> None:
        if proc.poll() is not None:
            raise NodeExited(f"exit code {proc.returncode}: {tail()}")

    probe.create_subscription(HumanArray, f"{namespace}/{name}/humans", on_humans, QoSProfile(depth=10))
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    threading.Thread(target=lambda: _spin(executor, state), daemon=True).start()
    try:
        cam = _Camera(probe, namespace, frames, fps, keys, alive)
        del frames
        log(f"starting the node ({name}); {source} at {fps:g} FPS, {cycles} cycles of {CYCLE_S:g} s with faults")
        start = time.monotonic()
        while not result.results and time.monotonic() - start < FIRST_RESULT_S:
            cam.stream(0.5)
        if not result.results:
            raise RuntimeError(f"no result from the node within {FIRST_RESULT_S:.0f} s: {tail()}")
        cam.stream(WARMUP_S)
        before = _settled_counters(latest)
        state["measuring"] = True
        threading.Thread(target=_sample_memory_wall, args=(proc.pid, result.memory, state), daemon=True).start()
        try:
            for cycle in range(cycles):
                for phase, what, steps in SOAK_CYCLE:
                    cam.run, cam.count = len(result.phases), 0
                    run = {"name": phase, "what": what, "cycle": cycle, "start": time.time(), "events": []}
                    result.phases.append(run)
                    try:
                        for step in steps:
                            if step[0] == "end":
                                run["events"].append(time.time())
                            else:
                                cam.step(step)
                    finally:
                        run["end"], run["published"] = time.time(), cam.count
                if cycle % 5 == 4 or cycle == cycles - 1:
                    log(f"cycle {cycle + 1}/{cycles} done")
        except NodeExited as exc:
            result.crashed = f"in {result.phases[-1]['name']} of cycle {result.phases[-1]['cycle'] + 1}: {exc}"
            log(f"the node exited: {result.crashed}")
        state["measuring"] = False
        time.sleep(1.0)  # the last frames' results arrive
        if not result.crashed:
            after = _settled_counters(latest)
            result.node = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in COUNTERS}
        result.published = cam.published
    finally:
        state["stop"] = True
        result.exit_code = _stop(proc, executor, probe, context)
    return result


def _sample_memory_wall(pid: int, into: List[tuple], state) -> None:
    while not state["stop"] and state["measuring"]:
        rss = _rss_mib(pid)
        if rss is not None:
            into.append((time.time(), rss))
        time.sleep(1.0)


def format_soak(fig: Dict) -> str:
    """The soak's figures as a table, one row per phase (all its runs), and the verdict."""
    v, m, node = fig["verdict"], fig["memory"], fig["node"]
    lines = [
        f"node under faults: {fig['source']} at {fig['fps']:g} FPS, {fig['cycles']} cycles of {fig['cycle_s']:g} s "
        f"({fig['minutes']} min)",
        f"  {'phase':<18}{'runs':>5}{'published':>10}{'received':>9}{'processed':>10}{'dropped':>8}{'failed':>7}"
        f"{'correct':>8}{'p50 ms':>8}{'p99 ms':>8}{'recovery':>10}{'RSS MiB':>9}  diagnostics",
    ]
    for r in fig["phases"]:
        recovery = "-" if not r["events"] else f"{r['recovery_max_s']}s" + (" !" if r["recovery_missing"] else "")
        lines.append(
            f"  {r['phase']:<18}{r['runs']:>5}{r['published']:>10}{r['received']:>9}{r['processed']:>10}"
            f"{r['dropped']:>8}{r['failed']:>7}{r['correct']:>8}{_text(r['latency_p50_ms']):>8}"
            f"{_text(r['latency_p99_ms']):>8}{recovery:>10}{_text(r['rss_max_mib']):>9}  {r['diagnostics']}"
            + (f" ({r['diagnostics_message']})" if r["diagnostics_message"] else "")
        )
        for why, n in r["not_correct"].items():
            lines.append(f"      not correct: {why} ({n})")
    lines += [
        f"  node: {', '.join(f'{k} {node[k]}' for k in COUNTERS)}; results {fig['results']}, with a stamp "
        f"not published {fig['unpublished_stamps']}; exit code {fig['node']['exit_code']}",
        f"  memory (RSS) {m['rss_start_mib']} -> {m['rss_end_mib']} MiB; highest in the warm-up "
        f"{m['rss_warmup_max_mib']}, in as many cycles at the end {m['rss_last_max_mib']}: growth {m['rss_growth_mib']} MiB",
        f"  verdict: {'PASS' if v['passed'] else 'FAIL'} (recovery within {v['criteria']['recovery_s']:g} s, alive, "
        f"exit code 0, every result of its stamp's frame, growth <= {v['criteria']['rss_growth_limit_mib']:g} MiB)",
    ]
    lines += [f"    {text}" for text in v["failures"]]
    return "\n".join(lines)


def soak_markdown(fig: Dict, command: str = "") -> str:
    """The soak's figures as a short Markdown report (beside the JSON in docs/bench/)."""
    v, m = fig["verdict"], fig["memory"]
    lines = [
        f"# The node under faults: {fig['minutes']} minutes",
        "",
        f"`{command}`" if command else "",
        "",
        f"{fig['source']} at {fig['fps']:g} FPS, {fig['cycles']} cycles of {fig['cycle_s']:g} s; each cycle runs the "
        "phases below in this order (normal phases between the faults). Counts are the node's own "
        f"(`/diagnostics`, every {SOAK_DIAGNOSTICS_S:g} s); latency is the image stamp to the HumanArray's arrival; "
        f"recovery is a fault's end to the first correct result of a later frame (at most {RECOVERY_S:g} s).",
        "",
        "| phase | what happens | runs | published | received | processed | dropped | failed | correct "
        "| latency p50 / p99 (ms) | recovery max (s) | RSS max (MiB) | diagnostics |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in fig["phases"]:
        recovery = "" if not r["events"] else f"{r['recovery_max_s']}" + (" (missing)" if r["recovery_missing"] else "")
        lines.append(
            f"| {r['phase']} | {r['what']} | {r['runs']} | {r['published']} | {r['received']} | {r['processed']} "
            f"| {r['dropped']} | {r['failed']} | {r['correct']} of {r['results']} | {_text(r['latency_p50_ms'])} / "
            f"{_text(r['latency_p99_ms'])} | {recovery} | {_text(r['rss_max_mib'])} | {r['diagnostics']} |"
        )
    lines += [
        "",
        f"Memory (RSS): {m['rss_start_mib']} -> {m['rss_end_mib']} MiB; highest per minute "
        f"{', '.join(f'{x:g}' for x in m['rss_max_per_minute_mib'])}; growth after the warm-up "
        f"(the highest of the last {v['criteria']['rss_growth_after_cycles']} cycles less the highest of the first "
        f"{v['criteria']['rss_growth_after_cycles']}) {m['rss_growth_mib']} MiB "
        f"(at most {v['criteria']['rss_growth_limit_mib']:g}). Exit code on SIGINT: {fig['node']['exit_code']}. "
        f"Results with a stamp that was not published: {fig['unpublished_stamps']}.",
        "",
        f"**Verdict: {'pass' if v['passed'] else 'FAIL'}** ({', '.join(k for k, ok in v['checks'].items() if ok)} "
        f"held{'; failed: ' + '; '.join(v['failures']) if v['failures'] else ''}).",
        "",
    ]
    return "\n".join(lines)


def _text(value) -> str:
    return "-" if value is None else f"{value:g}"
