"""Pipeline results -> ROS 2 messages, written once for the rclpy node and the bag tool.

Nothing here imports rclpy. A :class:`MessageFactory` builds messages by their ROS type name
(``"hmdiff_msgs/msg/HumanArray"``) either as ``rosbags`` dataclasses (bag tool, tests: real
ROS 2 definitions and CDR) or as rclpy message classes (the node); every function below
fills every field, so both kinds are complete.

Published types: ``hmdiff_msgs/HumanArray`` (per frame) of ``hmdiff_msgs/Human``;
``visualization_msgs/MarkerArray`` (mesh, skeleton, joints, id text per person, after a
DELETEALL so people who left disappear); ``sensor_msgs/Image`` (debug overlay, ``rgb8``);
``geometry_msgs/TransformStamped`` (one body frame per tracked person, optionally one per
joint). All carry the input image's header.

Inputs, for both as well: camera images to RGB (:func:`image_to_rgb`, numpy and OpenCV
only) and the CameraInfo ``K`` that fits an image (:func:`intrinsics_for_image`).
"""

from __future__ import annotations

import array
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, JOINT_NAMES, SKELETON_EDGES
from hmdiff_ros.pipeline.io import PERSON_COLOURS

# hmdiff_msgs' definitions: installed with the package (setup.py copies msg/msg/*.msg there),
# else read from the source tree (editable and colcon --symlink-install builds)
INSTALLED_MSG_DIR = Path(__file__).resolve().parent / "msg"
MSG_DIR = Path(__file__).resolve().parents[2] / "msg" / "msg"
MSG_PACKAGE = "hmdiff_msgs"
HUMAN_ARRAY = f"{MSG_PACKAGE}/msg/HumanArray"
HUMAN = f"{MSG_PACKAGE}/msg/Human"
# per-person colours (RGBA, 0..1): the debug overlay's palette (BGR, 0..255), picked by track id;
# opaque, because RViz draws translucent markers without depth writes (a mesh's far side then
# shows through its near side in patches)
PERSON_RGBA = tuple((r / 255.0, g / 255.0, b / 255.0, 1.0) for b, g, r in PERSON_COLOURS)
MESH_RESOLUTIONS = ("none", "coarse", "full")
# ROS4HRI (REP-155): the list of tracked bodies, published on /humans/bodies/tracked
HRI_IDS_LIST = "hri_msgs/msg/IdsList"
HRI_IDS_LIST_DEFINITION = "std_msgs/Header header\nstring[] ids\n"
HRI_TRACKED_TOPIC = "/humans/bodies/tracked"


def message_definitions(msg_dir: "str | Path | None" = None) -> Dict[str, str]:
    """``{"hmdiff_msgs/msg/Human": text, ...}`` from the ``.msg`` files in ``msg_dir``, by
    default the installed copy (:data:`INSTALLED_MSG_DIR`) or else the source tree's
    (:data:`MSG_DIR`)."""
    dirs = [Path(msg_dir)] if msg_dir is not None else [INSTALLED_MSG_DIR, MSG_DIR]
    files = next((found for d in dirs if (found := sorted(d.glob("*.msg")))), [])
    if not files:
        raise FileNotFoundError(f"no .msg files in {' or '.join(repr(str(d)) for d in dirs)}")
    return {f"{MSG_PACKAGE}/msg/{f.stem}": f.read_text() for f in files}


def register_types(typestore) -> None:
    """Add our message types to a ``rosbags`` typestore (idempotent)."""
    from rosbags.typesys import get_types_from_msg

    types: Dict = {}
    for name, text in message_definitions().items():
        types.update(get_types_from_msg(text, name))
    types.update(get_types_from_msg(HRI_IDS_LIST_DEFINITION, HRI_IDS_LIST))
    typestore.register(types)


def typestore_for(distro: str = "humble"):
    """A ``rosbags`` typestore of ROS 2 ``distro`` (humble or jazzy) with our types."""
    from rosbags.typesys import Stores, get_typestore

    stores = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ValueError(f"distro must be one of {sorted(stores)}, got {distro!r}")
    store = get_typestore(stores[distro])
    register_types(store)
    return store


