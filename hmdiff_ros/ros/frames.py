"""Frames and TF: the body frame of a person, rotations and quaternions, TF messages, and
people moved into another frame (``target_frame``). No rclpy.

A person's TF frame is ``<prefix>_<id>`` (:func:`person_id`), at the pelvis, with REP-103's
body axes (x forward, y left, z up; :func:`body_rotation`); the parent is the image's frame.
Rotations are ``(3, 3)`` matrices whose columns are the child's axes in the parent frame;
quaternions are ``(x, y, z, w)`` as ``geometry_msgs/Quaternion`` orders them.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np

from hmdiff_ros import defaults
from hmdiff_ros.body.joints import JOINT_INDEX, JOINT_NAMES


def person_id(p, index: int) -> int:
    """The id of a person's TF frame, markers and ``hri_msgs`` entry: its track id, or its
    index in the frame when it is not tracked."""
    return int(p.track_id) if getattr(p, "track_id", -1) >= 0 else index


def body_id(p, index: int) -> str:
    """A person's REP-155 body id, ``b<person_id>``: ROS names (topics ``/humans/bodies/<id>/...``)
    cannot have a token that starts with a digit. Its TF frame is then ``body_<id>``."""
    return f"b{person_id(p, index)}"


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


def rigid_from_transform(tr) -> Tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of a ``geometry_msgs/Transform``: a point ``p`` in the child frame is
    ``R @ p + t`` in the parent frame (TF's convention)."""
    r, v = tr.rotation, tr.translation
    return rotation_from_quaternion(r.x, r.y, r.z, r.w), np.array([v.x, v.y, v.z], dtype=np.float64)


def people_in_frame(people: Sequence, R: np.ndarray, t: np.ndarray) -> List:
    """The people with every published 3D quantity (joints, meshes, translation) moved by
    ``x -> R @ x + t`` (into a target frame); boxes, pixels, per-joint spreads (distances) and
    the prior's root-relative ``prior_xyz`` (never published) are unchanged."""

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


def transform_stamped(f, hdr, parent: str, child: str, t, rot):
    """``geometry_msgs/TransformStamped`` of the frame ``child`` at ``t`` with axes ``rot`` in
    ``parent``, at ``hdr``'s stamp, built by the
    :class:`~hmdiff_ros.ros.convert.MessageFactory` ``f``."""
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


def transforms(
    f, hdr, people: Sequence, joints: bool = False, prefix: str = defaults.TF_PREFIX, rep155: bool = False
) -> List:
    """``geometry_msgs/TransformStamped``: ``<prefix>_<id>`` (pelvis, body axes) under the
    image frame for each person, and ``<prefix>_<id>/<joint>`` under it when ``joints``;
    ``rep155``: REP-155's ``body_<body id>`` (:func:`body_id`) whatever the prefix."""
    out = []
    for i, p in enumerate(people):
        rot = body_rotation(p.joints)
        pelvis = p.joints[JOINT_INDEX["pelvis"]]
        body = f"body_{body_id(p, i)}" if rep155 else f"{prefix}_{person_id(p, i)}"
        out.append(transform_stamped(f, hdr, hdr.frame_id, body, pelvis, rot))
        if joints:
            for name, xyz in zip(JOINT_NAMES, p.joints, strict=True):
                out.append(transform_stamped(f, hdr, body, f"{body}/{name}", rot.T @ (xyz - pelvis), np.eye(3)))
    return out
