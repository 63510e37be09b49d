"""Camera messages <-> numpy, both ways, in the manner of cv_bridge.

The node and the bag tool take their inputs through here: ``sensor_msgs/Image`` and
``CompressedImage`` -> RGB uint8 (:func:`image_to_rgb`, numpy and OpenCV only; the node's
:class:`ImageReader` goes through cv_bridge where it imports, to the same image),
``sensor_msgs/CameraInfo`` -> the ``K`` that fits an image (:func:`intrinsics_for_image`,
:func:`choose_intrinsics`) and ``vision_msgs/Detection2DArray`` -> boxes
(:func:`detection_boxes`); and the way back for images and camera infos (:func:`image_msg`,
:func:`camera_info_msg`).

Nothing here imports rclpy (cv_bridge is imported by :meth:`ImageReader.create` only):
messages are read by their fields, so rclpy messages and ``rosbags`` dataclasses both work,
and built through a :class:`~hmdiff_ros.ros.convert.MessageFactory` ``f``. Images that cannot be decoded raise
:class:`~hmdiff_ros.image.ImageError` (a ``ValueError``) naming the problem.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Callable, List, NamedTuple, Tuple

import cv2
import numpy as np

from hmdiff_ros.camera import check_intrinsics, intrinsics_from_fov
from hmdiff_ros.errors import one_line
from hmdiff_ros.image import ImageError, to_rgb8

# Raw ``sensor_msgs/Image`` encodings -> (channels, bytes per channel, channel order). The
# generic OpenCV encodings (8UC3, ...) are read as OpenCV reads them: 3 channels BGR, 4 BGRA.
# ``yuv422`` is UYVY and ``yuv422_yuy2`` YUYV (REP-118 names; ``uyvy``/``yuyv`` are the newer
# spellings): two bytes per pixel, chroma shared by pixel pairs, so the width must be even.
RAW_LAYOUTS = {
    "rgb8": (3, 1, "rgb"),
    "bgr8": (3, 1, "bgr"),
    "rgba8": (4, 1, "rgba"),
    "bgra8": (4, 1, "bgra"),
    "mono8": (1, 1, "gray"),
    "8UC1": (1, 1, "gray"),
    "8UC3": (3, 1, "bgr"),
    "8UC4": (4, 1, "bgra"),
    "rgb16": (3, 2, "rgb"),
    "bgr16": (3, 2, "bgr"),
    "rgba16": (4, 2, "rgba"),
    "bgra16": (4, 2, "bgra"),
    "mono16": (1, 2, "gray"),
    "16UC1": (1, 2, "gray"),
    "16UC3": (3, 2, "bgr"),
    "16UC4": (4, 2, "bgra"),
    "yuv422": (2, 1, "uyvy"),
    "uyvy": (2, 1, "uyvy"),
    "yuv422_yuy2": (2, 1, "yuyv"),
    "yuyv": (2, 1, "yuyv"),
}
ENCODINGS = tuple(RAW_LAYOUTS)
# OpenCV conversions of the channel orders to the BGR(A) that to_rgb8 reads
_TO_BGR = {
    "uyvy": cv2.COLOR_YUV2BGR_UYVY,
    "yuyv": cv2.COLOR_YUV2BGR_YUYV,
    "rgb": cv2.COLOR_RGB2BGR,
    "rgba": cv2.COLOR_RGBA2BGRA,
}


# ---- images ------------------------------------------------------------------------------------
def image_to_rgb(msg) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` image from a ``sensor_msgs/Image`` or ``CompressedImage``.

    Raw images: every encoding in :data:`ENCODINGS`, rows of ``step`` bytes (padding after
    ``width`` pixels is skipped), 16-bit data in the byte order ``is_bigendian`` gives and scaled
    to 8 bits by 1/257 (as :func:`~hmdiff_ros.image.to_rgb8` does). Compressed images:
    whatever ``cv2.imdecode`` reads (JPEG, PNG, ...; the image_transport ``format`` strings such as
    ``"bgr8; jpeg compressed bgr8"`` only describe the payload). Bayer, ``compressedDepth`` and
    other encodings, and data of the wrong length, raise :class:`~hmdiff_ros.image.ImageError`
    naming the problem. numpy and OpenCV only: the bag tool's path, and the node's where
    cv_bridge is not there (:class:`ImageReader`).
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return _compressed_to_rgb(msg)
    return _raw_to_rgb(_checked_raw(msg))


class _Raw(NamedTuple):
    """A raw image message whose size, step and data length were checked (:func:`_checked_raw`)."""

    encoding: str
    height: int
    width: int
    step: int
    data: np.ndarray  # uint8, step * height bytes
    bigendian: bool

    @property
    def name(self) -> str:
        return f"{self.encoding} image"

    def describe(self) -> str:
        """The input in words, for error messages."""
        order = ", big-endian" if self.bigendian and RAW_LAYOUTS[self.encoding][1] == 2 else ""
        return f"{self.encoding} image {self.width}x{self.height} (step {self.step}{order})"


def _checked_raw(msg) -> _Raw:
    """The fields of a raw ``sensor_msgs/Image``, checked: a supported encoding, sizes that fit
    its data; else an :class:`~hmdiff_ros.image.ImageError` naming what was expected."""
    enc = str(getattr(msg, "encoding", ""))
    if enc not in RAW_LAYOUTS:
        raise ImageError(f"image encoding '{enc}' is not supported; expected one of {list(ENCODINGS)}")
    channels, depth, order = RAW_LAYOUTS[enc]
    name = f"{enc} image"
    try:
        height, width, step = (int(getattr(msg, k)) for k in ("height", "width", "step"))
    except (TypeError, ValueError, AttributeError):
        raise ImageError(f"cannot decode the {name}: height, width and step must be integers") from None
    if min(height, width, step) < 0:
        raise ImageError(f"cannot decode the {name}: negative size {width}x{height} or step {step}")
    row = width * channels * depth  # bytes of pixels per row
    if step < row:
        raise ImageError(f"cannot decode the {name}: step {step} is shorter than a row of {width} pixels ({row} bytes)")
    if order in ("uyvy", "yuyv") and width % 2:
        raise ImageError(f"cannot decode the {name}: its width must be even, got {width}")
    data = _uint8_data(msg.data, name)
    if data.size != step * height:
        raise ImageError(
            f"cannot decode the {name}: {width}x{height} with step {step} needs {step * height} "
            f"bytes of data, got {data.size}"
        )
    if width == 0 or height == 0:
        raise ImageError(f"cannot decode the {name}: it is empty ({width}x{height})")
    return _Raw(enc, height, width, step, data, bool(getattr(msg, "is_bigendian", 0)))


def _raw_to_rgb(raw: _Raw) -> np.ndarray:
    channels, depth, order = RAW_LAYOUTS[raw.encoding]
    row = raw.width * channels * depth
    rows = np.ascontiguousarray(raw.data.reshape(raw.height, raw.step)[:, :row])  # (H, W * C * depth), no padding
    image = rows.view(np.uint16 if depth == 2 else np.uint8).reshape(raw.height, raw.width, channels)  # (H, W, C)
    if depth == 2 and raw.bigendian != (sys.byteorder == "big"):
        image = image.byteswap()
    if order in _TO_BGR:
        image = cv2.cvtColor(image, _TO_BGR[order])  # (H, W, 3) BGR or (H, W, 4) BGRA
    return to_rgb8(image, raw.name)


def _compressed_to_rgb(msg) -> np.ndarray:
    fmt = str(getattr(msg, "format", ""))
    name = f"compressed image (format '{fmt}')"
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageError(f"cannot decode the {name}: compressedDepth images are depth maps, not camera images")
    data = _uint8_data(msg.data, name)
    if data.size == 0:
        raise ImageError(f"cannot decode the {name}: it has no data")
    try:  # ANYDEPTH: 16-bit PNGs keep 16 bits here and are scaled like mono16 by to_rgb8
        image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        raise ImageError(f"cannot decode the {name}: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise ImageError(f"cannot decode the {name}: not a format OpenCV can decode, or corrupt data")
    return to_rgb8(image, name)


def _uint8_data(data, name: str) -> np.ndarray:
    """A message's ``uint8[] data`` (numpy array, bytes, ``array.array`` or a list) as a 1-D
    uint8 array, without copying where it can."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        values = np.asarray(data)
    except (TypeError, ValueError):
        raise ImageError(f"cannot decode the {name}: its data is not a byte array") from None
    if values.dtype == np.uint8:
        return values.reshape(-1)
    if values.size == 0:
        return np.zeros(0, np.uint8)
    if values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
        raise ImageError(f"cannot decode the {name}: its data is not a byte array (dtype {values.dtype})")
    return values.astype(np.uint8).reshape(-1)