class MessageFactory:
    """``make(type_name, **fields)`` and ``floats``/``bytes`` for primitive arrays, for either
    rosbags (numpy arrays) or rclpy (``array.array``/``bytes``, which its setters accept)."""

    def __init__(self, cls_of: Callable[[str], type], rclpy_style: bool) -> None:
        self._cls_of, self.rclpy_style, self._cache = cls_of, rclpy_style, {}

    @classmethod
    def for_rosbags(cls, typestore) -> "MessageFactory":
        return cls(lambda name: typestore.types[name], rclpy_style=False)

    @classmethod
    def for_rclpy(cls) -> "MessageFactory":
        def cls_of(name: str):
            pkg, kind, msg = name.split("/")
            return getattr(importlib.import_module(f"{pkg}.{kind}"), msg)

        return cls(cls_of, rclpy_style=True)

    def make(self, name: str, **fields):
        if name not in self._cache:
            self._cache[name] = self._cls_of(name)
        return self._cache[name](**fields)

    def floats(self, values, dtype: str = "float32"):
        values = np.asarray(values, dtype=dtype).ravel()
        if self.rclpy_style:
            return array.array("f" if dtype == "float32" else "d", values.tolist())
        return values

    def uint8s(self, data: np.ndarray):
        data = np.ascontiguousarray(data, dtype=np.uint8).ravel()
        return data.tobytes() if self.rclpy_style else data

    def fixed_floats(self, values, dtype: str = "float32"):
        """A fixed-size primitive array (``float32[4]``): numpy for both (rclpy accepts it)."""
        return np.asarray(values, dtype=dtype).ravel()


def header(f: MessageFactory, sec: int, nanosec: int, frame_id: str):
    return f.make(
        "std_msgs/msg/Header",
        stamp=f.make("builtin_interfaces/msg/Time", sec=int(sec), nanosec=int(nanosec)),
        frame_id=str(frame_id),
    )


def _point(f: MessageFactory, p) -> object:
    return f.make("geometry_msgs/msg/Point", x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _points(f: MessageFactory, pts: np.ndarray) -> List:
    return [_point(f, p) for p in np.asarray(pts, dtype=np.float64)]


def body_rotation(joints: np.ndarray) -> np.ndarray:
    """Rotation ``(3, 3)`` whose columns are the body axes in the camera frame (REP-103 body
    convention: x forward, y left, z up), from the hips and the pelvis-neck line."""
    j = np.asarray(joints, dtype=np.float64)
    left = j[JOINT_INDEX["left_hip"]] - j[JOINT_INDEX["right_hip"]]
    up = j[JOINT_INDEX["neck"]] - j[JOINT_INDEX["pelvis"]]
    y = left / max(np.linalg.norm(left), 1e-9)
    z = up - y * (up @ y)
    z = z / max(np.linalg.norm(z), 1e-9)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def quaternion(rot: np.ndarray) -> np.ndarray:
    """``(x, y, z, w)`` of a rotation matrix (Shepperd's method)."""
    m = np.asarray(rot, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def _pose(f: MessageFactory, position, rot) -> object:
    q = quaternion(rot)
    return f.make(
        "geometry_msgs/msg/Pose",
        position=_point(f, position),
        orientation=f.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]),
    )


def _person_id(p, index: int) -> int:
    return int(p.track_id) if getattr(p, "track_id", -1) >= 0 else index


def human_msg(f: MessageFactory, p, index: int, with_vertices: bool = False):
    """``hmdiff_msgs/Human`` of one :class:`~hmdiff_ros.pipeline.pipeline.PersonResult`."""
    names = list(p.joint_names)
    return f.make(
        HUMAN,
        id=int(p.track_id),
        score=float(p.score),
        box=f.fixed_floats(p.box),
        joint_names=names,
        joints=_points(f, p.joints),
        joint_confidence=f.floats(p.visibility),
        joint_std=f.floats(p.joint_std),
        keypoints_2d=f.floats(p.joints_uv),
        root_pose=_pose(f, p.joints[JOINT_INDEX["pelvis"]], body_rotation(p.joints)),
        mesh_topology=f"anny_coarse_{len(p.coarse_vertices)}" if with_vertices else "",
        coarse_vertices=_points(f, p.coarse_vertices) if with_vertices else [],
    )


