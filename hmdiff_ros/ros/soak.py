"""The node under faults (``hmdiff bench-node --faults``).

:func:`run_soak` runs the node as :func:`~hmdiff_ros.ros.load.run_load` does, under a camera
with faults, in cycles of :data:`~hmdiff_ros.ros.faults.SOAK_CYCLE` (it stops, changes
resolution and CameraInfo, its publishers restart, frames come out of order and twice, a
burst), and records every result with the intrinsics it was made with, the node's diagnostics
and its memory; :class:`~hmdiff_ros.ros.soak_report.SoakResult` judges them. The verdict: a
correct result within :data:`~hmdiff_ros.ros.faults.RECOVERY_S` of each fault's end, the node
alive and exiting 0 on SIGINT, no result that is not of its stamp's frame, memory flat after
the warm-up.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Dict, List

import numpy as np

from hmdiff_ros import defaults
from hmdiff_ros.ros.faults import (
    CYCLE_S,
    SOAK_CYCLE,
    SOAK_DIAGNOSTICS_S,
    SOAK_RSS_GROWTH_MIB,
    SOAK_RSS_SHORT_MIB,
    SOAK_WARMUP_MIN,
    SoakCamera,
    fit_intrinsics,
    soak_intrinsics,
)
from hmdiff_ros.ros.load import (
    COUNTERS,
    FIRST_RESULT_S,
    WARMUP_S,
    load_frames,
    node_command,
    rss_mib,
    settled_counters,
    spin_probe,
    stop_node,
)
from hmdiff_ros.ros.soak_report import SoakResult


class NodeExited(RuntimeError):
    """The node's process ended during a soak."""


def run_soak(
    source: str = "demo",
    fps: float = 30.0,
    minutes: float = 60.0,
    params: Dict[str, object] | None = None,
    rss_limit_mib: float | None = None,
    log=None,
) -> SoakResult:
    """The node for ``minutes`` (whole cycles of :data:`~hmdiff_ros.ros.faults.SOAK_CYCLE`, at
    least two) under a camera at ``fps`` with faults, after its first result and a warm-up;
    ``source`` as for :func:`~hmdiff_ros.ros.load.run_load` (its frames letterboxed to 640x480
    and 1280x720). The node runs with the parameters ``params`` and its diagnostics every
    :data:`~hmdiff_ros.ros.faults.SOAK_DIAGNOSTICS_S`; memory growth is measured after
    :data:`~hmdiff_ros.ros.faults.SOAK_WARMUP_MIN` minutes (at most half of the run), and may be
    at most ``rss_limit_mib`` (default: :data:`~hmdiff_ros.ros.faults.SOAK_RSS_GROWTH_MIB` after
    the full warm-up, else :data:`~hmdiff_ros.ros.faults.SOAK_RSS_SHORT_MIB`)."""
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
    threading.Thread(target=lambda: spin_probe(executor, state), daemon=True).start()
    try:
        cam = SoakCamera(probe, namespace, frames, fps, keys, alive)
        del frames
        log(f"starting the node ({name}); {source} at {fps:g} FPS, {cycles} cycles of {CYCLE_S:g} s with faults")
        start = time.monotonic()
        while not result.results and time.monotonic() - start < FIRST_RESULT_S:
            cam.stream(0.5)
        if not result.results:
            raise RuntimeError(f"no result from the node within {FIRST_RESULT_S:.0f} s: {tail()}")
        cam.stream(WARMUP_S)
        before = settled_counters(latest)
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
            after = settled_counters(latest)
            result.node = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in COUNTERS}
        result.published = cam.published
    finally:
        state["stop"] = True
        result.exit_code = stop_node(proc, executor, probe, context)
    return result


def _sample_memory_wall(pid: int, into: List[tuple], state) -> None:
    while not state["stop"] and state["measuring"]:
        rss = rss_mib(pid)
        if rss is not None:
            into.append((time.time(), rss))
        time.sleep(1.0)
