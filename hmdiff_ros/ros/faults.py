"""A soak's faults and the camera that plays them (``hmdiff bench-node --faults``).

One cycle of faults (:data:`SOAK_CYCLE`: the camera stops, changes resolution and CameraInfo,
its publishers restart, frames come out of order and twice, a burst), repeated; the criteria
the node is held to (:data:`RECOVERY_S`, the memory bounds); the camera's intrinsics at each
size (:func:`soak_intrinsics`), all distinct, so that the intrinsics a result was made with
(:func:`fit_intrinsics`) tell which the node used; and :class:`SoakCamera`, which plays the
schedule's steps against the node and records every stamp it published.
"""

from __future__ import annotations

import time
from typing import Dict

import numpy as np

from hmdiff_ros import defaults

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


class SoakCamera:
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