def hri_ids_msg(f: MessageFactory, hdr, people: Sequence):
    """``hri_msgs/IdsList`` of the people's body ids (REP-155): ``<id>`` such that
    ``<prefix>_<id>`` is the person's TF frame (:func:`transforms`; prefix ``body`` gives
    REP-155's ``body_<id>``)."""
    return f.make(HRI_IDS_LIST, header=hdr, ids=[str(_person_id(p, i)) for i, p in enumerate(people)])


def human_array_msg(f: MessageFactory, hdr, people: Sequence, with_vertices: bool = False):
    return f.make(HUMAN_ARRAY, header=hdr, humans=[human_msg(f, p, i, with_vertices) for i, p in enumerate(people)])


def _marker(
    f: MessageFactory,
    hdr,
    ns: str,
    mid: int,
    kind: int,
    action: int = 0,
    points=(),
    scale=(1, 1, 1),
    rgba=(1, 1, 1, 1),
    text: str = "",
    position=(0, 0, 0),
    lifetime_s: float = 0.0,
):
    lifetime_s = max(0.0, float(lifetime_s))  # Duration.nanosec is unsigned
    sec = int(lifetime_s)
    fields = dict(
        header=hdr,
        ns=ns,
        id=int(mid),
        type=int(kind),
        action=int(action),
        pose=_pose(f, position, np.eye(3)),
        scale=f.make("geometry_msgs/msg/Vector3", x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
        color=f.make("std_msgs/msg/ColorRGBA", r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3])),
        lifetime=f.make("builtin_interfaces/msg/Duration", sec=sec, nanosec=int((lifetime_s - sec) * 1e9)),
        frame_locked=False,
        points=list(points),
        colors=[],
        text=text,
        mesh_resource="",
        mesh_use_embedded_materials=False,
    )
    fields.update(_texture_marker_fields(f))
    return f.make("visualization_msgs/msg/Marker", **fields)


def _fields_of(f: MessageFactory, name: str) -> tuple:
    cls = f._cls_of(name)
    slots = getattr(cls, "__slots__", None) or getattr(cls, "__dataclass_fields__", {})
    return tuple(s.lstrip("_") for s in slots)


def _texture_marker_fields(f: MessageFactory) -> Dict:
    """Fields newer Markers have (textures, ``uv_coordinates``, ``mesh_file``: Humble and
    later; older definitions and ROS 1 lack them), empty; built once per factory (markers
    only read them)."""
    key = "__texture_marker_fields__"
    if key not in f._cache:
        f._cache[key] = _build_texture_marker_fields(f)
    return f._cache[key]


def _build_texture_marker_fields(f: MessageFactory) -> Dict:
    have = _fields_of(f, "visualization_msgs/msg/Marker")
    out: Dict = {}
    if "texture_resource" in have:
        out.update(
            texture_resource="",
            uv_coordinates=[],
            texture=f.make(
                "sensor_msgs/msg/CompressedImage",
                header=f.make(
                    "std_msgs/msg/Header", stamp=f.make("builtin_interfaces/msg/Time", sec=0, nanosec=0), frame_id=""
                ),
                format="",
                data=f.uint8s(np.zeros(0, np.uint8)),
            ),
            mesh_file=f.make("visualization_msgs/msg/MeshFile", filename="", data=f.uint8s(np.zeros(0, np.uint8))),
        )
    return out


# visualization_msgs/Marker constants
ARROW, CUBE, SPHERE, CYLINDER, LINE_STRIP, LINE_LIST, CUBE_LIST, SPHERE_LIST, POINTS, TEXT_VIEW_FACING = range(10)
TRIANGLE_LIST = 11
ADD, DELETE, DELETEALL = 0, 2, 3


