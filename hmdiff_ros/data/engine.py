"""The synthetic data engine: shape bank + pose sampler + cameras -> training samples.

One call of :meth:`SyntheticEngine.generate` makes a batch of ``N`` samples from a numpy
``Generator``; :class:`SyntheticDataset` streams batches for training, each seeded by
``(seed, batch index)``, so a batch's content does not depend on the number of workers.

Streams have a role, like shape banks (:data:`~hmdiff_ros.data.shapes.ROLES`): a training
stream's batch ``i`` of seed ``s`` comes from ``SeedSequence([s, i])``; a held-out (test)
stream's from ``SeedSequence([s, i], spawn_key=(TEST_WORD, 1))``. The spawn key makes the
entropy a different word sequence (``[s, i, 0, 0, TEST_WORD, 1]``), which no training stream
(seed and batch index below 2**32: two words) has: held-out poses, cameras and noise never
repeat a training batch's.

A batch is a dict of numpy arrays (N samples; C coarse vertices; J = 25 joints; P = 24 prior
joints; S = crop size):

- observation (what the encoder and DAT see): ``proxy`` (N, 26, S, S) float32 (built by
  :func:`~hmdiff_ros.observation.make_proxy`), ``uv`` (N, P, 2) keypoints in crop pixels,
  ``vis`` (N, P), ``mask``/``valid`` (N, S, S), ``prior_xyz`` (N, P, 3) root-relative
  camera-aligned metres, ``prior_uv`` (N, P, 2) image pixels, ``box`` (N, 3) crop (cx, cy, size);
- ground truth: ``coarse`` (N, C, 3) and ``joints`` (N, J, 3) in the camera frame, ``root``
  (N, 3) the pelvis, ``coarse_rel``/``joints_rel`` root-relative, ``full`` (N, V, 3) when the
  bank is full-resolution and ``full=True``, ``K`` (N, 3, 3), ``image_size`` (N, 2),
  ``rotation`` (N, 3, 3) body canonical frame -> camera, ``shape`` (N, 6), ``pose``
  (N, 103, 3), ``family`` (N,), ``swapped`` (N,), ``occluder`` (N, 4) image rectangle
  (u0, v0, u1, v1) in front of the person, NaN where none.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from typing import Dict, Iterator

import numpy as np
import torch

from hmdiff_ros.body.anny_body import ANNY_TO_CANONICAL
from hmdiff_ros.body.base import axis_angle_to_matrix
from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.camera import apply_affine, project
from hmdiff_ros.data.observe import PRIOR_KINDS, PriorNoiseConfig, face_parts, render_observation, simulate_prior
from hmdiff_ros.data.poses import DEFAULT_FAMILY_WEIGHTS, MOCAP_FAMILY_WEIGHTS, ROBOT_FAMILY_WEIGHTS, PoseSampler
from hmdiff_ros.data.posing import FastPoser
from hmdiff_ros.data.scene import SceneConfig, sample_occluders, sample_scenes
from hmdiff_ros.data.shapes import ROLES, TEST_WORD, BankConfig, ShapeBank, load_or_build_shape_bank
from hmdiff_ros.observation import ProxyConfig, crop_boxes, in_image, make_proxy

PELVIS = JOINT_INDEX["pelvis"]
MIN_JOINTS_IN_IMAGE = 6  # a sample must show at least this many prior joints
MIN_PRIOR_JOINTS = 4  # ... and the simulated prior must see this many (else: no detection)
MAX_RESAMPLE = 8
MAX_FITTED_RESAMPLE = 64  # rounds with PriorNoiseConfig(kind="fitted"), whose detections fail often


@dataclass(frozen=True)
class SyntheticConfig:
    bank: BankConfig = field(default_factory=BankConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    prior: PriorNoiseConfig = field(default_factory=PriorNoiseConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    family_weights: tuple = DEFAULT_FAMILY_WEIGHTS
    full: bool = False  # also return full-resolution meshes (needs a full bank)

    def __post_init__(self) -> None:
        if self.full and not self.bank.full:
            raise ValueError("full=True needs a full-resolution shape bank (bank.full=True)")


# pose-family weights by name ("mocap": the robot set with 30 % retargeted motion capture)
FAMILY_SETS = {"default": DEFAULT_FAMILY_WEIGHTS, "robot": ROBOT_FAMILY_WEIGHTS, "mocap": MOCAP_FAMILY_WEIGHTS}


def stream_config(prior: str = "hand", families: str = "default", crop_size: int = ProxyConfig.crop_size):
    """The ``SyntheticConfig`` of a training stream named by its options, as ``hmdiff train``
    and ``hmdiff train-lifter`` take them: ``prior`` the prior simulator (``"hand"``, or
    ``"fitted"`` to MediaPipe in the prior study), ``families`` the pose-family weights
    (``"default"``, ``"robot"``: :data:`~hmdiff_ros.data.poses.ROBOT_FAMILY_WEIGHTS`, or
    ``"mocap"``: :data:`~hmdiff_ros.data.poses.MOCAP_FAMILY_WEIGHTS`)."""
    if prior not in PRIOR_KINDS:
        raise ValueError(f"prior simulator must be one of {', '.join(PRIOR_KINDS)}, got {prior!r}")
    if families not in FAMILY_SETS:
        raise ValueError(f"pose families must be one of {', '.join(FAMILY_SETS)}, got {families!r}")
    return SyntheticConfig(
        prior=PriorNoiseConfig(kind=prior), proxy=ProxyConfig(crop_size=crop_size), family_weights=FAMILY_SETS[families]
    )


class SyntheticEngine:
    """Generates batches; see the module docstring for the fields."""

    def __init__(self, cfg: SyntheticConfig = SyntheticConfig(), bank: ShapeBank | None = None) -> None:
        self.cfg = cfg
        self.topology = Topology.load()
        self.bank = bank if bank is not None else load_or_build_shape_bank(cfg.bank, self.topology)
        self.poser = FastPoser(self.bank)
        heads = self.bank.bone_head.mean(0) @ ANNY_TO_CANONICAL.T  # (104, 3) canonical
        self.pose_sampler = PoseSampler(list(self.bank.bone_labels), heads, cfg.family_weights)
        self.heights = self._rest_heights()
        c = self.bank.num_coarse
        self.face_parts = face_parts(
            self.topology.coarse_faces, self.bank.skin_index[:c], self.bank.skin_weight[:c], self.bank.bone_labels
        )

    def _rest_heights(self) -> np.ndarray:
        y = self.bank.rest_vertices[:, : self.bank.num_coarse, 1]
        return (y.max(1) - y.min(1)).astype(np.float64)  # (S,) metres, A-pose standing height

    def generate(self, rng: np.random.Generator, num: int, proxy: bool = True) -> Dict[str, np.ndarray]:
        """``num`` samples in which the simulated prior sees the person (at least
        ``MIN_PRIOR_JOINTS`` keypoints above the visibility cut); others are drawn again.
        ``proxy=False`` leaves the encoder input to be built later with ``make_proxy``."""
        batch = self._generate(rng, num)
        # the fitted prior misses about half the people (as MediaPipe does): more rounds
        for _ in range(MAX_RESAMPLE if self.cfg.prior.kind in ("hand", "chain") else MAX_FITTED_RESAMPLE):
            seen = (batch["vis"] >= self.cfg.proxy.min_visibility).sum(1) >= MIN_PRIOR_JOINTS
            if seen.all():
                break
            extra = self._generate(rng, int((~seen).sum()))
            batch = {k: np.concatenate([v[seen], extra[k]]) for k, v in batch.items()}
        if proxy:
            batch["proxy"] = make_proxy(batch["uv"], batch["vis"], batch["mask"], batch["valid"], self.cfg.proxy)
        return batch

    def _generate(self, rng: np.random.Generator, num: int) -> Dict[str, np.ndarray]:
        cfg = self.cfg
        c = self.topology.num_coarse
        ids = rng.integers(self.bank.size, size=num)
        pose, family, tilt = self.pose_sampler.sample(rng, num)
        with torch.no_grad():
            verts, joints = self.poser(torch.as_tensor(ids), torch.as_tensor(pose))
        verts, joints = verts.numpy().astype(np.float64), joints.numpy().astype(np.float64)
        yaw = np.zeros((num, 3))
        yaw[:, 1] = rng.uniform(-math.pi, math.pi, num)
        with torch.no_grad():
            glob = (
                axis_angle_to_matrix(torch.as_tensor(yaw))
                @ axis_angle_to_matrix(torch.as_tensor(tilt, dtype=torch.float64))
            ).numpy()
        world = verts[:, :c] @ glob.transpose(0, 2, 1)
        scene = sample_scenes(rng, world, cfg.scene)
        for _ in range(MAX_RESAMPLE):  # re-draw cameras that do not see enough of the person
            rot = scene["R"] @ glob
            joints_cam = joints @ rot.transpose(0, 2, 1) + scene["t"][:, None]
            uv = project(joints_cam, scene["K"])
            seen = in_image(uv, scene["image_size"]) & (joints_cam[..., 2] > 0.2)
            bad = seen.sum(1) < MIN_JOINTS_IN_IMAGE
            if not bad.any():
                break
            redo = sample_scenes(rng, world[bad], cfg.scene)
            for k in scene:
                scene[k][bad] = redo[k]
        rot = scene["R"] @ glob
        verts_cam = verts @ rot.transpose(0, 2, 1) + scene["t"][:, None]
        joints_cam = joints @ rot.transpose(0, 2, 1) + scene["t"][:, None]
        coarse_cam = verts_cam[:, :c]
        K, size = scene["K"], scene["image_size"]
        coarse_uv = project(coarse_cam, K)
        joints_uv = project(joints_cam, K)
        person_box = np.concatenate([coarse_uv.min(1), coarse_uv.max(1)], axis=1)  # (N, 4)
        occluders = sample_occluders(rng, person_box, cfg.scene)
        prior = simulate_prior(
            rng, joints_cam, joints_uv, size, person_box, occluders, self.heights[ids], cfg.prior, rotation=rot
        )
        box = crop_boxes(rng, prior["prior_uv"], prior["prior_vis"], size, person_box, cfg.prior.box_jitter, cfg.proxy)
        obs = render_observation(
            rng,
            coarse_uv,
            coarse_cam,
            self.topology.coarse_faces,
            self.face_parts,
            box,
            size,
            occluders,
            cfg.prior,
            cfg.proxy,
        )
        uv_crop = apply_affine(obs["affine"], prior["prior_uv"])  # (N, P, 2) crop pixels
        root = joints_cam[:, PELVIS]
        batch = {
            "uv": uv_crop.astype(np.float32),
            "vis": prior["prior_vis"].astype(np.float32),
            "mask": obs["mask"],
            "valid": obs["valid"],
            "prior_xyz": prior["prior_xyz"].astype(np.float32),
            "prior_uv": prior["prior_uv"].astype(np.float32),
            "box": box.astype(np.float32),
            "coarse": coarse_cam.astype(np.float32),
            "joints": joints_cam.astype(np.float32),
            "root": root.astype(np.float32),
            "coarse_rel": (coarse_cam - root[:, None]).astype(np.float32),
            "joints_rel": (joints_cam - root[:, None]).astype(np.float32),
            "K": K.astype(np.float32),
            "image_size": size.astype(np.float32),
            "rotation": rot.astype(np.float32),
            "shape": self.bank.phenotypes[ids],
            "pose": pose,
            "family": family.astype(np.int64),
            "swapped": prior["swapped"],
            "occluder": occluders.astype(np.float32),
        }
        if cfg.full:
            order = np.argsort(self.bank.vertex_ids)  # bank order -> mesh vertex order
            batch["full"] = verts_cam[:, order].astype(np.float32)
        return batch


def compact(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The storage/transport form of a batch: no ``proxy``, masks quantised to 8 bits."""
    out = {k: v for k, v in batch.items() if k != "proxy"}
    out["mask"] = np.round(batch["mask"] * 255).astype(np.uint8)
    out["valid"] = batch["valid"] > 0.5
    return out


