"""A body's REP-155 kinematic model: a URDF from its measured bone lengths and the joint angles
that put its links on our 3D joints, so that a stock ``robot_state_publisher`` (fed the URDF and
``/humans/bodies/<id>/joint_states``) publishes the REP-155 frames under ``body_<id>``. ROS-free.

Links (each suffixed ``_<id>``): ``body`` (the root, at the pelvis, REP-103 axes: the node's TF
frame with ``tf_prefix: body``), ``torso`` (at the neck), ``head`` (between the eyes, x forward,
z up), ``l_shoulder``/``r_shoulder``, ``l_elbow``/``r_elbow``, ``l_wrist``/``r_wrist``,
``l_hip``/``r_hip``, ``l_knee``/``r_knee``, ``l_ankle``/``r_ankle`` (REP-155's 15 main links),
plus the intermediate links of the revolute chains. Every ball joint is three revolute joints
about z, y, x (``R = Rz(a) Ry(b) Rx(c)``); elbows and knees are one hinge about y. Upper limbs
hang along their link's -z. With the lengths measured on a frame, the links of that frame land
on its joints exactly (the head to within its shape's change); later frames keep the lengths.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.ros.frames import body_rotation

J = JOINT_INDEX
SIDES = (("l", "left", 1.0), ("r", "right", -1.0))


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else np.asarray(fallback, float)


def zyx_angles(R: np.ndarray) -> Tuple[float, float, float]:
    """``(a, b, c)`` with ``R = Rz(a) @ Ry(b) @ Rx(c)``."""
    b = float(np.arcsin(np.clip(-R[2, 0], -1.0, 1.0)))
    if abs(R[2, 0]) < 1 - 1e-9:
        return float(np.arctan2(R[1, 0], R[0, 0])), b, float(np.arctan2(R[2, 1], R[2, 2]))
    return float(np.arctan2(-R[0, 1], R[1, 1])), b, 0.0  # gimbal lock: all of the turn in a


def _frames(joints: np.ndarray) -> Dict[str, np.ndarray]:
    """Rotations (columns: axes in the camera frame) of the body, waist, torso and head frames."""
    j = np.asarray(joints, float)
    body = body_rotation(j)
    z = _unit(j[J["neck"]] - j[J["pelvis"]], body[:, 2])
    shoulders = j[J["left_shoulder"]] - j[J["right_shoulder"]]
    y = _unit(shoulders - z * (shoulders @ z), body[:, 1])
    waist = np.stack([np.cross(y, z), y, z], axis=1)
    ys = _unit(shoulders, y)  # the shoulder line lies in the waist frame's y-z plane
    torso = np.stack([waist[:, 0], ys, np.cross(waist[:, 0], ys)], axis=1)
    mid_ears = 0.5 * (j[J["left_ear"]] + j[J["right_ear"]])
    hy = _unit(j[J["left_ear"]] - j[J["right_ear"]], torso[:, 1])
    up = j[J["head_top"]] - mid_ears
    hz = _unit(up - hy * (up @ hy), torso[:, 2])
    head = np.stack([np.cross(hy, hz), hy, hz], axis=1)
    return {"body": body, "waist": waist, "torso": torso, "head": head}


def _sellion(j: np.ndarray) -> np.ndarray:
    return 0.5 * (j[J["left_eye"]] + j[J["right_eye"]])


def _limb_frame(parent_rot: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> Tuple[np.ndarray, float]:
    """The upper limb's rotation (its -z along a->b, its y the hinge axis of the bend at b) and
    the hinge angle about y that turns a->b onto b->c."""
    u = _unit(b - a, -parent_rot[:, 2])
    f = _unit(c - b, u)
    n = np.cross(u, f)
    if np.linalg.norm(n) < 1e-6:  # straight: the hinge axis closest to the parent's y
        n = parent_rot[:, 1] - u * (parent_rot[:, 1] @ u)
    y = _unit(n, np.cross(u, parent_rot[:, 0]))
    z = -u
    rot = np.stack([np.cross(y, z), y, z], axis=1)
    fl = rot.T @ f
    return rot, float(np.arctan2(-fl[0], -fl[2]))


def lengths(joints: np.ndarray) -> Dict[str, float]:
    """The body's measured dimensions (metres) that the URDF fixes."""
    j = np.asarray(joints, float)
    d = lambda a, b: float(np.linalg.norm(j[J[a]] - j[J[b]]))  # noqa: E731
    rot = _frames(j)
    out = {
        "torso": d("neck", "pelvis"),
        "shoulders": d("left_shoulder", "right_shoulder") / 2,
        "hips": d("left_hip", "right_hip") / 2,
    }
    out.update(
        zip(("head_x", "head_y", "head_z"), (rot["head"].T @ (_sellion(j) - j[J["neck"]])).tolist(), strict=True)
    )
    for s, side, _ in SIDES:
        out[f"{s}_upperarm"] = d(f"{side}_shoulder", f"{side}_elbow")
        out[f"{s}_forearm"] = d(f"{side}_elbow", f"{side}_wrist")
        out[f"{s}_thigh"] = d(f"{side}_hip", f"{side}_knee")
        out[f"{s}_tibia"] = d(f"{side}_knee", f"{side}_ankle")
    return out


