"""A small BVH motion reader: the skeleton, the channels of every frame, forward kinematics.

BVH (Biovision hierarchy) is the text format the CMU motion-capture library circulates in:
a ``HIERARCHY`` of joints with offsets from their parents and channel lists, then ``MOTION``
with one line of channel values per frame. A joint's local rotation is the product of its
rotation channels in the order listed (``Zrotation Yrotation Xrotation`` gives
``Rz @ Ry @ Rx``), in degrees; its global pose is its parent's composed with its offset and
that rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np


@dataclass
class BVH:
    names: List[str]  # joints in file order (parents before children)
    parents: List[int]  # -1 for the root
    offsets: np.ndarray  # (J, 3) from the parent, file units
    channels: List[List[str]]  # per joint, e.g. ["Xposition", ..., "Zrotation", "Yrotation", "Xrotation"]
    motion: np.ndarray  # (F, C) channel values of every frame
    frame_time: float  # seconds

    @property
    def num_frames(self) -> int:
        return len(self.motion)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"BVH has no joint {name!r}; joints: {', '.join(self.names[:8])}, ...") from None

    def positions(self, frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Global joint positions ``(F, J, 3)`` (file units and axes) of ``frames`` (all by default)."""
        motion = self.motion if frames is None else self.motion[np.asarray(frames)]
        n = len(motion)
        rot = np.zeros((n, len(self.names), 3, 3))
        pos = np.zeros((n, len(self.names), 3))
        col = 0
        for j, (parent, chans) in enumerate(zip(self.parents, self.channels, strict=True)):
            local = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
            offset = np.broadcast_to(self.offsets[j], (n, 3)).copy()
            for c in chans:
                value = motion[:, col]
                col += 1
                if c.endswith("position"):
                    offset[:, "XYZ".index(c[0])] = value if parent < 0 else offset[:, "XYZ".index(c[0])] + value
                else:
                    local = local @ _axis_rotation(c[0], np.radians(value))
            if parent < 0:
                rot[:, j], pos[:, j] = local, offset
            else:
                rot[:, j] = rot[:, parent] @ local
                pos[:, j] = pos[:, parent] + np.einsum("nij,nj->ni", rot[:, parent], offset)
        return pos


def _axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(angle.shape + (3, 3))
    i = "XYZ".index(axis)
    a, b = [k for k in range(3) if k != i]
    m[..., i, i] = 1.0
    m[..., a, a], m[..., a, b], m[..., b, a], m[..., b, b] = c, -s, s, c
    return m


def parse_bvh(text: str, source: str = "BVH") -> BVH:
    """A :class:`BVH` from the text of a file (``source`` names it in errors)."""
    tokens = text.split()
    names: List[str] = []
    parents: List[int] = []
    offsets: List[List[float]] = []
    channels: List[List[str]] = []
    stack: List[int] = []
    i = 0

    def bad(why: str) -> ValueError:
        return ValueError(f"{source} is not a BVH file this reader understands: {why}")

    try:
        if tokens[0] != "HIERARCHY":
            raise bad("it does not start with HIERARCHY")
        i = 1
        end_site = False
        while tokens[i] != "MOTION":
            t = tokens[i]
            if t in ("ROOT", "JOINT"):
                names.append(tokens[i + 1])
                parents.append(stack[-1] if stack else -1)
                offsets.append([0.0, 0.0, 0.0])
                channels.append([])
                i += 2
            elif t == "End":
                end_site = True
                i += 2
            elif t == "{":
                stack.append(-2 if end_site else len(names) - 1)
                i += 1
            elif t == "}":
                if stack.pop() == -2:
                    end_site = False
                i += 1
            elif t == "OFFSET":
                if not end_site:
                    offsets[-1] = [float(v) for v in tokens[i + 1 : i + 4]]
                i += 4
            elif t == "CHANNELS":
                n = int(tokens[i + 1])
                channels[-1] = tokens[i + 2 : i + 2 + n]
                i += 2 + n
            else:
                raise bad(f"unexpected token {t!r}")
        if tokens[i + 1] != "Frames:" or tokens[i + 3] != "Frame" or tokens[i + 4] != "Time:":
            raise bad("MOTION lacks 'Frames:' and 'Frame Time:'")
        frames, frame_time = int(tokens[i + 2]), float(tokens[i + 5])
        values = np.asarray(tokens[i + 6 :], dtype=np.float64)
    except (IndexError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(source):
            raise
        raise bad(f"{type(exc).__name__} while reading token {i}") from None
    width = sum(len(c) for c in channels)
    if not names or width == 0 or values.size != frames * width:
        raise bad(f"{values.size} motion values for {frames} frames of {width} channels")
    return BVH(names, parents, np.asarray(offsets), channels, values.reshape(frames, width), frame_time)


def read_bvh(path: "str | Path") -> BVH:
    path = Path(path)
    return parse_bvh(path.read_text(), f"'{path}'")


# The CMU library's iClone re-export (CC_Base rig): each of our joints as a rig joint.
CC_BASE_JOINTS: Dict[str, str] = {
    "left_hip": "CC_Base_L_Thigh",
    "right_hip": "CC_Base_R_Thigh",
    "left_knee": "CC_Base_L_Calf",
    "right_knee": "CC_Base_R_Calf",
    "left_ankle": "CC_Base_L_Foot",
    "right_ankle": "CC_Base_R_Foot",
    "left_big_toe": "CC_Base_L_ToeBase",
    "right_big_toe": "CC_Base_R_ToeBase",
    "left_shoulder": "CC_Base_L_Upperarm",
    "right_shoulder": "CC_Base_R_Upperarm",
    "left_elbow": "CC_Base_L_Forearm",
    "right_elbow": "CC_Base_R_Forearm",
    "left_wrist": "CC_Base_L_Hand",
    "right_wrist": "CC_Base_R_Hand",
    "spine": "CC_Base_Spine01",
    "neck": "CC_Base_NeckTwist01",
    "head": "CC_Base_Head",
}
