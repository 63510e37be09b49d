"""A pose-prior simulator fitted to how MediaPipe fails on synthetic people (``kind="fitted"``).

:mod:`hmdiff_ros.study.prior_study` renders held-out synthetic people and runs the real prior
on them; :func:`~hmdiff_ros.study.prior_fit.fit_prior_model` turns such a study into a small
parameter file (``hmdiff data fit-prior``), and :class:`FittedPrior` draws prior outputs from
it with numpy alone, as fast as the hand-set simulation
(:func:`hmdiff_ros.data.observe.simulate_prior`). The training data needs only this module.

What is fitted (P = 24 prior joints; a sample's *view* is its body yaw relative to the camera,
in ``VIEW_BINS`` bins; a joint's *condition* is front / behind the pelvis / behind the
occluder / outside the image, see :func:`joint_conditions`):

- detection: the rate at which the prior finds the person, by the visible part of the person's
  box (log area, clipped to the image, less the occluder) and the number of joints outside
  the image; a person not found gets no prior (all visibilities 0, so the engine draws again);
- left-right swaps by view: whole body, arms only or legs only
  (:func:`~hmdiff_ros.study.swaps.find_swaps`);
- 3D: a per-sample scale of the lateral axes and a separate one of depth (MediaPipe shrinks or
  grows people towards an adult and often collapses depth), drawn as pairs by height, their
  spread shrunk (``scale_shrink``, fitted) since per-sample scales also absorb that sample's
  residuals; then a per-joint bias by view in the camera frame and per-joint residuals, lateral
  (random direction) and depth (random sign) apart, their sizes correlated;
- 2D: a per-joint bias by view (image axes, a fraction of the person's size) and per-joint
  residuals in a random direction;
- visibilities: their distribution per joint and condition.

Residual sizes (the error sizes less the bias in quadrature) and visibilities are drawn from
their fitted quantiles per joint, condition and view (cells with too few samples pooled over
views, :data:`~hmdiff_ros.study.prior_fit.MIN_CELL`); a latent shared by all joints of a sample (Gaussian copula,
loadings fitted) makes a sample's errors large together, as MediaPipe's gross failures are.
The fit uses the study's first 80 % of samples by index; ``tests/test_prior_model.py`` checks
the agreement on the rest.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict

import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_FLIP_PERMUTATION, PRIOR_JOINT_INDICES, PRIOR_JOINT_NAMES
from hmdiff_ros.observation import in_image, in_rect

FORMAT_VERSION = 1
DEFAULT_PRIOR_MODEL = Path(__file__).resolve().parent / "assets" / "prior_model.npz"  # hmdiff data fit-prior
VIEW_BINS = 8  # body yaw bins of 45 degrees; bin VIEW_BINS // 2 faces the camera
CONDITIONS = ("front", "behind", "occluded", "outside")
LEVELS = np.array([0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98, 1.0])
OUTSIDE_EDGES = np.array([1, 3, 7, 13])  # detection by joints outside the image: 0, 1-2, 3-6, 7-12, 13+
HEIGHT_EDGES = np.array([1.2, 1.5])  # 3D scale pairs by rest height, metres
BEHIND_M = 0.08  # a joint this much deeper than the pelvis is "behind" (as in the hand-set simulation)
P = len(PRIOR_JOINT_INDICES)
PELVIS_P = PRIOR_JOINT_NAMES.index("pelvis")
PELVIS = JOINT_INDEX["pelvis"]
ARMS = np.array(
    [PRIOR_JOINT_NAMES.index(f"{s}_{j}") for j in ("shoulder", "elbow", "wrist") for s in ("left", "right")]
)
LEGS = np.array(
    [
        PRIOR_JOINT_NAMES.index(f"{s}_{j}")
        for j in ("hip", "knee", "ankle", "heel", "big_toe")
        for s in ("left", "right")
    ]
)
SWAP_KINDS = ("none", "body", "arms", "legs")


def _group_perm(groups) -> np.ndarray:
    perm = np.arange(P)
    flip = np.asarray(PRIOR_FLIP_PERMUTATION)
    for g in groups:
        perm[g] = flip[g]
    return perm


SWAP_PERMS = (np.arange(P), np.asarray(PRIOR_FLIP_PERMUTATION), _group_perm([ARMS]), _group_perm([LEGS]))


# -- conditions ---------------------------------------------------------------------------


def body_yaw(rotation: np.ndarray, pelvis: np.ndarray) -> np.ndarray:
    """Yaw (N,) of the body's facing direction (canonical +z; ``rotation`` body -> camera) from
    the direction towards the camera, in the camera's horizontal plane: 0 facing the camera,
    +-pi its back to it."""
    f = rotation[:, :, 2]
    tx, tz = -pelvis[:, 0], -pelvis[:, 2]
    return np.arctan2(f[:, 0] * tz - f[:, 2] * tx, f[:, 0] * tx + f[:, 2] * tz)


def view_bin(yaw: np.ndarray) -> np.ndarray:
    return np.clip(((yaw + np.pi) / (2 * np.pi) * VIEW_BINS).astype(np.int64), 0, VIEW_BINS - 1)


def person_size(person_box: np.ndarray) -> np.ndarray:
    return np.maximum(person_box[:, 2] - person_box[:, 0], person_box[:, 3] - person_box[:, 1])


def joint_conditions(
    xyz: np.ndarray, pelvis_depth: np.ndarray, uv: np.ndarray, image_size: np.ndarray, occluder: np.ndarray
) -> np.ndarray:
    """Condition index (N, P) into :data:`CONDITIONS` of joints ``xyz`` (camera frame) at ``uv``."""
    cond = np.where(xyz[..., 2] > pelvis_depth[:, None] + BEHIND_M, 1, 0)
    cond = np.where(in_rect(uv, occluder), 2, cond)
    return np.where(in_image(uv, image_size), cond, 3)


def visible_box_area(person_box: np.ndarray, image_size: np.ndarray, occluder: np.ndarray) -> np.ndarray:
    """Pixels (N,) of the person's box inside the image and not behind the occluder."""
    lo = np.maximum(person_box[:, :2], 0)
    hi = np.minimum(person_box[:, 2:], image_size - 1)
    wh = np.clip(hi - lo, 0, None)
    occ = np.nan_to_num(occluder, nan=-1.0)
    olo, ohi = np.maximum(occ[:, :2], lo), np.minimum(occ[:, 2:], hi)
    owh = np.clip(ohi - olo, 0, None)
    return np.maximum(wh.prod(1) - owh.prod(1), 1.0)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 through erf; |error| < 1.5e-7, enough for drawing.
    x = np.abs(z) / np.sqrt(2)
    t = 1 / (1 + 0.3275911 * x)
    y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(
        -x * x
    )
    return 0.5 * (1 + np.sign(z) * y)


