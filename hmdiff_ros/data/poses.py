"""Plausible human poses for Anny: per-joint limits plus activity families robots meet.

A pose is axis-angle per Anny bone, ``(B, 103, 3)`` radians, in canonical axes (x to the
subject's left, y up, z forward), each a rotation at the bone's head relative to its parent
(see :class:`~hmdiff_ros.body.anny_body.AnnyBody`). Signs, for the left side (the right
side mirrors: y and z negate): hip flexion (leg forward) is -x, knee flexion +x, shoulder
flexion (arm forward) -x, shoulder abduction (arm up sideways) +z, spine flexion (bend
forward) +x, turning (twist) y. The elbow flexes about an axis perpendicular to the rest
forearm, taken from the rest skeleton.

Each family gives uniform ranges per bone for the "lead" side (reaching arm, front leg;
left or right at random) and the other side; small noise is added everywhere, then every
bone is clipped to its joint limits. Fingers curl a little; toes stay fixed.

Two weight sets: ``DEFAULT_FAMILY_WEIGHTS``, the stream the shipped checkpoint was trained
on (the families added after the first ten have weight 0 there, so it is unchanged), and
``ROBOT_FAMILY_WEIGHTS``, which also draws them (picking up, kneeling, sitting on the floor,
reaching at a desk). New families are appended, never inserted: family indices are stored
in batches and studies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

Range = Tuple[float, float]
Spec = Dict[str, Tuple[Range, Range, Range]]  # bone base name -> (x, y, z) ranges, degrees

# Joint limits, degrees, (x, y, z) ranges for the left side in canonical axes.
LIMITS_DEG: Spec = {
    "spine": ((-12, 25), (-15, 15), (-12, 12)),  # each of the five spine bones
    "neck": ((-25, 30), (-25, 25), (-15, 15)),  # each of the three neck bones
    "head": ((-35, 35), (-45, 45), (-25, 25)),
    "clavicle": ((-12, 12), (-15, 15), (-10, 25)),
    "shoulder01": ((-15, 15), (-15, 15), (-15, 25)),
    "upperarm01": ((-165, 55), (-70, 70), (-60, 130)),
    "upperarm02": ((-3, 3), (-50, 50), (-3, 3)),
    "lowerarm01": ((-8, 8), (-8, 8), (-8, 8)),  # plus flexion about the elbow axis, see ELBOW_FLEX_DEG
    "lowerarm02": ((-3, 3), (-70, 70), (-3, 3)),
    "wrist": ((-45, 45), (-20, 20), (-30, 30)),
    "pelvis": ((-4, 4), (-4, 4), (-4, 4)),
    "upperleg01": ((-130, 30), (-35, 35), (-25, 50)),
    "upperleg02": ((-3, 3), (-20, 20), (-3, 3)),
    "lowerleg01": ((0, 145), (-5, 5), (-4, 4)),
    "lowerleg02": ((-2, 2), (-10, 10), (-2, 2)),
    "foot": ((-40, 30), (-15, 15), (-15, 15)),
    "finger": ((-20, 20), (-10, 10), (-20, 20)),
    "metacarpal": ((-3, 3), (-3, 3), (-3, 3)),
    "toe": ((0, 0), (0, 0), (0, 0)),
    "eye": ((0, 0), (0, 0), (0, 0)),
}
ELBOW_FLEX_DEG: Range = (0.0, 145.0)

_Z: Range = (0.0, 0.0)


def _r(x: Range = _Z, y: Range = _Z, z: Range = _Z) -> Tuple[Range, Range, Range]:
    return (x, y, z)


@dataclass(frozen=True)
class Family:
    """An activity: ranges for the lead side, the other side and the midline, in degrees."""

    lead: Spec = field(default_factory=dict)
    other: Spec = field(default_factory=dict)
    mid: Spec = field(default_factory=dict)  # spine, neck, head (per bone)
    lead_elbow: Range = (5.0, 30.0)
    other_elbow: Range = (5.0, 30.0)
    tilt: Tuple[Range, Range] | None = None  # global pitch about x / roll about z (lying)


_ARMS_DOWN = _r((-20, 15), (-15, 15), (-50, -25))  # from Anny's A-pose to hanging arms
_LEG_STAND = _r((-8, 6), (-8, 8), (-3, 8))
FAMILIES: Dict[str, Family] = {
    "standing": Family(
        lead={"upperarm01": _ARMS_DOWN, "upperleg01": _LEG_STAND, "lowerleg01": _r((0, 10))},
        other={"upperarm01": _ARMS_DOWN, "upperleg01": _LEG_STAND, "lowerleg01": _r((0, 10))},
        mid={"spine": _r((-3, 4), (-3, 3), (-2, 2)), "head": _r((-15, 15), (-30, 30), (-8, 8))},
    ),
    "walking": Family(
        lead={
            "upperarm01": _r((5, 30), (-10, 10), (-45, -30)),
            "upperleg01": _r((-40, -12), (-5, 5), (0, 6)),
            "lowerleg01": _r((5, 40)),
            "foot": _r((-15, 10)),
        },
        other={
            "upperarm01": _r((-35, -5), (-10, 10), (-45, -30)),
            "upperleg01": _r((5, 25), (-5, 5), (0, 6)),
            "lowerleg01": _r((10, 65)),
            "foot": _r((-5, 25)),
        },
        mid={"spine": _r((-1, 3), (-4, 4), (-1, 1))},
        lead_elbow=(10, 45),
        other_elbow=(10, 45),
    ),
    "reaching": Family(
        lead={"upperarm01": _r((-125, -40), (-30, 30), (-25, 45)), "upperleg01": _LEG_STAND},
        other={"upperarm01": _ARMS_DOWN, "upperleg01": _LEG_STAND},
        mid={"spine": _r((0, 10), (-8, 8), (-5, 5)), "head": _r((-10, 25), (-30, 30))},
        lead_elbow=(0, 40),
        other_elbow=(5, 40),
    ),
    "pointing": Family(
        lead={"upperarm01": _r((-100, -60), (-20, 20), (-30, 35)), "upperleg01": _LEG_STAND},
        other={"upperarm01": _ARMS_DOWN, "upperleg01": _LEG_STAND},
        mid={"head": _r((-10, 15), (-35, 35))},
        lead_elbow=(0, 15),
        other_elbow=(5, 40),
    ),
    "sitting": Family(
        lead={
            "upperarm01": _r((-35, -5), (-15, 15), (-45, -25)),
            "upperleg01": _r((-100, -75), (-8, 8), (0, 15)),
            "lowerleg01": _r((65, 110)),
            "foot": _r((-10, 15)),
        },
        other={
            "upperarm01": _r((-35, -5), (-15, 15), (-45, -25)),
            "upperleg01": _r((-100, -75), (-8, 8), (0, 15)),
            "lowerleg01": _r((65, 110)),
            "foot": _r((-10, 15)),
        },
        mid={"spine": _r((-4, 8), (-4, 4), (-3, 3)), "head": _r((-10, 20), (-30, 30))},
        lead_elbow=(20, 90),
        other_elbow=(20, 90),
    ),
    "crouching": Family(
        lead={
            "upperarm01": _r((-70, -20), (-15, 15), (-40, -10)),
            "upperleg01": _r((-130, -100), (-10, 10), (5, 28)),
            "lowerleg01": _r((110, 142)),
            "foot": _r((-35, -10)),
        },
        other={
            "upperarm01": _r((-70, -20), (-15, 15), (-40, -10)),
            "upperleg01": _r((-130, -100), (-10, 10), (5, 28)),
            "lowerleg01": _r((110, 142)),
            "foot": _r((-35, -10)),
        },
        mid={"spine": _r((5, 15), (-3, 3), (-3, 3)), "head": _r((-20, 10))},
        lead_elbow=(20, 100),
        other_elbow=(20, 100),
    ),
    "bending": Family(
        lead={
            "upperarm01": _r((-80, -30), (-15, 15), (-40, -20)),
            "upperleg01": _r((-60, -20), (-5, 5), (0, 10)),
            "lowerleg01": _r((0, 30)),
        },
        other={
            "upperarm01": _r((-80, -30), (-15, 15), (-40, -20)),
            "upperleg01": _r((-60, -20), (-5, 5), (0, 10)),
            "lowerleg01": _r((0, 30)),
        },
        mid={"spine": _r((10, 22), (-4, 4), (-3, 3)), "head": _r((-25, 10))},
        lead_elbow=(0, 40),
        other_elbow=(0, 40),
    ),
    "arms_raised": Family(
        lead={"upperarm01": _r((-40, 10), (-20, 20), (60, 115)), "upperleg01": _LEG_STAND},
        other={"upperarm01": _r((-40, 10), (-20, 20), (40, 115)), "upperleg01": _LEG_STAND},
        mid={"spine": _r((-6, 2)), "head": _r((-25, 5), (-20, 20))},
        lead_elbow=(0, 60),
        other_elbow=(0, 80),
    ),
    "turning": Family(
        lead={"upperarm01": _ARMS_DOWN, "upperleg01": _r((-20, 5), (-25, 25), (0, 12)), "lowerleg01": _r((0, 30))},
        other={"upperarm01": _ARMS_DOWN, "upperleg01": _r((-5, 10), (-25, 25), (0, 12)), "lowerleg01": _r((0, 15))},
        mid={"spine": _r((-2, 4), (6, 14), (-2, 2)), "head": _r((-10, 10), (-40, 40))},
        lead_elbow=(5, 60),
        other_elbow=(5, 60),
    ),
    "lying": Family(
        lead={
            "upperarm01": _r((-90, 20), (-30, 30), (-45, 60)),
            "upperleg01": _r((-70, 5), (-15, 15), (0, 25)),
            "lowerleg01": _r((0, 90)),
        },
        other={
            "upperarm01": _r((-90, 20), (-30, 30), (-45, 60)),
            "upperleg01": _r((-70, 5), (-15, 15), (0, 25)),
            "lowerleg01": _r((0, 90)),
        },
        mid={"spine": _r((-5, 10), (-5, 5), (-5, 5)), "head": _r((-20, 30), (-40, 40))},
        lead_elbow=(0, 100),
        other_elbow=(0, 100),
        tilt=((40, 95), (-20, 20)),
    ),
    # Families a robot at home or at work meets beside the ten above (weight 0 in the default
    # stream, see ROBOT_FAMILY_WEIGHTS). The prior study finds MediaPipe weakest on deep flexion
    # (crouching, bending: 2D error 7-9 % of the box diagonal against 3-4 % elsewhere), so these
    # add flexed poses a robot sees near the floor and at a desk.
    "picking_up": Family(  # deep, one-sided bend, the lead hand down to the floor, knees bent
        lead={
            "upperarm01": _r((-110, -60), (-20, 20), (-35, -5)),
            "upperleg01": _r((-115, -70), (-8, 8), (0, 20)),
            "lowerleg01": _r((30, 100)),
            "foot": _r((-30, 0)),
        },
        other={
            "upperarm01": _r((-60, -10), (-15, 15), (-40, -15)),
            "upperleg01": _r((-70, -25), (-8, 8), (0, 20)),
            "lowerleg01": _r((10, 70)),
            "foot": _r((-20, 10)),
        },
        mid={"spine": _r((15, 25), (-6, 6), (-4, 4)), "neck": _r((-20, 0)), "head": _r((-30, 0), (-25, 25))},
        lead_elbow=(0, 25),
        other_elbow=(20, 90),
    ),
    "kneeling": Family(  # on one knee (the lead foot planted) or both knees, upright trunk
        lead={
            "upperarm01": _r((-55, -5), (-15, 15), (-45, -15)),
            "upperleg01": _r((-100, -15), (-8, 8), (0, 15)),
            "lowerleg01": _r((75, 130)),
            "foot": _r((-25, 15)),
        },
        other={
            "upperarm01": _r((-55, -5), (-15, 15), (-45, -15)),
            "upperleg01": _r((-25, 10), (-8, 8), (0, 12)),
            "lowerleg01": _r((95, 140)),
            "foot": _r((-35, 25)),
        },
        mid={"spine": _r((-3, 10), (-5, 5), (-3, 3)), "head": _r((-15, 20), (-30, 30))},
        lead_elbow=(10, 90),
        other_elbow=(10, 90),
    ),
    "floor_sitting": Family(  # on the floor: cross-legged or legs out, hips open, trunk slouched
        lead={
            "upperarm01": _r((-50, -5), (-15, 15), (-45, -10)),
            "upperleg01": _r((-105, -65), (-30, 30), (15, 48)),
            "lowerleg01": _r((10, 140)),
            "foot": _r((-15, 25)),
        },
        other={
            "upperarm01": _r((-50, -5), (-15, 15), (-45, -10)),
            "upperleg01": _r((-105, -65), (-30, 30), (15, 48)),
            "lowerleg01": _r((10, 140)),
            "foot": _r((-15, 25)),
        },
        mid={"spine": _r((2, 12), (-5, 5), (-3, 3)), "head": _r((-15, 25), (-30, 30))},
        lead_elbow=(10, 90),
        other_elbow=(10, 90),
    ),
    "desk_reaching": Family(  # seated, leaning to a table, the lead arm forward or up to it
        lead={
            "upperarm01": _r((-120, -45), (-25, 25), (-30, 25)),
            "upperleg01": _r((-100, -70), (-8, 8), (0, 15)),
            "lowerleg01": _r((60, 115)),
            "foot": _r((-10, 15)),
        },
        other={
            "upperarm01": _r((-75, -20), (-15, 15), (-40, -15)),
            "upperleg01": _r((-100, -70), (-8, 8), (0, 15)),
            "lowerleg01": _r((60, 115)),
            "foot": _r((-10, 15)),
        },
        mid={"spine": _r((3, 12), (-8, 8), (-4, 4)), "head": _r((0, 30), (-25, 25))},
        lead_elbow=(0, 60),
        other_elbow=(40, 120),
    ),
    # real motion capture (the CMU library, retargeted: hmdiff_ros.data.mocap); its ranges are
    # unused: a pose is a captured frame, mirrored at random, plus the noise every family gets
    "mocap": Family(),
}
FAMILY_NAMES: Tuple[str, ...] = tuple(FAMILIES)
MOCAP = "mocap"
# The stream the shipped checkpoint was trained on: the families added after the first ten
# have weight 0, so it draws exactly what it drew before them (tests/test_pose_families.py).
DEFAULT_FAMILY_WEIGHTS: Tuple[float, ...] = (0.18, 0.15, 0.1, 0.08, 0.12, 0.08, 0.08, 0.08, 0.07, 0.06, 0, 0, 0, 0, 0)
# Poses a robot sees: about a quarter of the samples near the floor or at a desk
# (SyntheticConfig(family_weights=ROBOT_FAMILY_WEIGHTS)).
ROBOT_FAMILY_WEIGHTS: Tuple[float, ...] = tuple(
    {
        "standing": 0.12,
        "walking": 0.1,
        "reaching": 0.08,
        "pointing": 0.05,
        "sitting": 0.1,
        "crouching": 0.07,
        "bending": 0.07,
        "arms_raised": 0.05,
        "turning": 0.06,
        "lying": 0.04,
        "picking_up": 0.07,
        "kneeling": 0.06,
        "floor_sitting": 0.06,
        "desk_reaching": 0.07,
        "mocap": 0.0,
    }[name]
    for name in FAMILIES
)
# The robot-view families with real motion capture as 30 % of the samples
MOCAP_FAMILY_WEIGHTS: Tuple[float, ...] = tuple(
    0.3 if name == MOCAP else 0.7 * w for name, w in zip(FAMILIES, ROBOT_FAMILY_WEIGHTS, strict=True)
)
NOISE_DEG = 4.0  # Gaussian noise added to every bone before clipping


def family_weights(names: Sequence[str]) -> Tuple[float, ...]:
    """Equal weights on the families ``names`` (e.g. ``("kneeling", "picking_up")``), 0 elsewhere."""
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"pose families must be among {', '.join(FAMILY_NAMES)}; got {list(names)}")
    return tuple(float(n in names) for n in FAMILY_NAMES)


def check_family_weights(weights: Sequence[float]) -> np.ndarray:
    """``weights`` as probabilities over :data:`FAMILY_NAMES`; ``ValueError`` unless they are one
    non-negative number per family with a positive sum."""
    if len(weights) != len(FAMILIES) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(
            f"family_weights must be {len(FAMILIES)} non-negative numbers (for {list(FAMILY_NAMES)}), got {list(weights)}"
        )
    return np.asarray(weights, dtype=float) / np.sum(weights)


def _base(label: str) -> Tuple[str, str]:
    """'upperarm01.L' -> ('upperarm01', 'L'); 'spine03' -> ('spine', ''); 'finger2-3.R' -> ('finger', 'R')."""
    name, _, side = label.partition(".")
    for key in LIMITS_DEG:
        if name.startswith(key):
            return key, side
    raise KeyError(f"no joint limits for Anny bone '{label}'")


def _table(labels: Sequence[str], spec_l: Spec, spec_r: Spec, mid: Spec, default: Spec) -> np.ndarray:
    """(103, 3, 2) ranges in radians; right-side bones get the mirrored spec_r."""
    out = np.zeros((len(labels), 3, 2))
    for i, label in enumerate(labels):
        key, side = _base(label)
        spec = spec_l if side == "L" else spec_r if side == "R" else mid
        rng = np.array(spec.get(key, default.get(key, (_Z, _Z, _Z))), dtype=float)  # (3, 2)
        if side == "R":
            rng[1:] = -rng[1:, ::-1]
        out[i] = np.deg2rad(rng)
    return out


def _mirror_label(label: str) -> str:
    """The bone on the other side: 'upperarm01.L' -> 'upperarm01.R'; midline bones are their own."""
    name, dot, side = label.partition(".")
    return f"{name}.{'R' if side == 'L' else 'L'}" if side in ("L", "R") else label


def mirror_poses(pose: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Poses ``(N, 103, 3)`` mirrored left to right: each bone takes its mirror bone's
    rotation (``mirror``: the index of each bone's mirror) with the y and z axis components
    negated (a reflection of x)."""
    out = pose[:, mirror].copy()
    out[..., 1:] *= -1
    return out