def _chain(body_id: str) -> List[Tuple[str, str, str, str, Tuple[float, float, float]]]:
    """``(joint, type, parent, child, axis)``; origins come from :func:`urdf`'s lengths."""
    k = f"_{body_id}"
    out = []

    def ball(name: str, parent: str, child: str) -> None:
        out.append((f"y_{name}{k}", "revolute", parent, f"y_{name}{k}", (0, 0, 1)))
        out.append((f"p_{name}{k}", "revolute", f"y_{name}{k}", f"p_{name}{k}", (0, 1, 0)))
        out.append((f"r_{name}{k}", "revolute", f"p_{name}{k}", child, (1, 0, 0)))

    ball("waist", f"body{k}", f"waist{k}")
    out.append((f"torso{k}", "revolute", f"waist{k}", f"torso{k}", (1, 0, 0)))
    ball("head", f"torso{k}", f"neck{k}")
    out.append((f"head{k}", "fixed", f"neck{k}", f"head{k}", (1, 0, 0)))
    for s, _, _ in SIDES:
        for limb, root, mid, end in (("shoulder", f"torso{k}", "elbow", "wrist"), ("hip", f"body{k}", "knee", "ankle")):
            ball(f"{s}_{limb}", root, f"{s}_{limb}{k}")
            out.append((f"{s}_{mid}{k}", "revolute", f"{s}_{limb}{k}", f"{s}_{mid}{k}", (0, 1, 0)))
            out.append((f"{s}_{end}{k}", "fixed", f"{s}_{mid}{k}", f"{s}_{end}{k}", (1, 0, 0)))
    return out


def _origins(body_id: str, L: Dict[str, float]) -> Dict[str, Tuple[float, float, float]]:
    k = f"_{body_id}"
    o = {f"torso{k}": (0.0, 0.0, L["torso"]), f"head{k}": (L["head_x"], L["head_y"], L["head_z"])}
    for s, _, sign in SIDES:
        o[f"y_{s}_shoulder{k}"] = (0.0, sign * L["shoulders"], 0.0)
        o[f"y_{s}_hip{k}"] = (0.0, sign * L["hips"], 0.0)
        o[f"{s}_elbow{k}"] = (0.0, 0.0, -L[f"{s}_upperarm"])
        o[f"{s}_wrist{k}"] = (0.0, 0.0, -L[f"{s}_forearm"])
        o[f"{s}_knee{k}"] = (0.0, 0.0, -L[f"{s}_thigh"])
        o[f"{s}_ankle{k}"] = (0.0, 0.0, -L[f"{s}_tibia"])
    return o


def urdf(body_id: str, L: Dict[str, float]) -> str:
    """The body's URDF (robot ``human_<id>``, root link ``body_<id>``), lengths from :func:`lengths`."""
    chain, origins = _chain(body_id), _origins(body_id, L)
    links = [f"body_{body_id}"] + [c for _, _, _, c, _ in chain]
    lines = [f'<?xml version="1.0"?>\n<robot name="human_{body_id}">']
    lines += [f'  <link name="{n}"/>' for n in links]
    for name, kind, parent, child, axis in chain:
        x, y, z = origins.get(name, (0.0, 0.0, 0.0))
        lines.append(f'  <joint name="{name}" type="{kind}">')
        lines.append(f'    <parent link="{parent}"/>\n    <child link="{child}"/>')
        lines.append(f'    <origin xyz="{x:.5f} {y:.5f} {z:.5f}" rpy="0 0 0"/>')
        if kind == "revolute":
            lines.append(f'    <axis xyz="{axis[0]} {axis[1]} {axis[2]}"/>')
            lines.append('    <limit lower="-3.1416" upper="3.1416" effort="0" velocity="0"/>')
        lines.append("  </joint>")
    lines.append("</robot>\n")
    return "\n".join(lines)


def joint_angles(body_id: str, joints: np.ndarray) -> Dict[str, float]:
    """``{joint name: angle}`` of the revolute joints for one frame's 3D joints (camera frame)."""
    j = np.asarray(joints, float)
    k = f"_{body_id}"
    rot = _frames(j)
    out: Dict[str, float] = {}

    def ball(name: str, parent_rot: np.ndarray, child_rot: np.ndarray) -> None:
        a, b, c = zyx_angles(parent_rot.T @ child_rot)
        out.update({f"y_{name}{k}": a, f"p_{name}{k}": b, f"r_{name}{k}": c})

    ball("waist", rot["body"], rot["waist"])
    t = rot["waist"].T @ rot["torso"][:, 1]
    out[f"torso{k}"] = float(np.arctan2(t[2], t[1]))
    ball("head", rot["torso"], rot["head"])
    for s, side, _ in SIDES:
        for limb, parent, mid, end in (("shoulder", "torso", "elbow", "wrist"), ("hip", "body", "knee", "ankle")):
            a, b, c = (j[J[f"{side}_{x}"]] for x in (limb, mid, end))
            limb_rot, bend = _limb_frame(rot[parent], a, b, c)
            ball(f"{s}_{limb}", rot[parent], limb_rot)
            out[f"{s}_{mid}{k}"] = bend
    return out


def link_targets(body_id: str, joints: np.ndarray) -> Dict[str, np.ndarray]:
    """Where the main links must be (camera frame): for tests and for checking the URDF."""
    j = np.asarray(joints, float)
    k = f"_{body_id}"
    out = {f"body{k}": j[J["pelvis"]], f"torso{k}": j[J["neck"]], f"head{k}": _sellion(j)}
    for s, side, _ in SIDES:
        for x in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
            out[f"{s}_{x}{k}"] = j[J[f"{side}_{x}"]]
    return out
