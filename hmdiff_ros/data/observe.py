"""What a pose prior would report for a synthetic person (the simulated U), and the person's
silhouette and the valid image region in the crop (at run time the prior's mask, warped by
:func:`~hmdiff_ros.observation.observe`).

Made to look like MediaPipe BlazePose: 2D keypoints with detector-like jitter, visibilities
that fall for joints that are off-image, occluded or facing away, rare whole-body left-right
swaps, 3D "world landmarks" (root-relative, camera-aligned, metres) with more noise in depth
and a scale that drifts towards an adult's for children; a soft, imperfect person mask. The
crop around the simulated keypoints and the encoder input are :mod:`hmdiff_ros.observation`'s,
shared with inference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict

import cv2
import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_FLIP_PERMUTATION, PRIOR_JOINT_INDICES
from hmdiff_ros.camera import apply_affine, crop_affine
from hmdiff_ros.data.prior_model import simulate_fitted_prior
from hmdiff_ros.observation import ProxyConfig, in_image, in_rect

PELVIS = JOINT_INDEX["pelvis"]
PRIOR_KINDS = ("hand", "fitted", "mixed", "chain", "graded")
# the parent of each prior joint in the chain simulation (our joint names; pelvis is the root)
CHAIN_PARENTS = {
    "spine": "pelvis",
    "neck": "spine",
    "nose": "neck",
    "left_eye": "nose",
    "right_eye": "nose",
    "left_ear": "nose",
    "right_ear": "nose",
    "left_shoulder": "neck",
    "right_shoulder": "neck",
    "left_elbow": "left_shoulder",
    "right_elbow": "right_shoulder",
    "left_wrist": "left_elbow",
    "right_wrist": "right_elbow",
    "left_hip": "pelvis",
    "right_hip": "pelvis",
    "left_knee": "left_hip",
    "right_knee": "right_hip",
    "left_ankle": "left_knee",
    "right_ankle": "right_knee",
    "left_heel": "left_ankle",
    "right_heel": "right_ankle",
    "left_big_toe": "left_ankle",
    "right_big_toe": "right_ankle",
}


@dataclass(frozen=True)
class PriorNoiseConfig:
    uv_noise: tuple = (0.01, 0.03)  # 2D jitter std as a fraction of the person's size
    xyz_noise_m: tuple = (0.015, 0.04)  # 3D std (x, y); depth gets depth_factor times more
    depth_factor: float = 2.5
    scale_std: float = 0.06  # relative std of the prior's body scale
    adult_height_m: float = 1.7  # the prior shrinks/grows everyone towards this height ...
    scale_pull: float = 0.6  # ... by this exponent (0: metric, 1: always adult-sized)
    swap_prob: float = 0.02  # whole-body left-right swap
    self_occlusion_prob: float = 0.3  # chance that a joint behind the body loses visibility
    box_jitter: float = 0.04  # crop centre jitter (fraction of the box) and log-size jitter
    mask_fail_prob: float = 0.03  # the segmentation mask is missing altogether
    mask_blur: tuple = (0.3, 1.2)  # Gaussian blur std of the mask, crop pixels
    # "hand": the settings above; "fitted": keypoints, visibilities, 3D, detection failures and
    # swaps drawn from a fit to MediaPipe's errors (hmdiff_ros.data.prior_model; the box and
    # mask settings above still apply); "mixed": each person from one of the two, at random;
    # "chain": the hand-set keypoints with 3D errors made along the kinematic chain (each bone
    # turned, the body turned, depth collapsed: MediaPipe's errors are structured, not per
    # joint); "graded": each person from hand, fitted or chain at random, its errors then
    # scaled by a quality q (q = 1 for half the people, uniform in [0, 1] for the rest), so
    # that the stream holds priors of every quality, from nearly right to MediaPipe-wrong
    kind: str = "hand"
    chain_bone_rad: tuple = (0.1, 0.55)  # per-sample std of each bone's turn (radians)
    chain_global_rad: tuple = (0.0, 0.6)  # per-sample std of the whole body's turn
    chain_depth: tuple = (0.35, 0.85)  # depth extent kept (MediaPipe on renders: 0.59 on average)
    graded_full: float = 0.5  # share of "graded" people with their simulator's full errors (q = 1)

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind must be one of {', '.join(PRIOR_KINDS)}, got {self.kind!r}")
        for name in ("swap_prob", "self_occlusion_prob", "mask_fail_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.depth_factor < 1 or self.scale_std < 0 or self.box_jitter < 0:
            raise ValueError("depth_factor must be >= 1; scale_std and box_jitter >= 0")
        for name in ("uv_noise", "xyz_noise_m", "mask_blur"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {getattr(self, name)}")


def simulate_prior(
    rng: np.random.Generator,
    joints_cam: np.ndarray,
    uv: np.ndarray,
    image_size: np.ndarray,
    person_box: np.ndarray,
    occluders: np.ndarray,
    heights: np.ndarray,
    cfg: PriorNoiseConfig,
    rotation: np.ndarray | None = None,
) -> Dict[str, np.ndarray]:
    """Simulated prior for ``N`` people from ground-truth joints ``(N, 25, 3)`` (camera frame)
    and their projections ``uv`` ``(N, 25, 2)``; ``person_box`` (N, 4) u0 v0 u1 v1; ``heights`` (N,);
    ``rotation`` (N, 3, 3) body -> camera (needed by ``cfg.kind == "fitted"``).

    Returns ``prior_uv`` (N, 24, 2) image pixels, ``prior_vis`` (N, 24), ``prior_xyz``
    (N, 24, 3) root-relative camera-aligned metres, ``swapped`` (N,). With ``cfg.kind ==
    "fitted"`` (:func:`~hmdiff_ros.data.prior_model.simulate_fitted_prior`) a person the prior
    would not detect gets all visibilities 0.
    """
    if cfg.kind != "hand" and rotation is None:
        raise ValueError(f"the {cfg.kind} prior simulation needs the body rotations")
    if cfg.kind == "fitted":
        return simulate_fitted_prior(rng, joints_cam, uv, image_size, person_box, occluders, heights, rotation)
    args = (joints_cam, uv, image_size, person_box, occluders, heights, rotation)
    if cfg.kind == "mixed":  # each person from the hand-set or the fitted simulation, at random
        return _per_person(rng, args, cfg, ("hand", "fitted"))
    if cfg.kind == "graded":
        out = _per_person(rng, args, cfg, ("hand", "fitted", "chain"))
        return _graded(rng, out, joints_cam, uv, cfg.graded_full)
    if cfg.kind == "chain":
        out = simulate_prior(rng, *args[:-1], replace(cfg, kind="hand"), rotation=rotation)
        xyz = chain_errors(rng, joints_cam - joints_cam[:, PELVIS, None], heights, cfg)
        swapped = out["swapped"]
        xyz[swapped] = xyz[swapped][:, list(PRIOR_FLIP_PERMUTATION)]
        return {**out, "prior_xyz": xyz}
    n = len(joints_cam)
    idx = list(PRIOR_JOINT_INDICES)
    xyz, pix = joints_cam[:, idx], uv[:, idx]  # (N, 24, .)
    inside = in_image(pix, image_size)
    occluded = in_rect(pix, occluders)
    behind = xyz[..., 2] > joints_cam[:, PELVIS, None, 2] + 0.08
    hidden = behind & (rng.random(inside.shape) < cfg.self_occlusion_prob)
    vis = rng.uniform(0.75, 1.0, inside.shape)
    vis = np.where(hidden, rng.uniform(0.3, 0.8, inside.shape), vis)
    vis = np.where(occluded, rng.uniform(0.0, 0.45, inside.shape), vis)
    vis = np.where(inside, vis, rng.uniform(0.0, 0.15, inside.shape))

    size = np.maximum(person_box[:, 2] - person_box[:, 0], person_box[:, 3] - person_box[:, 1])  # (N,)
    std = rng.uniform(*cfg.uv_noise, size=(n, 1, 1)) * size[:, None, None] * np.where(vis < 0.5, 2.5, 1.0)[..., None]
    prior_uv = pix + std * rng.standard_normal(pix.shape)

    scale = (cfg.adult_height_m / heights) ** cfg.scale_pull * (1 + cfg.scale_std * rng.standard_normal(n))
    rel = (xyz - joints_cam[:, PELVIS, None]) * scale[:, None, None]
    sigma = rng.uniform(*cfg.xyz_noise_m, size=(n, 1, 1)) * np.array([1.0, 1.0, cfg.depth_factor])
    prior_xyz = rel + sigma * np.where(vis < 0.5, 2.0, 1.0)[..., None] * rng.standard_normal(rel.shape)

    swapped = rng.random(n) < cfg.swap_prob
    perm = list(PRIOR_FLIP_PERMUTATION)
    for arr in (prior_uv, vis, prior_xyz):
        arr[swapped] = arr[swapped][:, perm]
    return {"prior_uv": prior_uv, "prior_vis": vis, "prior_xyz": prior_xyz, "swapped": swapped}


def _per_person(rng: np.random.Generator, args: tuple, cfg: PriorNoiseConfig, kinds: tuple) -> Dict[str, np.ndarray]:
    """Each person's prior from one of ``kinds``, drawn at random."""
    n = len(args[0])
    pick = rng.integers(len(kinds), size=n)
    out: Dict[str, np.ndarray] = {}
    for k, kind in enumerate(kinds):
        rows = pick == k
        part = simulate_prior(rng, *[a[rows] for a in args[:-1]], replace(cfg, kind=kind), rotation=args[-1][rows])
        for key in ("prior_uv", "prior_vis", "prior_xyz", "swapped"):
            if key not in out:
                out[key] = np.zeros((n,) + part[key].shape[1:], part[key].dtype)
            out[key][rows] = part[key]
    return out