def stream_spawn_key(role: str = "train") -> tuple:
    """The ``SeedSequence`` spawn key of a stream with ``role``: none for training streams (their
    seeds are what they always were), ``(TEST_WORD, 1)`` for held-out ones."""
    if role not in ROLES:
        raise ValueError(f"stream role must be one of {', '.join(ROLES)}; got {role!r}")
    return () if role == "train" else (TEST_WORD, 1)


def batch_rng(seed: int, index: int, role: str = "train") -> np.random.Generator:
    """The generator of batch ``index`` of a stream seeded with ``seed``; ``role="test"``: of the
    held-out stream, disjoint from every training stream (see the module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([seed, index], spawn_key=stream_spawn_key(role)))


def quiet_worker(worker_id: int) -> None:
    """``worker_init_fn`` for data loaders of :class:`SyntheticDataset`: Ctrl-C in a terminal
    reaches the whole process group, and the main process handles it (and shuts the workers
    down), so the workers ignore SIGINT and print no tracebacks of their own. SIGTERM keeps its
    action: the data loader ends workers that do not stop in time with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SyntheticDataset(torch.utils.data.IterableDataset):
    """Endless (or ``num_batches``-long) stream of compact batches as torch tensors: no
    ``proxy`` (build it where the model runs with :func:`~hmdiff_ros.observation.make_proxy`,
    which takes torch tensors), ``mask`` as uint8 (0..255) and ``valid`` as bool, so that
    workers send ~20x less data.

    Use with ``DataLoader(dataset, batch_size=None, num_workers=k, worker_init_fn=quiet_worker)``:
    worker ``w`` makes batches ``w, w + k, w + 2k, ...``, each from :func:`batch_rng` ``(seed, index)``.
    Process ``rank`` of ``world_size`` (several training processes, e.g. ``torchrun``) takes
    every ``world_size``-th of them (:func:`stream_indices`), so no two processes share a batch.
    """

    def __init__(
        self,
        cfg: SyntheticConfig,
        batch_size: int,
        seed: int = 0,
        num_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) and world_size >= 1, got rank {rank} of {world_size}")
        if cfg.bank.role != "train":
            raise ValueError(
                f"SyntheticDataset streams training data: its shape bank's role must be 'train', got {cfg.bank.role!r}"
            )
        self.cfg, self.batch_size, self.seed, self.num_batches = cfg, batch_size, seed, num_batches
        self.rank, self.world_size = rank, world_size
        self.skip = 0  # this process's batches to pass over at the start (a resumed run sets it: its steps)
        self._engine: SyntheticEngine | None = None

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self._engine is None:
            torch.set_num_threads(1) if info is not None else None
            self._engine = SyntheticEngine(self.cfg)
        for index in stream_indices(self.skip, self.rank, self.world_size, worker, workers):
            if self.num_batches is not None and index >= self.num_batches:
                return
            batch = self._engine.generate(batch_rng(self.seed, index), self.batch_size, proxy=False)
            yield {k: torch.as_tensor(v) for k, v in compact(batch).items()}


def stream_indices(skip: int, rank: int = 0, world_size: int = 1, worker: int = 0, workers: int = 1) -> Iterator[int]:
    """The stream's batch indices, endless, that data-loader worker ``worker`` of ``workers``
    makes for process ``rank`` of ``world_size`` after the process's first ``skip`` batches.
    The process's ``n``-th batch is the stream's ``n * world_size + rank`` (the loader takes its
    workers' batches in turn), so at each training step the processes take consecutive batches."""
    position = skip + worker
    while True:
        yield position * world_size + rank
        position += workers
