"""Pipeline results -> ROS 2 messages, written once for the rclpy node and the bag tool.

Nothing here imports rclpy. A :class:`MessageFactory` builds messages by their ROS type name
(``"hmdiff_msgs/msg/HumanArray"``) either as ``rosbags`` dataclasses (bag tool, tests: real
ROS 2 definitions and CDR) or as rclpy message classes (the node); every function below
fills every field, so both kinds are complete.

:func:`frame_messages` builds everything one frame publishes, for the node and the bag
tool alike: ``hmdiff_msgs/HumanArray`` of ``hmdiff_msgs/Human``;
``visualization_msgs/MarkerArray`` (mesh, skeleton, joints, id text per person, after a
DELETEALL so people who left disappear); ``geometry_msgs/TransformStamped`` (one body frame
per person, optionally one per joint: :mod:`hmdiff_ros.ros.frames`); ``sensor_msgs/Image``
(debug overlay, ``rgb8``: :mod:`hmdiff_ros.ros.bridge`, which also reads the inputs); and
``hri_msgs/IdsList`` (REP-155). All carry the input image's stamp.
"""

from __future__ import annotations

import array
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from hmdiff_ros import defaults
from hmdiff_ros.body.joints import JOINT_INDEX, SKELETON_EDGES
from hmdiff_ros.pipeline.io import PERSON_COLOURS, overlay
from hmdiff_ros.ros import hri
from hmdiff_ros.ros.bridge import image_msg
from hmdiff_ros.ros.frames import body_id, body_rotation, people_in_frame, person_id, quaternion, transforms

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
    for name, text in hri.DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
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
    """``make(type_name, **fields)``, and ``floats``/``uint8s`` for primitive arrays, for either
    rosbags (numpy arrays) or rclpy (``array.array``: its generated setters take one of the
    field's type code as it is, where any other sequence is checked element by element)."""

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

    def type_of(self, name: str) -> type:
        """The message class of ``name`` (``"pkg/msg/Type"``)."""
        if name not in self._cache:
            self._cache[name] = self._cls_of(name)
        return self._cache[name]

    def make(self, type_name: str, /, **fields):
        """A ``type_name`` message (``"pkg/msg/Type"``); positional only, as a field may be ``name``."""
        return self.type_of(type_name)(**fields)

    def floats(self, values, dtype: str = "float32"):
        """A ``float32[]`` (or ``float64[]``) sequence."""
        values = np.ascontiguousarray(values, dtype=dtype).ravel()
        if self.rclpy_style:
            return array.array("f" if dtype == "float32" else "d", values.tobytes())
        return values

    def uint8s(self, data: np.ndarray):
        """A ``uint8[]`` sequence (image data: ``array('B')`` is taken as is by rclpy)."""
        data = np.ascontiguousarray(data, dtype=np.uint8).ravel()
        return array.array("B", data.tobytes()) if self.rclpy_style else data

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


def _pose(f: MessageFactory, position, rot) -> object:
    q = quaternion(rot)
    return f.make(
        "geometry_msgs/msg/Pose",
        position=_point(f, position),
        orientation=f.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]),
    )


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
    """``hri_msgs/IdsList`` of the people's REP-155 body ids (``b<n>``,
    :func:`~hmdiff_ros.ros.frames.body_id`): ``body_<id>`` is then the person's TF frame."""
    return f.make(HRI_IDS_LIST, header=hdr, ids=[body_id(p, i) for i, p in enumerate(people)])


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
    cls = f.type_of(name)
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
    if mesh not in defaults.MESH_RESOLUTIONS:
        raise ValueError(f"mesh must be one of {defaults.MESH_RESOLUTIONS}, got {mesh!r}")
    markers = [_marker(f, hdr, "", 0, 0, action=DELETEALL)]
    for i, p in enumerate(people):
        pid = person_id(p, i)
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
                # no space: RViz 2's text keeps the width of a space of its default 1 m character
                # height whatever the marker's scale, so "person 0" showed as "person      0"
                text=f"person_{pid}",
                position=head,
                lifetime_s=lifetime_s,
            )
        )
    return f.make("visualization_msgs/msg/MarkerArray", markers=markers)