MOCAP_POSES = Path(__file__).parent / "assets" / "mocap_poses.npz"


def load_mocap_poses(labels: Sequence[str], path: "str | Path" = MOCAP_POSES) -> np.ndarray:
    """The retargeted motion-capture poses (``hmdiff data mocap``) as ``(N, 103, 3)`` over
    ``labels`` (Anny's bones but the root); bones the retargeting does not set stay at rest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion-capture poses '{path}' not found; make them with 'hmdiff data mocap'")
    with np.load(path, allow_pickle=False) as data:
        fitted, bones = data["pose"].astype(np.float64), [str(b) for b in data["fit_bones"]]
    pose = np.zeros((len(fitted), len(labels), 3))
    pose[:, [list(labels).index(b) for b in bones]] = fitted
    return pose


class PoseSampler:
    """Samples ``(B, 103, 3)`` poses from activity families, clipped to joint limits.

    ``rest_heads``: ``(104, 3)`` bone heads of a rest body in canonical axes (elbow axes);
    ``bone_labels``: Anny's 104 bone labels.
    """

    def __init__(
        self,
        bone_labels: Sequence[str],
        rest_heads: np.ndarray,
        family_weights: Sequence[float] = DEFAULT_FAMILY_WEIGHTS,
        noise_deg: float = NOISE_DEG,
    ) -> None:
        self.weights = check_family_weights(family_weights)
        if noise_deg < 0:
            raise ValueError(f"noise_deg must be >= 0, got {noise_deg}")
        labels = list(bone_labels[1:])
        self.labels = labels
        self.noise = np.deg2rad(noise_deg)
        self.limits = _table(labels, LIMITS_DEG, LIMITS_DEG, LIMITS_DEG, {})  # (103, 3, 2)
        # Per family: ranges with the lead on the left, and with the lead on the right.
        self.ranges: List[Tuple[np.ndarray, np.ndarray]] = []
        for fam in FAMILIES.values():
            left = _table(labels, fam.lead, fam.other, fam.mid, {})
            right = _table(labels, fam.other, fam.lead, fam.mid, {})
            self.ranges.append((left, right))
        self.elbows = {side: labels.index(f"lowerarm01.{side}") for side in "LR"}
        heads = np.asarray(rest_heads)
        self.elbow_axes = {}
        for side in "LR":
            forearm = heads[bone_labels.index(f"wrist.{side}")] - heads[bone_labels.index(f"lowerarm01.{side}")]
            axis = np.cross(forearm, [0.0, 0.0, 1.0])  # positive rotation swings the forearm forward
            self.elbow_axes[side] = axis / np.linalg.norm(axis)
        self.fingers = np.array([_base(lab)[0] == "finger" for lab in labels])
        self.mocap = None  # captured poses (N, 103, 3), loaded when the mocap family is drawn
        if self.weights[FAMILY_NAMES.index(MOCAP)] > 0:
            self.mocap = load_mocap_poses(labels)
        mirror = [labels.index(_mirror_label(lab)) for lab in labels]
        self.mirror = np.asarray(mirror)

    def sample(
        self, rng: np.random.Generator, num: int, family_weights: Sequence[float] | None = None
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Poses ``(num, 103, 3)``, family indices ``(num,)`` and global tilt rotations
        ``(num, 3)`` (axis-angle, non-zero for lying poses; apply before the yaw).
        ``family_weights``: other weights for this draw (default: the sampler's)."""
        weights = self.weights if family_weights is None else check_family_weights(family_weights)
        family = rng.choice(len(FAMILIES), size=num, p=weights)
        lead_right = rng.random(num) < 0.5
        lo = np.empty((num, len(self.labels), 3))
        hi = np.empty_like(lo)
        elbow_lead = np.empty((num, 2))
        elbow_other = np.empty((num, 2))
        tilt = np.zeros((num, 3))
        for f, fam in enumerate(FAMILIES.values()):
            rows = family == f
            if not rows.any():
                continue
            tables = np.where(lead_right[rows, None, None, None], self.ranges[f][1], self.ranges[f][0])
            lo[rows], hi[rows] = tables[..., 0], tables[..., 1]
            elbow_lead[rows], elbow_other[rows] = np.deg2rad(fam.lead_elbow), np.deg2rad(fam.other_elbow)
            if fam.tilt is not None:
                n = int(rows.sum())
                pitch = np.deg2rad(rng.uniform(*fam.tilt[0], size=n)) * rng.choice([-1.0, 1.0], size=n)
                tilt[rows, 0] = pitch
                tilt[rows, 2] = np.deg2rad(rng.uniform(*fam.tilt[1], size=n))
        pose = rng.uniform(lo, hi) + rng.normal(scale=self.noise, size=lo.shape)
        finger_curl = rng.uniform(-0.3, 0.3, size=(num, int(self.fingers.sum()), 3))
        pose[:, self.fingers] = finger_curl
        pose = np.clip(pose, self.limits[..., 0], self.limits[..., 1])
        for side in "LR":
            is_lead = lead_right if side == "R" else ~lead_right
            ranges = np.where(is_lead[:, None], elbow_lead, elbow_other)
            flex = np.clip(rng.uniform(ranges[:, 0], ranges[:, 1]), *np.deg2rad(ELBOW_FLEX_DEG))
            pose[:, self.elbows[side]] += flex[:, None] * self.elbow_axes[side]
        captured = family == FAMILY_NAMES.index(MOCAP)
        if captured.any():  # a captured frame (mirrored for half: lead_right) plus the noise
            if self.mocap is None:
                self.mocap = load_mocap_poses(self.labels)
            frames = self.mocap[rng.integers(len(self.mocap), size=int(captured.sum()))]
            flip = lead_right[captured]
            frames[flip] = mirror_poses(frames[flip], self.mirror)
            frames += rng.normal(scale=self.noise, size=frames.shape)
            frames[:, self.fingers] = finger_curl[captured]
            pose[captured] = frames
        return pose.astype(np.float32), family, tilt.astype(np.float32)
