"""The frame pipeline, ROS-free: RGB image -> people -> prior -> HMDiff -> metric meshes.

For each person: the prior's keypoints, mask and 3D joints (φ_P) -> the crop observation and
the proxy input (exactly as in training) -> HMDiff sampling with DAT (M hypotheses) -> the
root-relative coarse mesh and joints -> the full mesh (topology up-sampling) -> the
camera-frame translation that makes the joints project onto the prior's keypoints
(full perspective with the camera intrinsics) -> a :class:`PersonResult` in the camera
optical frame (x right, y down, z forward; metres).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import torch

from hmdiff_ros.body.joints import JOINT_NAMES, PRIOR_JOINT_INDICES
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.camera import DEFAULT_HFOV_DEG, intrinsics_from_fov, project, solve_translation
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.proxy import ProxyConfig, make_proxy
from hmdiff_ros.prior.base import PosePrior, observe
from hmdiff_ros.prior.mediapipe_prior import check_image


@dataclass(frozen=True)
class PipelineConfig:
    steps: int = 4  # DDIM steps
    dat: DATConfig = field(default_factory=DATConfig)
    hypotheses: int = 4  # samples per person: their spread is the per-joint uncertainty
    hfov_deg: float = DEFAULT_HFOV_DEG  # field of view used when no intrinsics are given
    full_mesh: bool = True  # up-sample to the full 13,718-vertex mesh
    seed: int = 0  # sampling noise seed (results are deterministic per frame)
    backend: str = "torch"  # model backend: torch, onnxruntime, tensorrt or auto (hmdiff_ros.runtime.backends)
    engines: str = "engines"  # folder of the ONNX export / TensorRT engines

    def __post_init__(self) -> None:
        if self.steps < 1 or self.hypotheses < 1:
            raise ValueError(f"steps and hypotheses must be >= 1, got {self.steps} and {self.hypotheses}")


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
    joint_names: tuple = JOINT_NAMES
    track_id: int = -1


class Pipeline:
    """``pipeline(image, K=None, boxes=None) -> [PersonResult]`` for RGB uint8 images."""

    def __init__(
        self, model, prior: PosePrior, topology: Topology | None = None, cfg: PipelineConfig = PipelineConfig()
    ) -> None:
        self.model = model.eval()
        self.prior = prior
        self.topology = topology or Topology.load()
        self.cfg = cfg
        self.proxy_cfg = ProxyConfig(crop_size=model.cfg.encoder.input_size)
        self.timings: Dict[str, float] = {}  # seconds per stage of the last call
        self._last_inputs = None  # (proxy, prior_xyz, visibility) of the last call, for benchmarks

    def __call__(
        self, image: np.ndarray, K: np.ndarray | None = None, boxes: Sequence[np.ndarray] | None = None
    ) -> List[PersonResult]:
        image = check_image(image)
        h, w = image.shape[:2]
        if K is None:
            K = intrinsics_from_fov(w, h, self.cfg.hfov_deg)
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K must be a finite 3x3 intrinsics matrix with positive focal lengths, got {K.tolist()}")
        t0 = time.perf_counter()
        detections = [self.prior.detect(image)] if boxes is None else [self.prior.detect(image, box=b) for b in boxes]
        t1 = time.perf_counter()
        people = [(p, observe(p, (w, h), self.proxy_cfg)) for p in detections if p is not None]
        people = [(p, o) for p, o in people if o is not None]
        self.timings = {"prior": t1 - t0}
        if not people:
            return []
        obs = [o for _, o in people]
        proxy = make_proxy(
            np.stack([o.uv for o in obs]), np.stack([o.visibility for o in obs]),
            np.stack([o.mask for o in obs]), np.stack([o.valid for o in obs]), self.proxy_cfg,
        )  # fmt: skip
        t2 = time.perf_counter()
        self._last_inputs = (proxy, np.stack([o.prior_xyz for o in obs]), np.stack([o.visibility for o in obs]))
        out = self.model.sample(
            torch.as_tensor(proxy), torch.as_tensor(np.stack([o.prior_xyz for o in obs])),
            torch.as_tensor(np.stack([o.visibility for o in obs])), steps=self.cfg.steps, dat=self.cfg.dat,
            hypotheses=self.cfg.hypotheses, generator=torch.Generator().manual_seed(self.cfg.seed),
        )  # fmt: skip
        points = out.points.numpy().astype(np.float64)
        t3 = time.perf_counter()
        results = []
        q = list(PRIOR_JOINT_INDICES)
        for i, (person, o) in enumerate(people):
            coarse, joints = points[i, : self.model.num_coarse], points[i, self.model.num_coarse :]
            inside = (o.prior_uv >= 0).all(1) & (o.prior_uv[:, 0] < w) & (o.prior_uv[:, 1] < h)
            weight = np.where((o.visibility >= self.proxy_cfg.min_visibility) & inside, o.visibility, 0.0)
            t = solve_translation(joints[q], o.prior_uv.astype(np.float64), weight, K)
            prior_uv = np.full((len(JOINT_NAMES), 2), np.nan)
            prior_uv[q] = o.prior_uv
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
                    joint_std=out.joint_std[i].numpy().astype(np.float64),
                    coarse_vertices=coarse + t,
                    vertices=self.topology.upsample(coarse) + t if self.cfg.full_mesh else None,
                    translation=t,
                )  # fmt: skip
            )
        self.timings.update(proxy=t2 - t1, model=t3 - t2, geometry=time.perf_counter() - t3)
        return results