def marker_array_msg(
    f: MessageFactory,
    hdr,
    people: Sequence,
    faces_coarse: np.ndarray,
    faces_full: np.ndarray | None = None,
    mesh: str = "coarse",
    lifetime_s: float = 0.5,
):
    """Per person (namespace ``hmdiff``, id ``4 * person + k``): the mesh as a TRIANGLE_LIST
    (``mesh``: none, coarse or full), the skeleton as a LINE_LIST, the joints as a
    SPHERE_LIST and the track id as text; the first marker is a DELETEALL."""
    if mesh not in MESH_RESOLUTIONS:
        raise ValueError(f"mesh must be one of {MESH_RESOLUTIONS}, got {mesh!r}")
    markers = [_marker(f, hdr, "", 0, 0, action=DELETEALL)]
    for i, p in enumerate(people):
        pid = _person_id(p, i)
        rgba = PERSON_RGBA[pid % len(PERSON_RGBA)]
        if mesh != "none":
            full = mesh == "full" and p.vertices is not None and faces_full is not None
            verts, faces = (p.vertices, faces_full) if full else (p.coarse_vertices, faces_coarse)
            tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces).reshape(-1)]
            markers.append(
                _marker(
                    f,
                    hdr,
                    "hmdiff/mesh",
                    4 * pid,
                    TRIANGLE_LIST,
                    points=_points(f, tri),
                    rgba=rgba,
                    lifetime_s=lifetime_s,
                )
            )
        seg = [p.joints[JOINT_INDEX[n]] for edge in SKELETON_EDGES for n in edge]
        markers.append(
            _marker(
                f,
                hdr,
                "hmdiff/skeleton",
                4 * pid + 1,
                LINE_LIST,
                points=_points(f, seg),
                scale=(0.02, 0, 0),
                rgba=(1, 1, 1, 1),
                lifetime_s=lifetime_s,
            )
        )
        markers.append(
            _marker(
                f,
                hdr,
                "hmdiff/joints",
                4 * pid + 2,
                SPHERE_LIST,
                points=_points(f, p.joints),
                scale=(0.04, 0.04, 0.04),
                rgba=rgba[:3] + (1.0,),
                lifetime_s=lifetime_s,
            )
        )
        head = p.joints[JOINT_INDEX["head_top"]] + np.array([0.0, -0.15, 0.0])  # above the head (y is down)
        markers.append(
            _marker(
                f,
                hdr,
                "hmdiff/id",
                4 * pid + 3,
                TEXT_VIEW_FACING,
                scale=(0, 0, 0.12),
                rgba=(1, 1, 1, 1),
                text=f"person {pid}",
                position=head,
                lifetime_s=lifetime_s,
            )
        )
    return f.make("visualization_msgs/msg/MarkerArray", markers=markers)


def image_msg(f: MessageFactory, hdr, rgb: np.ndarray):
    """``sensor_msgs/Image`` ``rgb8`` of an ``(H, W, 3)`` uint8 image."""
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


def transforms(f: MessageFactory, hdr, people: Sequence, joints: bool = False, prefix: str = "hmdiff_body") -> List:
    """``geometry_msgs/TransformStamped``: ``<prefix>_<id>`` (pelvis, body axes) under the
    image frame for each person, and ``<prefix>_<id>/<joint>`` under it when ``joints``."""
    out = []
    for i, p in enumerate(people):
        pid, rot = _person_id(p, i), body_rotation(p.joints)
        pelvis = p.joints[JOINT_INDEX["pelvis"]]
        body = f"{prefix}_{pid}"
        out.append(_transform(f, hdr, hdr.frame_id, body, pelvis, rot))
        if joints:
            for name, xyz in zip(JOINT_NAMES, p.joints, strict=True):
                out.append(_transform(f, hdr, body, f"{body}/{name}", rot.T @ (xyz - pelvis), np.eye(3)))
    return out