@lru_cache(maxsize=4)
def load_prior_model(path: "str | Path" = DEFAULT_PRIOR_MODEL) -> "FittedPrior":
    """The fitted simulator in ``path`` (default: the packaged one), loaded once per process."""
    with np.load(path, allow_pickle=False) as data:
        params = {k: data[k] for k in data.files}
    if int(params["format"]) != FORMAT_VERSION:
        raise ValueError(f"'{path}' is prior-model format {int(params['format'])}; this code reads {FORMAT_VERSION}")
    return FittedPrior(params)


# -- sampling -----------------------------------------------------------------------------


def _draw(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Linear interpolation of quantile rows ``table`` (..., L) at ``u`` (...) in [0, 1]."""
    pos = np.interp(u, LEVELS, np.arange(len(LEVELS)))
    i = np.minimum(pos.astype(np.int64), len(LEVELS) - 2)
    w = pos - i
    lo = np.take_along_axis(table, i[..., None], -1)[..., 0]
    hi = np.take_along_axis(table, i[..., None] + 1, -1)[..., 0]
    return lo + w * (hi - lo)


class FittedPrior:
    """Draws MediaPipe-like prior outputs from fitted parameters (see the module docstring)."""

    def __init__(self, params: Dict[str, np.ndarray]) -> None:
        self.p = {k: np.asarray(v, np.float64) if v.dtype == np.float16 else v for k, v in params.items()}
        pairs = self.p["scale_pairs"]
        centre = np.median(pairs, 0)
        self.p["scale_pairs"] = centre + float(self.p["scale_shrink"]) * (pairs - centre)
        hb = np.digitize(self.p["scale_height"], HEIGHT_EDGES)
        self.scale_rows = [np.flatnonzero(hb == b) for b in range(len(HEIGHT_EDGES) + 1)]
        everything = np.arange(len(hb))
        self.scale_rows = [r if len(r) else everything for r in self.scale_rows]
        self.swap_cdf = np.cumsum(self.p["swap"], 1)

    def detect_prob(self, area: np.ndarray, outside: np.ndarray) -> np.ndarray:
        a = np.digitize(np.log(area), self.p["area_edges"])
        return self.p["detect"][a, np.digitize(outside, OUTSIDE_EDGES)]

    def sample(
        self,
        rng: np.random.Generator,
        xyz: np.ndarray,
        pelvis: np.ndarray,
        uv: np.ndarray,
        image_size: np.ndarray,
        person_box: np.ndarray,
        occluders: np.ndarray,
        heights: np.ndarray,
        rotation: np.ndarray,
    ) -> Dict[str, np.ndarray]:
        """Prior outputs for ``N`` people: prior joints ``xyz`` (N, P, 3) in the camera frame,
        ``pelvis`` (N, 3), their projections ``uv`` (N, P, 2), ``rotation`` (N, 3, 3) body ->
        camera. Returns ``prior_uv``, ``prior_vis``, ``prior_xyz``, ``swapped`` (N,) and
        ``detected`` (N,); a person not detected has all visibilities 0."""
        n = len(xyz)
        p = self.p
        view = view_bin(body_yaw(rotation, pelvis))
        size = person_size(person_box)
        inside = in_image(uv, image_size)
        area = visible_box_area(person_box, image_size, occluders)
        detected = rng.random(n) < self.detect_prob(area, (~inside).sum(1))

        # swaps: the truth as the prior will label it
        kind = (rng.random(n)[:, None] > self.swap_cdf[view]).sum(1)
        kind = np.minimum(kind, len(SWAP_KINDS) - 1)
        perms = np.stack(SWAP_PERMS)[kind]
        rows = np.arange(n)[:, None]
        rel = (xyz - pelvis[:, None])[rows, perms]
        gt_uv = uv[rows, perms]
        cond = joint_conditions(xyz, pelvis[:, 2], uv, image_size, occluders)[rows, perms]

        shared = rng.standard_normal(n)[:, None]
        jidx = np.arange(P)[None, :]
        cells = (jidx, cond, view[:, None])  # (N, P) indices into the tables

        def latent(rho: float) -> np.ndarray:  # (N, P) uniforms, loading rho on the sample's latent
            return _normal_cdf(rho * shared + np.sqrt(1 - rho**2) * rng.standard_normal((n, P)))

        rho2, rho3, rhov, axis_corr = p["rho"]
        angle = rng.uniform(0, 2 * np.pi, (n, P))
        mag = _draw(p["q2"][cells], latent(rho2))
        r2 = p["bias2"][jidx, view[:, None]] + mag[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
        prior_uv = gt_uv + r2 * size[:, None, None]

        hb = np.digitize(heights, HEIGHT_EDGES)
        pairs = np.empty((n, 2))
        for b, rows_b in enumerate(self.scale_rows):
            m = hb == b
            pairs[m] = p["scale_pairs"][rows_b[rng.integers(len(rows_b), size=int(m.sum()))]]
        zj = rng.standard_normal((n, P))
        zd = axis_corr * zj + np.sqrt(1 - axis_corr**2) * rng.standard_normal((n, P))
        keep = np.sqrt(1 - rho3**2)
        lateral = _draw(p["q3"][cells + (0,)], _normal_cdf(rho3 * shared + keep * zj))
        depth = _draw(p["q3"][cells + (1,)], _normal_cdf(rho3 * shared + keep * zd))
        angle = rng.uniform(0, 2 * np.pi, (n, P))
        sign = np.where(rng.random((n, P)) < 0.5, -1.0, 1.0)
        r3 = p["bias3"][jidx, view[:, None]] + np.stack(
            [lateral * np.cos(angle), lateral * np.sin(angle), sign * depth], -1
        )
        r3[:, PELVIS_P] = 0.0
        prior_xyz = rel * np.stack([pairs[:, 0], pairs[:, 0], pairs[:, 1]], -1)[:, None] + r3

        vis = _draw(p["qvis"][cells], 1 - latent(rhov))
        vis = np.where(detected[:, None], np.clip(vis, 0.0, 1.0), 0.0)
        return {
            "prior_uv": prior_uv,
            "prior_vis": vis,
            "prior_xyz": prior_xyz,
            "swapped": kind > 0,
            "detected": detected,
        }

    def summary(self) -> Dict:
        """Headline numbers of the fit (JSON-ready)."""
        p = self.p
        swap = p["swap"]
        centres = [round(-180 + 45 * (b + 0.5)) for b in range(VIEW_BINS)]
        bias3 = np.linalg.norm(p["bias3"], axis=-1)  # (P, V)
        bias2 = np.linalg.norm(p["bias2"], axis=-1)
        s = p["scale_pairs"]  # as drawn: the fitted pairs' spread shrunk by scale_shrink
        return {
            "view_centres_deg": centres,
            "swap_rate_by_view": {k: swap[:, i].round(4).tolist() for i, k in enumerate(SWAP_KINDS) if k != "none"},
            "mean_3d_bias_m_by_view": bias3.mean(0).round(4).tolist(),
            "mean_2d_bias_by_view": bias2.mean(0).round(4).tolist(),
            "scale_lateral_q10_50_90": np.quantile(s[:, 0], [0.1, 0.5, 0.9]).round(3).tolist(),
            "scale_depth_q10_50_90": np.quantile(s[:, 1], [0.1, 0.5, 0.9]).round(3).tolist(),
            "scale_corr": round(float(np.corrcoef(s[:, 0], s[:, 1])[0, 1]), 3),
            "scale_shrink": round(float(p["scale_shrink"]), 3),
            "latent_loading_2d_3d_vis": np.round(p["rho"][:3], 3).tolist(),
            "lateral_depth_residual_corr": round(float(p["rho"][3]), 3),
            "detect_rate_range": [round(float(p["detect"].min()), 3), round(float(p["detect"].max()), 3)],
        }


def simulate_fitted_prior(
    rng: np.random.Generator,
    joints_cam: np.ndarray,
    uv: np.ndarray,
    image_size: np.ndarray,
    person_box: np.ndarray,
    occluders: np.ndarray,
    heights: np.ndarray,
    rotation: np.ndarray,
    path: "str | Path" = DEFAULT_PRIOR_MODEL,
) -> Dict[str, np.ndarray]:
    """:meth:`FittedPrior.sample` for the engine's arrays (all J = 25 joints)."""
    idx = list(PRIOR_JOINT_INDICES)
    return load_prior_model(path).sample(
        rng, joints_cam[:, idx], joints_cam[:, PELVIS], uv[:, idx], image_size, person_box, occluders, heights, rotation
    )