# ---- cv_bridge -----------------------------------------------------------------------------------
# What cv_bridge's imgmsg_to_cv2 is given, per encoding: (the encoding it is told, the
# desired_encoding asked for). The colour and mono encodings come back as rgb8 (16 bits scaled by
# 255/65535 and rounded, as to_rgb8 does); OpenCV's generic ones (cv_bridge will not colour-convert
# them) as they are, then read as the numpy path reads them (gray, BGR, BGRA). Humble's cv_bridge
# knows uyvy and yuyv by their REP-118 names yuv422 and yuv422_yuy2.
CV_BRIDGE_REQUESTS = {
    **{enc: (enc, "rgb8") for enc in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2")},
    **{enc: (enc, "rgb8") for enc in ("rgb16", "bgr16", "rgba16", "bgra16", "mono16")},
    **{enc: (enc, "passthrough") for enc in ("8UC1", "8UC3", "8UC4", "16UC1", "16UC3", "16UC4")},
    "uyvy": ("yuv422", "rgb8"),
    "yuyv": ("yuv422_yuy2", "rgb8"),
}


def _one_line(exc: BaseException) -> str:
    """The exception's type and its message on one line (cv_bridge's types tell what failed)."""
    name, text = type(exc).__name__, one_line(exc, 160)  # one_line gives the name for an empty message
    return name if text == name else f"{name}: {text}"


def _cv_bridge_skip(raw: _Raw) -> str | None:
    """Why cv_bridge is not given this (checked) image, or None: the inputs its Python part is
    known to misread or fail on."""
    channels, depth, _ = RAW_LAYOUTS[raw.encoding]
    if raw.step % (channels * depth):
        # imgmsg_to_cv2 takes step // pixel size pixels a row: the rows come out shifted
        return f"step {raw.step} is not a whole number of {channels * depth}-byte pixels"
    if depth == 2 and raw.bigendian != (sys.byteorder == "big") and not hasattr(np.ndarray, "newbyteorder"):
        return "cv_bridge swaps bytes with ndarray.newbyteorder, which NumPy 2 removed"
    return None


def _cv_bridge_rgb(bridge, msg, raw: _Raw) -> np.ndarray:
    """RGB uint8 of the checked raw image ``raw`` (of ``msg``) through ``bridge.imgmsg_to_cv2``;
    whatever cv_bridge raises, or an image of another shape, becomes an ImageError (one line)."""
    told, desired = CV_BRIDGE_REQUESTS[raw.encoding]
    if told != raw.encoding:  # the same fields under the name cv_bridge knows
        fields = {"height": raw.height, "width": raw.width, "step": raw.step, "is_bigendian": int(raw.bigendian)}
        msg = SimpleNamespace(encoding=told, data=msg.data, **fields)
    expected = f"an RGB uint8 image of {raw.width}x{raw.height} pixels"
    try:
        image = bridge.imgmsg_to_cv2(msg, desired_encoding=desired)
        if desired != "rgb8":
            _, _, order = RAW_LAYOUTS[raw.encoding]
            image = to_rgb8(cv2.cvtColor(image, _TO_BGR[order]) if order in _TO_BGR else image, raw.name)
    except Exception as exc:  # CvBridgeError (a TypeError), KeyError, ValueError, cv2.error, AttributeError ...
        raise ImageError(
            f"cv_bridge could not convert the {raw.describe()} to {desired}, expected {expected}: {_one_line(exc)}"
        ) from None
    shape = getattr(image, "shape", None)
    if shape != (raw.height, raw.width, 3) or getattr(image, "dtype", None) != np.uint8:
        got = f"{type(image).__name__} {shape} {getattr(image, 'dtype', '')}".strip()
        raise ImageError(f"cv_bridge gave {got} for the {raw.describe()}, expected {expected}")
    return np.ascontiguousarray(image)


def cv_bridge_to_rgb(bridge, msg) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` image of a raw ``sensor_msgs/Image`` through ``bridge`` (a
    ``cv_bridge.CvBridge``), with no fallback: the message is checked as :func:`image_to_rgb`
    checks it, and any exception from cv_bridge becomes an
    :class:`~hmdiff_ros.image.ImageError` (a ``ValueError``) of one line naming the input
    (encoding, size, step) and what was expected."""
    return _cv_bridge_rgb(bridge, msg, _checked_raw(msg))


class ImageReader:
    """The node's image conversion, ``reader(msg)`` -> RGB uint8 ``(H, W, 3)``: through cv_bridge
    (``CvBridge().imgmsg_to_cv2``) where it imports, else :func:`image_to_rgb` (numpy and OpenCV).

    Both paths accept the same messages and give the same image for every encoding in
    :data:`ENCODINGS` (the message is checked first, as :func:`image_to_rgb` checks it; an
    unsupported encoding or a size that does not fit the data raises the same
    :class:`~hmdiff_ros.image.ImageError`). cv_bridge is not given the images its Python part is
    known to misread (a ``step`` that is not a whole number of pixels: it would shift the rows;
    16-bit big-endian data under NumPy 2) and compressed images (it only calls ``cv2.imdecode``,
    without 16-bit PNGs): the numpy path converts them.

    When cv_bridge raises (an exception of any type: ``CvBridgeError``, ``KeyError`` with OpenCV 5,
    ``TypeError``, ...), the frame is not lost: the numpy path converts it, the error is counted
    (``cv_bridge_errors``) and passed to ``warn`` (one line naming the input). Only when the numpy
    path cannot convert it either does the frame fail, with an ``ImageError`` of one line giving
    both reasons; the node's worker drops and counts it (never a crash).

    ``path`` is ``"cv_bridge"`` or ``"numpy"``, ``why`` why cv_bridge is not used ("" when it is).
    """

    def __init__(self, bridge=None, why: str = "", warn: Callable[[str], None] | None = None) -> None:
        self.bridge, self.why, self.warn = bridge, why, warn
        self.path = "cv_bridge" if bridge is not None else "numpy"
        self.counts = {"cv_bridge": 0, "numpy": 0, "cv_bridge_errors": 0}
        self.last_cv_bridge_error = ""

    @classmethod
    def create(cls, warn: Callable[[str], None] | None = None) -> ImageReader:
        """A reader through cv_bridge where it imports, else the numpy path with the reason in
        :attr:`why`."""
        try:
            from cv_bridge import CvBridge

            return cls(CvBridge(), warn=warn)
        except Exception as exc:  # not installed, or built for another NumPy (ImportError, AttributeError ...)
            return cls(why=f"cv_bridge not usable: {_one_line(exc)}", warn=warn)

    def describe(self) -> str:
        """The path in words, for the node's start-up log line."""
        return "cv_bridge" if self.bridge is not None else f"numpy ({self.why})"

    def __call__(self, msg) -> np.ndarray:
        if self.bridge is None or (hasattr(msg, "format") and not hasattr(msg, "encoding")):
            image = image_to_rgb(msg)
            self.counts["numpy"] += 1
            return image
        raw = _checked_raw(msg)
        if _cv_bridge_skip(raw) is None:
            try:
                image = _cv_bridge_rgb(self.bridge, msg, raw)
                self.counts["cv_bridge"] += 1
                return image
            except ImageError as exc:
                self.counts["cv_bridge_errors"] += 1
                self.last_cv_bridge_error = str(exc)[:200]
                if self.warn is not None:
                    self.warn(f"{exc}; converted with numpy instead")
                try:
                    image = _raw_to_rgb(raw)
                except Exception as numpy_exc:
                    raise ImageError(f"cannot convert the {raw.describe()}: {_one_line(numpy_exc)}; {exc}") from None
                self.counts["numpy"] += 1
                return image
        image = _raw_to_rgb(raw)
        self.counts["numpy"] += 1
        return image

    def values(self) -> List[Tuple[str, str]]:
        """``(key, value)`` pairs for ``/diagnostics``: the path, and how many frames each path
        converted."""
        c = self.counts
        return [
            ("image_path", self.describe()),
            ("images_by_cv_bridge", str(c["cv_bridge"])),
            ("images_by_numpy", str(c["numpy"])),
            ("cv_bridge_errors", str(c["cv_bridge_errors"])),
            ("last_cv_bridge_error", self.last_cv_bridge_error),
        ]


def image_msg(f, hdr, rgb: np.ndarray):
    """``sensor_msgs/Image`` ``rgb8`` of an ``(H, W, 3)`` uint8 image, built by the
    :class:`~hmdiff_ros.ros.convert.MessageFactory` ``f``."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return f.make(
        "sensor_msgs/msg/Image",
        header=hdr,
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * w,
        data=f.uint8s(rgb),
    )


# ---- camera info -------------------------------------------------------------------------------
def camera_info_msg(f, hdr, K: np.ndarray, width: int, height: int):
    """``sensor_msgs/CameraInfo`` of a distortion-free pinhole camera ``K`` (3x3), as a
    rectified camera publishes it; :func:`intrinsics_from_camera_info` reads ``K`` back."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    return f.make(
        "sensor_msgs/msg/CameraInfo",
        header=hdr,
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=f.floats(np.zeros(5), "float64"),
        k=K.ravel(),
        r=np.eye(3).ravel(),
        p=np.hstack([K, np.zeros((3, 1))]).ravel(),
        binning_x=0,
        binning_y=0,
        roi=f.make("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def _camera_info_k(msg) -> np.ndarray:
    """A CameraInfo's ``k`` (``K`` in older messages) as a flat float64 array."""
    return np.asarray(getattr(msg, "k", getattr(msg, "K", np.zeros(9))), dtype=np.float64).ravel()


def intrinsics_from_camera_info(msg) -> np.ndarray | None:
    """``K`` (3x3) from a ``sensor_msgs/CameraInfo`` (``k`` in Humble/Jazzy), or None when it
    is all zeros (an uncalibrated camera)."""
    k = _camera_info_k(msg).reshape(3, 3)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        return None
    return k


def intrinsics_for_image(info, width: int, height: int) -> Tuple[np.ndarray | None, str | None]:
    """``(K, None)`` when the ``sensor_msgs/CameraInfo`` ``info`` describes a ``width`` x
    ``height`` image, else ``(None, reason)``: the caller then falls back to the field of view
    and reports ``reason`` (one line). ``info`` None gives ``(None, None)``.

    As ``image_geometry`` does, ``K`` is moved into the region of interest and divided by the
    binning, and the image must then be ``roi.width / binning_x`` x ``roi.height / binning_y``
    (the full ``width`` x ``height`` when the ROI is all zeros). A CameraInfo whose width and
    height are both 0 does not say its size: its ``K`` is used if it is plausible for the image.
    An all-zero ``K`` (uncalibrated) and an implausible one
    (:func:`~hmdiff_ros.camera.check_intrinsics`: finite, positive focal lengths, sane fields of
    view, principal point within the image plus a margin) are not used.
    """
    if info is None:
        return None, None
    k = _camera_info_k(info)
    if k.size != 9:
        return None, f"CameraInfo K has {k.size} values, not 9"
    if not k.any():
        return None, "CameraInfo K is all zeros (uncalibrated camera)"
    K = k.reshape(3, 3).copy()
    full_w, full_h = int(getattr(info, "width", 0)), int(getattr(info, "height", 0))
    bx, by = max(1, int(getattr(info, "binning_x", 0))), max(1, int(getattr(info, "binning_y", 0)))
    roi = getattr(info, "roi", None)
    x0, y0, roi_w, roi_h = (int(getattr(roi, a, 0)) for a in ("x_offset", "y_offset", "width", "height"))
    if not (x0 or y0 or roi_w or roi_h):
        roi_w, roi_h = full_w, full_h
    K[0, 0], K[1, 1] = K[0, 0] / bx, K[1, 1] / by
    K[0, 2], K[1, 2] = (K[0, 2] - x0) / bx, (K[1, 2] - y0) / by
    expected = (roi_w // bx, roi_h // by)
    if (full_w, full_h) != (0, 0) and expected != (int(width), int(height)):
        scaled = (bx, by) != (1, 1) or (roi_w, roi_h) != (full_w, full_h)
        how = f" (ROI {roi_w}x{roi_h}, binning {bx}x{by})" if scaled else ""
        return None, f"CameraInfo is for {expected[0]}x{expected[1]} images{how} but the image is {width}x{height}"
    try:
        return check_intrinsics(K, int(width), int(height), name="CameraInfo K"), None
    except ValueError as exc:
        return None, str(exc)


def choose_intrinsics(info, width: int, height: int, hfov_deg: float) -> Tuple[np.ndarray, str | None]:
    """``(K, why)``: the CameraInfo's ``K`` where it fits a ``width`` x ``height`` image
    (:func:`intrinsics_for_image`), else the ``hfov_deg`` field of view's, with ``why`` the
    CameraInfo was not used (None when it was, or when there is none)."""
    K, why = intrinsics_for_image(info, width, height)
    return (K if K is not None else intrinsics_from_fov(width, height, hfov_deg)), why


# ---- detections --------------------------------------------------------------------------------
DETECTIONS_MAX_AGE_S = 0.5  # boxes older or newer than this (vs. the image stamp) are not used


def detection_boxes(msg, max_people: int) -> List[np.ndarray]:
    """The boxes ``(u0, v0, u1, v1)`` (pixels) of the first ``max_people`` detections of a
    ``vision_msgs/Detection2DArray`` (Humble and later; Foxy's centre has no ``position``)."""
    boxes = []
    for d in msg.detections[:max_people]:
        c, sx, sy = d.bbox.center, d.bbox.size_x, d.bbox.size_y
        cx, cy = (c.position.x, c.position.y) if hasattr(c, "position") else (c.x, c.y)
        boxes.append(np.array([cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2]))
    return boxes


def boxes_for_image(detections: Tuple | None, stamp) -> List[np.ndarray] | None:
    """The boxes of ``detections`` (``(stamp, boxes)`` of the latest Detection2DArray) when they
    belong to the image of ``stamp`` (within :data:`DETECTIONS_MAX_AGE_S`), else None."""
    if detections is None:
        return None
    det_stamp, boxes = detections
    gap = abs((stamp.sec - det_stamp.sec) + (stamp.nanosec - det_stamp.nanosec) * 1e-9)
    return boxes if gap <= DETECTIONS_MAX_AGE_S else None