def rotation_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """``(3, 3)`` rotation of a quaternion (normalised here; a zero quaternion is an error)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) is not a rotation")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rigid_from_transform(tr) -> tuple:
    """``(R, t)`` of a ``geometry_msgs/Transform``: a point ``p`` in the child frame is
    ``R @ p + t`` in the parent frame (TF's convention)."""
    r, v = tr.rotation, tr.translation
    return rotation_from_quaternion(r.x, r.y, r.z, r.w), np.array([v.x, v.y, v.z], dtype=np.float64)


def people_in_frame(people: Sequence, R: np.ndarray, t: np.ndarray) -> List:
    """The people with every 3D quantity moved by ``x -> R @ x + t`` (into a target frame);
    boxes, pixels and per-joint spreads (distances) are unchanged."""

    def move(x):
        return None if x is None else np.asarray(x, dtype=np.float64) @ R.T + t

    return [
        dataclasses.replace(
            p,
            joints=move(p.joints),
            coarse_vertices=move(p.coarse_vertices),
            vertices=move(p.vertices),
            translation=move(p.translation),
        )
        for p in people
    ]


def _transform(f: MessageFactory, hdr, parent: str, child: str, t, rot):
    q = quaternion(rot)
    h = f.make("std_msgs/msg/Header", stamp=hdr.stamp, frame_id=parent)
    return f.make(
        "geometry_msgs/msg/TransformStamped",
        header=h,
        child_frame_id=child,
        transform=f.make(
            "geometry_msgs/msg/Transform",
            translation=f.make("geometry_msgs/msg/Vector3", x=float(t[0]), y=float(t[1]), z=float(t[2])),
            rotation=f.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]),
        ),
    )


