"""The frame pipeline, ROS-free: RGB image -> people -> prior -> HMDiff -> metric meshes.

For each person: the prior's keypoints, mask and 3D joints (φ_P) -> the crop observation and
the proxy input (exactly as in training) -> HMDiff sampling with DAT (M hypotheses) -> the
root-relative coarse mesh and joints -> the full mesh (topology up-sampling) -> the
camera-frame translation that makes the joints project onto the prior's keypoints
(full perspective with the camera intrinsics) -> a :class:`PersonResult` in the camera
optical frame (x right, y down, z forward; metres).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from hmdiff_ros import defaults
from hmdiff_ros.body.joints import JOINT_NAMES, PRIOR_JOINT_INDICES
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.camera import check_intrinsics, intrinsics_from_fov, project, solve_translation
from hmdiff_ros.image import check_image
from hmdiff_ros.observation import ProxyConfig, in_image, make_proxy, observe
from hmdiff_ros.pipeline.config import PipelineConfig
from hmdiff_ros.prior.base import PosePrior

log = logging.getLogger(__name__)


@dataclass
class PersonResult:
    """One person, camera optical frame, metres; joints ordered as ``joint_names``."""

    box: np.ndarray  # (4,) u0, v0, u1, v1: the square crop the model saw, pixels
    score: float  # the prior's confidence in [0, 1]
    joints: np.ndarray  # (25, 3)
    joints_uv: np.ndarray  # (25, 2) reprojected pixels
    prior_uv: np.ndarray  # (25, 2) the prior's keypoints, NaN where it has none (head_top)
    visibility: np.ndarray  # (25,) the prior's visibility, 0 where it has none
    joint_std: np.ndarray  # (25,) spread over the hypotheses, metres
    coarse_vertices: np.ndarray  # (600, 3)
    vertices: np.ndarray | None  # (13718, 3) when full_mesh
    translation: np.ndarray  # (3,) the pelvis in the camera frame
    # (25, 3) the prior's own 3D joints U (what DAT aligns to): metres, camera-aligned axes,
    # relative to the prior's root (mid-hip), NaN where it has none (head_top); None when the
    # result did not come from Pipeline.run
    prior_xyz: np.ndarray | None = None
    joint_names: tuple = JOINT_NAMES
    track_id: int = -1


@dataclass
class ModelInputs:
    """What a frame fed the model, one row per person (benchmarks re-time the model on it)."""

    proxy: np.ndarray  # (B, C, S, S) float32: the encoder input
    prior_xyz: np.ndarray  # (B, 24, 3) the prior's root-relative joints U, metres
    prior_vis: np.ndarray  # (B, 24) their visibility


@dataclass
class Prepared:
    """A frame after :meth:`Pipeline.prepare`: what :meth:`Pipeline.finish` needs."""

    size: Tuple[int, int]  # (width, height) of the image
    K: np.ndarray  # (3, 3) intrinsics used
    people: List  # (prior person, its observation) per person found
    timings: Dict[str, float]  # seconds: prior, and proxy when someone was found
    inputs: ModelInputs | None  # None when no person was found


@dataclass
class FrameResult:
    """One frame through :meth:`Pipeline.run`."""

    people: List[PersonResult]
    timings: Dict[str, float]  # seconds per stage: prior, then proxy, model and geometry when someone was found
    model_inputs: ModelInputs | None  # None when no person was found


class Pipeline:
    """``pipeline(image, K=None, boxes=None) -> [PersonResult]`` for RGB uint8 images;
    :meth:`run` also returns the frame's stage timings and model inputs."""

    def __init__(
        self, model, prior: PosePrior, topology: Topology | None = None, cfg: PipelineConfig = PipelineConfig()
    ) -> None:
        self.model = model.eval()
        self.prior = prior
        self.topology = topology or Topology.load()
        self.cfg = cfg
        self.proxy_cfg = ProxyConfig(crop_size=model.cfg.encoder.input_size)
        self.rejected = 0  # people dropped because their placement was implausible (see implausible_placement)

    def __call__(
        self, image: np.ndarray, K: np.ndarray | None = None, boxes: Sequence[np.ndarray] | None = None
    ) -> List[PersonResult]:
        return self.run(image, K, boxes).people

    def run(
        self, image: np.ndarray, K: np.ndarray | None = None, boxes: Sequence[np.ndarray] | None = None
    ) -> FrameResult:
        """The people in ``image`` (RGB uint8), with the stage timings and the model inputs.

        ``K``: camera intrinsics ``(3, 3)`` (None: from ``hfov_deg``); ``boxes``: person boxes
        ``(u0, v0, u1, v1)`` in pixels (None: the prior finds one person). The same as
        :meth:`finish` of :meth:`prepare`: a stream may prepare frame t+1 while it finishes t."""
        return self.finish(self.prepare(image, K, boxes))

    def prepare(
        self, image: np.ndarray, K: np.ndarray | None = None, boxes: Sequence[np.ndarray] | None = None
    ) -> Prepared:
        """The first half of :meth:`run`: the prior and the model's inputs (no model call)."""
        image = check_image(image)
        h, w = image.shape[:2]
        K = intrinsics_from_fov(w, h, self.cfg.hfov_deg) if K is None else check_intrinsics(K, w, h)
        if boxes is not None:
            boxes = self._boxes_in_image(boxes, w, h)
        t0 = time.perf_counter()
        detections = [self.prior.detect(image)] if boxes is None else [self.prior.detect(image, box=b) for b in boxes]
        t1 = time.perf_counter()
        people = [(p, observe(p, (w, h), self.proxy_cfg)) for p in detections if p is not None]
        people = [(p, o) for p, o in people if o is not None]
        timings = {"prior": t1 - t0}
        if not people:
            return Prepared((w, h), K, [], timings, None)
        obs = [o for _, o in people]
        proxy = make_proxy(
            np.stack([o.uv for o in obs]),
            np.stack([o.visibility for o in obs]),
            np.stack([o.mask for o in obs]),
            np.stack([o.valid for o in obs]),
            self.proxy_cfg,
        )
        timings["proxy"] = time.perf_counter() - t1
        prior_xyz, prior_vis = np.stack([o.prior_xyz for o in obs]), np.stack([o.visibility for o in obs])
        return Prepared((w, h), K, people, timings, ModelInputs(proxy, prior_xyz, prior_vis))

    def finish(self, prepared: Prepared) -> FrameResult:
        """The second half of :meth:`run`: the model and the camera-frame geometry."""
        (w, h), K, people, timings = prepared.size, prepared.K, prepared.people, dict(prepared.timings)
        inputs = prepared.inputs
        if inputs is None:
            return FrameResult([], timings, None)
        t2 = time.perf_counter()
        points, joint_std = self._sample(inputs.proxy, inputs.prior_xyz, inputs.prior_vis)
        t3 = time.perf_counter()
        results = []
        q = list(PRIOR_JOINT_INDICES)
        # the full meshes of everyone in one up-sampling (root-relative; each placed below)
        full = self.topology.upsample(points[:, : self.model.num_coarse]) if self.cfg.full_mesh else None
        for i, (person, o) in enumerate(people):
            coarse, joints = points[i, : self.model.num_coarse], points[i, self.model.num_coarse :]
            inside = in_image(o.prior_uv, (w, h))
            weight = np.where((o.visibility >= self.proxy_cfg.min_visibility) & inside, o.visibility, 0.0)
            t = solve_translation(joints[q], o.prior_uv.astype(np.float64), weight, K)
            why = implausible_placement(joints + t)
            if why:  # absurd intrinsics or a failed prior: never published as a result
                log.warning("person %d dropped: %s", i, why)
                self.rejected += 1
                continue
            prior_uv = np.full((len(JOINT_NAMES), 2), np.nan)
            prior_uv[q] = o.prior_uv
            prior_xyz = np.full((len(JOINT_NAMES), 3), np.nan)
            prior_xyz[q] = o.prior_xyz
            vis = np.zeros(len(JOINT_NAMES))
            vis[q] = o.visibility
            cx, cy, s = o.box
            results.append(
                PersonResult(
                    box=np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]),
                    score=person.score,
                    joints=joints + t,
                    joints_uv=project(joints + t, K),
                    prior_uv=prior_uv,
                    visibility=vis,
                    joint_std=joint_std[i],
                    coarse_vertices=coarse + t,
                    vertices=full[i] + t if full is not None else None,
                    translation=t,
                    prior_xyz=prior_xyz,
                )
            )
        timings.update(model=t3 - t2, geometry=time.perf_counter() - t3)
        return FrameResult(results, timings, inputs)

    def batch_limit(self) -> int:
        """The most rows (people x hypotheses) sampled in one model call: ``MAX_BATCH``, or the
        model's own limit where lower (a TensorRT engine's profile)."""
        return min(defaults.MAX_BATCH, getattr(self.model, "max_batch", None) or defaults.MAX_BATCH)

    def max_people_per_call(self) -> int:
        """People sampled in one model call: :meth:`batch_limit` divided by the hypotheses, and
        at most the model's own ``max_people`` (a TensorRT engine's profile). Raises when one
        person's hypotheses alone exceed the limit."""
        limit = self.batch_limit()
        if self.cfg.hypotheses > limit:
            raise ValueError(
                f"hypotheses {self.cfg.hypotheses} exceed the {getattr(self.model, 'backend', 'model')} backend's "
                f"largest batch of {limit} (people x hypotheses); use at most {limit} hypotheses"
            )
        return min(limit // self.cfg.hypotheses, getattr(self.model, "max_people", None) or limit)

    def _sample(self, proxy: np.ndarray, prior_xyz: np.ndarray, prior_vis: np.ndarray):
        """Points ``(B, P, 3)`` and joint spreads ``(B, J)`` (float64), in chunks of people."""
        chunk = self.max_people_per_call()
        generator = torch.Generator().manual_seed(self.cfg.seed)
        points, spread = [], []
        for a in range(0, len(proxy), chunk):
            out = self.model.sample(
                torch.as_tensor(proxy[a : a + chunk]),
                torch.as_tensor(prior_xyz[a : a + chunk]),
                torch.as_tensor(prior_vis[a : a + chunk]),
                steps=self.cfg.steps,
                dat=self.cfg.dat,
                hypotheses=self.cfg.hypotheses,
                generator=generator,
            )
            points.append(out.points.numpy().astype(np.float64))
            spread.append(out.joint_std.numpy().astype(np.float64))
        return np.concatenate(points), np.concatenate(spread)

    @staticmethod
    def _boxes_in_image(boxes: Sequence[np.ndarray], w: int, h: int) -> List[np.ndarray]:
        """The boxes that overlap the image, each clipped to half an image beyond its border
        (the crop around a box is padded with black there: a huge box must not make a huge
        crop); each box outside the image is named in a warning and skipped."""
        kept = []
        for b in boxes:
            box = np.asarray(b, dtype=np.float64).reshape(-1)
            if box.shape == (4,) and np.isfinite(box).all():
                if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
                    log.warning("box %s lies outside the %dx%d image: skipped", [round(float(v), 1) for v in box], w, h)
                    continue
                box = np.clip(box, [-w / 2, -h / 2, -w / 2, -h / 2], [1.5 * w, 1.5 * h, 1.5 * w, 1.5 * h])
            kept.append(box)
        return kept


def implausible_placement(joints: np.ndarray) -> str | None:
    """Why camera-frame ``joints`` ``(J, 3)`` cannot be a person the camera sees, or None."""
    if not np.isfinite(joints).all():
        return "its placement is not finite"
    depth = float(joints[:, 2].min())
    if depth < defaults.MIN_DEPTH_M / 4 or joints[:, 2].mean() < defaults.MIN_DEPTH_M:
        return f"the body lies behind or at the camera (nearest joint at z = {depth:.2f} m)"
    if joints[:, 2].mean() > defaults.MAX_DEPTH_M:
        return f"the body lies {joints[:, 2].mean():.0f} m from the camera (more than {defaults.MAX_DEPTH_M:.0f} m)"
    return None


def build_pipeline(
    cfg: PipelineConfig, checkpoint: str | None = None, video: bool = False, fallback: bool = True
) -> Pipeline:
    """The :class:`Pipeline` with the MediaPipe prior;
    ``video``: the prior follows the person from frame to frame (for one video or camera
    stream; :meth:`MediaPipePrior.reset` between streams); ``fallback=False``: the backend asked
    for or an error (:func:`~hmdiff_ros.runtime.backends.load_model`)."""
    from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior
    from hmdiff_ros.runtime.backends import load_model

    backend = "torch" if cfg.dat.mode == "full" and cfg.backend == "auto" else cfg.backend  # only torch runs full DAT
    model = load_model(backend, checkpoint, cfg.engines, fallback=fallback, steps=(cfg.steps,))
    return Pipeline(model, MediaPipePrior(static_image_mode=not video), cfg=cfg)