def _graded(
    rng: np.random.Generator, out: Dict[str, np.ndarray], joints_cam: np.ndarray, uv: np.ndarray, full: float
) -> Dict[str, np.ndarray]:
    """``out``'s keypoint and 3D errors scaled by a per-person quality q: U = truth + q (U -
    truth), the same for the keypoints (q = 1 with probability ``full``, else uniform in [0, 1])."""
    n = len(joints_cam)
    q = np.where(rng.random(n) < full, 1.0, rng.random(n))[:, None, None]
    idx = list(PRIOR_JOINT_INDICES)
    rel = joints_cam[:, idx] - joints_cam[:, PELVIS, None]
    return {
        **out,
        "prior_xyz": rel + q * (out["prior_xyz"] - rel),
        "prior_uv": uv[:, idx] + q * (out["prior_uv"] - uv[:, idx]),
        "quality": q[:, 0, 0],
    }


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` of unit ``axis`` ``(..., 3)`` by ``angle`` ``(...)`` (Rodrigues)."""
    k = np.zeros(axis.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    k = k - np.swapaxes(k, -1, -2)
    a = angle[..., None, None]
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def _random_turns(rng: np.random.Generator, shape: tuple, std: np.ndarray) -> np.ndarray:
    axis = rng.standard_normal(shape + (3,))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return _axis_angle(axis, std * rng.standard_normal(shape))


def chain_errors(rng: np.random.Generator, rel: np.ndarray, heights: np.ndarray, cfg: PriorNoiseConfig) -> np.ndarray:
    """3D prior joints ``(N, 24, 3)`` from root-relative true joints ``rel`` ``(N, 25, 3)`` with
    errors along the kinematic chain: each bone of :data:`CHAIN_PARENTS` turned at random (a
    turned bone moves everything below it), the whole body turned, the depth extent collapsed
    and the scale pulled towards an adult's, as the hand-set simulation does."""
    n = len(rel)
    bone_std = rng.uniform(*cfg.chain_bone_rad, size=(n, 1))
    turns = _random_turns(rng, (n, len(CHAIN_PARENTS)), np.broadcast_to(bone_std, (n, len(CHAIN_PARENTS))))
    out = rel.copy()
    for b, (child, parent) in enumerate(CHAIN_PARENTS.items()):  # parents come before their children
        c, p = JOINT_INDEX[child], JOINT_INDEX[parent]
        out[:, c] = out[:, p] + np.einsum("nij,nj->ni", turns[:, b], rel[:, c] - rel[:, p])
    whole = _random_turns(rng, (n,), rng.uniform(*cfg.chain_global_rad, size=n))
    out = np.einsum("nij,npj->npi", whole, out)
    out[..., 2] *= rng.uniform(*cfg.chain_depth, size=(n, 1))
    scale = (cfg.adult_height_m / heights) ** cfg.scale_pull * (1 + cfg.scale_std * rng.standard_normal(n))
    out = out * scale[:, None, None] + 0.01 * rng.standard_normal(out.shape)
    return out[:, list(PRIOR_JOINT_INDICES)]


# Body parts for silhouette rasterisation, by Anny bone-name prefix (first match wins).
_PARTS = (
    ("head", ("neck", "head", "eye")),
    ("arm", ("clavicle", "shoulder", "upperarm")),
    ("hand", ("lowerarm", "wrist", "finger", "metacarpal")),
    ("thigh", ("upperleg", "pelvis")),
    ("shin", ("lowerleg",)),
    ("foot", ("foot", "toe")),
    ("torso", ("spine", "root")),
)


def face_parts(faces: np.ndarray, skin_index: np.ndarray, skin_weight: np.ndarray, bone_labels) -> list:
    """Coarse faces grouped by body part (and side): lists of face indices.

    Front faces of one part rarely overlap in the image, so each group can be filled in one
    ``cv2.fillPoly`` call, whose even-odd rule would punch holes where parts overlap.
    """
    dominant = skin_index[np.arange(len(skin_index)), skin_weight.argmax(1)]  # (C,) bone per vertex

    def part(bone: int) -> str:
        name, _, side = str(bone_labels[bone]).partition(".")
        return next(p for p, prefixes in _PARTS if name.startswith(prefixes)) + side

    vertex_part = np.array([part(b) for b in dominant])
    labels = vertex_part[faces[:, 0]]
    return [np.flatnonzero(labels == p) for p in np.unique(labels)]


def render_observation(
    rng: np.random.Generator,
    coarse_uv: np.ndarray,
    coarse_cam: np.ndarray,
    coarse_faces: np.ndarray,
    parts: list,
    box: np.ndarray,
    image_size: np.ndarray,
    occluders: np.ndarray,
    cfg: PriorNoiseConfig,
    proxy: ProxyConfig,
) -> Dict[str, np.ndarray]:
    """Soft silhouette ``mask`` and ``valid`` image region ``(N, S, S)`` in the crops.

    The silhouette is the union of the projected front-facing coarse triangles (no depth test
    needed; filled one body part at a time, see :func:`face_parts`), cut by the image border
    and the occluders, then dilated/eroded and blurred like a segmentation network's output.
    """
    s = proxy.crop_size
    n = len(box)
    affine = crop_affine(box, s)  # (N, 2, 3)
    tri_uv = apply_affine(affine, coarse_uv)  # (N, C, 2) crop pixels
    corners = np.stack([np.zeros((n, 2)), image_size - 1], axis=1)  # image rect in image pixels
    rect = apply_affine(affine, corners)  # (N, 2, 2)
    occ = apply_affine(affine, np.nan_to_num(occluders.reshape(n, 2, 2), nan=-1e9))
    grid = np.arange(s)
    masks = np.zeros((n, s, s), np.float32)
    valid = np.zeros((n, s, s), np.float32)
    kernel = np.ones((3, 3), np.uint8)
    tri = coarse_cam[:, coarse_faces]  # (N, F, 3, 3)
    normal = np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    front = np.einsum("nfd,nfd->nf", normal, tri.sum(2)) < 0  # facing the camera at the origin
    pts_all = np.round(tri_uv[:, coarse_faces] * 4).astype(np.int32)  # (N, F, 3, 2), 2 bits sub-pixel
    for i in range(n):
        pts = pts_all[i]
        m = np.zeros((s, s), np.uint8)
        for group in parts:
            cv2.fillPoly(m, pts[group[front[i, group]]], 1, shift=2)
        inside_u = (grid >= rect[i, 0, 0]) & (grid <= rect[i, 1, 0])
        inside_v = (grid >= rect[i, 0, 1]) & (grid <= rect[i, 1, 1])
        valid[i] = inside_v[:, None] & inside_u[None, :]
        if np.isfinite(occluders[i, 0]):
            ou = (grid >= occ[i, 0, 0]) & (grid <= occ[i, 1, 0])
            ov = (grid >= occ[i, 0, 1]) & (grid <= occ[i, 1, 1])
            m[ov[:, None] & ou[None, :]] = 0
        m = m * valid[i].astype(np.uint8)
        op = rng.integers(3)
        if op == 1:
            m = cv2.dilate(m, kernel)
        elif op == 2:
            m = cv2.erode(m, kernel)
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), float(rng.uniform(*cfg.mask_blur)))
        masks[i] = 0.0 if rng.random() < cfg.mask_fail_prob else soft
    return {"mask": masks, "valid": valid, "affine": affine}