# Raw ``sensor_msgs/Image`` encodings -> (channels, bytes per channel, channel order). The
# generic OpenCV encodings (8UC3, ...) are read as OpenCV reads them: 3 channels BGR, 4 BGRA.
# ``yuv422`` is UYVY and ``yuv422_yuy2`` YUYV (REP-118 names; ``uyvy``/``yuyv`` are the newer
# spellings): two bytes per pixel, chroma shared by pixel pairs, so the width must be even.
_RAW_LAYOUTS = {
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
ENCODINGS = tuple(_RAW_LAYOUTS)


def image_to_rgb(msg) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` image from a ``sensor_msgs/Image`` or ``CompressedImage``
    (rosbags or rclpy message), with numpy and OpenCV only.

    Raw images: every encoding in :data:`ENCODINGS`, rows of ``step`` bytes (padding after
    ``width`` pixels is skipped), 16-bit data in the byte order ``is_bigendian`` gives and scaled
    to 8 bits by 1/257 (as :func:`~hmdiff_ros.pipeline.io.to_rgb8` does). Compressed images:
    whatever ``cv2.imdecode`` reads (JPEG, PNG, ...; the image_transport ``format`` strings such as
    ``"bgr8; jpeg compressed bgr8"`` only describe the payload). Bayer, ``compressedDepth`` and
    other encodings, and data of the wrong length, raise ``ValueError`` naming the problem.
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return _compressed_to_rgb(msg)
    enc = str(getattr(msg, "encoding", ""))
    if enc not in _RAW_LAYOUTS:
        raise ValueError(f"image encoding '{enc}' is not supported; expected one of {list(ENCODINGS)}")
    channels, depth, order = _RAW_LAYOUTS[enc]
    name = f"{enc} image"
    try:
        height, width, step = (int(getattr(msg, k)) for k in ("height", "width", "step"))
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"cannot decode the {name}: height, width and step must be integers") from None
    if min(height, width, step) < 0:
        raise ValueError(f"cannot decode the {name}: negative size {width}x{height} or step {step}")
    row = width * channels * depth  # bytes of pixels per row
    if step < row:
        raise ValueError(f"cannot decode the {name}: step {step} is shorter than a row of {width} pixels ({row} bytes)")
    if order in ("uyvy", "yuyv") and width % 2:
        raise ValueError(f"cannot decode the {name}: its width must be even, got {width}")
    data = _uint8_data(msg.data, name)
    if data.size != step * height:
        raise ValueError(
            f"cannot decode the {name}: {width}x{height} with step {step} needs {step * height} "
            f"bytes of data, got {data.size}"
        )
    if width == 0 or height == 0:
        raise ValueError(f"cannot decode the {name}: it is empty ({width}x{height})")
    rows = np.ascontiguousarray(data.reshape(height, step)[:, :row])  # (H, W * C * depth) bytes, padding dropped
    image = rows.view(np.uint16 if depth == 2 else np.uint8).reshape(height, width, channels)  # (H, W, C)
    if depth == 2 and bool(getattr(msg, "is_bigendian", 0)) != (sys.byteorder == "big"):
        image = image.byteswap()
    return _ordered_to_rgb8(image, order, name)


def _ordered_to_rgb8(image: np.ndarray, order: str, name: str) -> np.ndarray:
    """RGB uint8 of an ``(H, W, C)`` image whose channels are in ``order``."""
    import cv2

    from hmdiff_ros.pipeline.io import to_rgb8

    if order in ("uyvy", "yuyv"):
        code = cv2.COLOR_YUV2BGR_UYVY if order == "uyvy" else cv2.COLOR_YUV2BGR_YUYV
        image = cv2.cvtColor(image, code)  # (H, W, 3) BGR
    elif order in ("rgb", "rgba"):
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if order == "rgb" else cv2.COLOR_RGBA2BGRA)
    return to_rgb8(image, name)


def _compressed_to_rgb(msg) -> np.ndarray:
    import cv2

    from hmdiff_ros.pipeline.io import to_rgb8

    fmt = str(getattr(msg, "format", ""))
    name = f"compressed image (format '{fmt}')"
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ValueError(f"cannot decode the {name}: compressedDepth images are depth maps, not camera images")
    data = _uint8_data(msg.data, name)
    if data.size == 0:
        raise ValueError(f"cannot decode the {name}: it has no data")
    try:  # ANYDEPTH: 16-bit PNGs keep 16 bits here and are scaled like mono16 by to_rgb8
        image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        raise ValueError(f"cannot decode the {name}: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise ValueError(f"cannot decode the {name}: not a format OpenCV can decode, or corrupt data")
    return to_rgb8(image, name)


def _uint8_data(data, name: str) -> np.ndarray:
    """A message's ``uint8[] data`` (numpy array, bytes, ``array.array`` or a list) as a 1-D
    uint8 array, without copying where it can."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        values = np.asarray(data)
    except (TypeError, ValueError):
        raise ValueError(f"cannot decode the {name}: its data is not a byte array") from None
    if values.dtype == np.uint8:
        return values.reshape(-1)
    if values.size == 0:
        return np.zeros(0, np.uint8)
    if values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
        raise ValueError(f"cannot decode the {name}: its data is not a byte array (dtype {values.dtype})")
    return values.astype(np.uint8).reshape(-1)


def camera_info_msg(f: MessageFactory, hdr, K: np.ndarray, width: int, height: int):
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
    """``(K, None)`` when the ``sensor_msgs/CameraInfo`` ``info`` (rosbags or rclpy) describes a
    ``width`` x ``height`` image, else ``(None, reason)``: the caller then falls back to the
    field of view and reports ``reason`` (one line). ``info`` None gives ``(None, None)``.

    As ``image_geometry`` does, ``K`` is moved into the region of interest and divided by the
    binning, and the image must then be ``roi.width / binning_x`` x ``roi.height / binning_y``
    (the full ``width`` x ``height`` when the ROI is all zeros). A CameraInfo whose width and
    height are both 0 does not say its size: its ``K`` is used if it is plausible for the image.
    An all-zero ``K`` (uncalibrated) and an implausible one
    (:func:`~hmdiff_ros.camera.check_intrinsics`: finite, positive focal lengths, sane fields of
    view, principal point within the image plus a margin) are not used.
    """
    from hmdiff_ros.camera import check_intrinsics

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
