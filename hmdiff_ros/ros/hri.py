"""REP-155 (ROS4HRI) per-body messages, ROS-free like convert.py: for each body ``<id>`` (the
id in ``/humans/bodies/tracked``), ``/humans/bodies/<id>/skeleton2d`` (``hri_msgs/Skeleton2D``:
REP-155's 18 OpenPose-COCO points, normalised to the image) and ``/humans/bodies/<id>/roi``
(``hri_msgs/NormalizedRegionOfInterest2D``: the body's box in the image). The message
definitions are hri_msgs 2.0.0's (ros4hri/hri_msgs, branch humble-devel, BSD-3-Clause), so that
rosbags can write them and tests can check them without ROS.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX

SKELETON_2D = "hri_msgs/msg/Skeleton2D"
POINT_2D = "hri_msgs/msg/NormalizedPointOfInterest2D"
ROI_2D = "hri_msgs/msg/NormalizedRegionOfInterest2D"
BODIES_NS = "/humans/bodies"

DEFINITIONS: Dict[str, str] = {
    POINT_2D: "float32 x\nfloat32 y\nfloat32 c\n",
    SKELETON_2D: (
        "std_msgs/Header header\n"
        + "".join(
            f"uint8 {n} = {i}\n"
            for i, n in enumerate(
                "NOSE NECK RIGHT_SHOULDER RIGHT_ELBOW RIGHT_WRIST LEFT_SHOULDER LEFT_ELBOW LEFT_WRIST RIGHT_HIP "
                "RIGHT_KNEE RIGHT_ANKLE LEFT_HIP LEFT_KNEE LEFT_ANKLE LEFT_EYE RIGHT_EYE LEFT_EAR RIGHT_EAR".split()
            )
        )
        + "hri_msgs/NormalizedPointOfInterest2D[18] skeleton\n"
    ),
    ROI_2D: "std_msgs/Header header\nfloat32 xmin\nfloat32 ymin\nfloat32 xmax\nfloat32 ymax\nfloat32 c\n",
}

# REP-155's skeleton (Skeleton2D's constants, OpenPose's COCO-18 order) in our joint names
SKELETON_2D_JOINTS = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
)
_SKELETON_2D_INDEX = np.array([JOINT_INDEX[n] for n in SKELETON_2D_JOINTS])


def body_topic(body_id: str, name: str) -> str:
    """``/humans/bodies/<id>/<name>``."""
    return f"{BODIES_NS}/{body_id}/{name}"


def skeleton_2d(joints_uv: np.ndarray, confidence: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(18, 3)``: x, y in [0, 1] (pixels over the image's width and height; points outside
    the image clipped to its border) and c, the joint's confidence in [0, 1], per REP-155 point."""
    uv = np.asarray(joints_uv, float)[_SKELETON_2D_INDEX]
    c = np.clip(np.nan_to_num(np.asarray(confidence, float)[_SKELETON_2D_INDEX]), 0.0, 1.0)
    x = np.clip(uv[:, 0] / width, 0.0, 1.0)
    y = np.clip(uv[:, 1] / height, 0.0, 1.0)
    return np.stack([x, y, c], axis=1)


def roi(joints_uv: np.ndarray, width: int, height: int, margin: float = 0.1) -> np.ndarray:
    """``(4,)`` xmin, ymin, xmax, ymax in [0, 1]: the box around the body's projected joints,
    grown by ``margin`` of its size on each side (joints are inside the body's outline), clipped
    to the image."""
    uv = np.asarray(joints_uv, float)
    (u0, v0), (u1, v1) = uv.min(axis=0), uv.max(axis=0)
    du, dv = margin * (u1 - u0), margin * (v1 - v0)
    box = np.array([(u0 - du) / width, (v0 - dv) / height, (u1 + du) / width, (v1 + dv) / height])
    return np.clip(box, 0.0, 1.0)


def skeleton_2d_msg(f, hdr, person, width: int, height: int):
    """``hri_msgs/Skeleton2D`` of ``person`` (a PersonResult: its reprojected joints, the prior's
    visibility as each point's confidence)."""
    pts = skeleton_2d(person.joints_uv, person.visibility, width, height)
    return f.make(
        SKELETON_2D,
        header=hdr,
        skeleton=[f.make(POINT_2D, x=float(x), y=float(y), c=float(c)) for x, y, c in pts],
    )


def roi_msg(f, hdr, person, width: int, height: int):
    """``hri_msgs/NormalizedRegionOfInterest2D`` of ``person``, its confidence the prior's score."""
    x0, y0, x1, y1 = roi(person.joints_uv, width, height)
    c = float(np.clip(person.score, 0.0, 1.0))
    return f.make(ROI_2D, header=hdr, xmin=float(x0), ymin=float(y0), xmax=float(x1), ymax=float(y1), c=c)


def body_messages(f, hdr, people: Sequence, ids: Sequence[str], width: int, height: int) -> Dict[str, object]:
    """``{topic: message}``: each body's skeleton2d and roi, under ``/humans/bodies/<id>/``."""
    out: Dict[str, object] = {}
    for p, body_id in zip(people, ids, strict=True):
        out[body_topic(body_id, "skeleton2d")] = skeleton_2d_msg(f, hdr, p, width, height)
        out[body_topic(body_id, "roi")] = roi_msg(f, hdr, p, width, height)
    return out