# ---- one frame's messages ------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameOptions:
    """What :func:`frame_messages` builds for a frame: the node's parameters, the bag tool's options."""

    vertices: bool = False  # fill Human.coarse_vertices (node: publish_vertices; the bag tool always does)
    markers: bool = True  # the MarkerArray
    mesh: str = defaults.MESH_RESOLUTION  # its mesh: none, coarse or full (node: none between mesh_every_n frames)
    marker_lifetime_s: float = 0.5  # markers of people no longer seen expire after this
    tf: bool = True  # a TF frame <tf_prefix>_<id> per person
    joint_tf: bool = False  # and one per joint under it, <tf_prefix>_<id>/<joint>
    tf_prefix: str = defaults.TF_PREFIX
    hri: bool = False  # hri_msgs/IdsList of the body ids (REP-155)
    debug_image: bool = True  # the overlay, when the frame and its K are given

    def __post_init__(self) -> None:
        if self.mesh not in defaults.MESH_RESOLUTIONS:
            raise ValueError(f"mesh must be one of {defaults.MESH_RESOLUTIONS}, got {self.mesh!r}")


@dataclass
class FrameMessages:
    """One frame's output messages; what was not asked for is None (``transforms``: empty)."""

    humans: object  # hmdiff_msgs/HumanArray
    markers: object | None  # visualization_msgs/MarkerArray
    transforms: List  # geometry_msgs/TransformStamped, none without people
    debug_image: object | None  # sensor_msgs/Image, rgb8
    hri: object | None  # hri_msgs/IdsList
    people: Sequence = ()  # the people in the messages' frame (the target frame where one is given)


def frame_messages(
    f: MessageFactory,
    hdr,
    people: Sequence,
    topology,
    options: FrameOptions = FrameOptions(),
    rgb: np.ndarray | None = None,
    K: np.ndarray | None = None,
    target: Tuple[str, np.ndarray, np.ndarray] | None = None,
) -> FrameMessages:
    """The messages of one frame whose image has the header ``hdr``, for the people the
    pipeline found in it (camera optical frame).

    ``topology``: the body's faces (``coarse_faces``, ``full_faces``) for the mesh marker and
    the overlay. ``rgb`` and ``K``: the image and its intrinsics, for the debug overlay.
    ``target``: ``(frame_id, R, t)`` puts the humans, markers and TF in ``frame_id`` instead
    (``x -> R @ x + t``, at the image's stamp); the overlay is drawn in the image and keeps its
    header either way.
    """
    out_hdr, out_people = hdr, people
    if target is not None:
        frame_id, R, t = target
        out_hdr = f.make("std_msgs/msg/Header", stamp=hdr.stamp, frame_id=frame_id)
        out_people = people_in_frame(people, R, t)
    o = options
    markers = None
    if o.markers:
        faces = (topology.coarse_faces, topology.full_faces)
        markers = marker_array_msg(f, out_hdr, out_people, *faces, mesh=o.mesh, lifetime_s=o.marker_lifetime_s)
    debug = None
    if o.debug_image and rgb is not None:
        full = people and people[0].vertices is not None
        bgr = overlay(rgb, people, K, topology.full_faces if full else topology.coarse_faces)
        debug = image_msg(f, hdr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return FrameMessages(
        humans=human_array_msg(f, out_hdr, out_people, with_vertices=o.vertices),
        markers=markers,
        transforms=transforms(f, out_hdr, out_people, joints=o.joint_tf, prefix=o.tf_prefix, rep155=o.hri)
        if o.tf
        else [],
        debug_image=debug,
        hri=hri_ids_msg(f, out_hdr, out_people) if o.hri else None,
        people=out_people,
    )
