"""Body shapes for synthetic data: Anny phenotypes and the shape bank the fast poser uses.

Phenotypes come from Anny's WHO-calibrated ``SimpleShapeDistribution`` (height, weight,
muscle and proportions conditioned on age and gender) with our own age mixture: adults
weighted most, children (from about 2 years) and elders present.

The **shape bank** precomputes, once, with Anny, what posing needs for each of ``size``
shapes: the rest bone poses and the rest vertices of the vertex subset we pose (coarse
vertices + the support of the joint regressor; all vertices when ``full``). After that,
posing is plain torch (:mod:`hmdiff_ros.data.posing`): no Anny, no warp. Banks are cached
as ``.npz`` under ``~/.cache/hmdiff_ros`` (``HMDIFF_CACHE_DIR`` moves it), each written to a
temporary file first and renamed into place: an interrupted build leaves no truncated bank,
and a cached bank that cannot be read (damaged some other way) is built again.

Each bank has a **role**. Training and validation use the training bank (``BankConfig()``:
2,048 shapes, phenotypes drawn with torch seed ``seed``, the same bank as before roles
existed). Test splits use the held-out test bank (``TEST_BANK``: 512 shapes), whose
phenotypes come from a seed hashed from ``seed`` with the spawn key ``(TEST_WORD, 0)``
(numpy ``SeedSequence``), so its bodies are other draws than any training body.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from hmdiff_ros.body.anny_body import ANNY_TO_CANONICAL, PHENOTYPES
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.errors import one_line
from hmdiff_ros.files import existing_ancestor

log = logging.getLogger(__name__)
BANK_VERSION = 2
ROLES = ("train", "test")  # bodies to train (and validate) on, or bodies held out for testing
TEST_WORD = 0x7E57  # the spawn-key word of every held-out draw (SeedSequence); training draws have none


@dataclass(frozen=True)
class AgeMixture:
    """Mixture over morphological age (years); weights are normalised."""

    adult: Tuple[float, float, float] = (0.70, 18.0, 65.0)  # (weight, min age, max age)
    child: Tuple[float, float, float] = (0.15, 2.0, 18.0)
    elder: Tuple[float, float, float] = (0.15, 65.0, 90.0)

    def __post_init__(self) -> None:
        for name, (w, lo, hi) in asdict(self).items():
            if w < 0 or not 0 <= lo < hi <= 90:
                raise ValueError(f"age mixture '{name}' must be (weight >= 0, 0 <= min < max <= 90), got {(w, lo, hi)}")
        if sum(v[0] for v in asdict(self).values()) <= 0:
            raise ValueError("age mixture weights must not all be zero")

    def sample(self, shape) -> torch.Tensor:
        """Morphological ages in years (uses torch's global generator, seeded by the caller)."""
        parts = list(asdict(self).values())
        weights = torch.tensor([p[0] for p in parts], dtype=torch.float64)
        which = torch.multinomial(weights / weights.sum(), int(np.prod(shape)), replacement=True)
        lo = torch.tensor([p[1] for p in parts], dtype=torch.float64)[which]
        hi = torch.tensor([p[2] for p in parts], dtype=torch.float64)[which]
        return (lo + (hi - lo) * torch.rand(which.shape, dtype=torch.float64)).reshape(shape)


def sample_phenotypes(
    anny_model, num: int, seed: int, ages: AgeMixture = AgeMixture()
) -> Tuple[np.ndarray, np.ndarray]:
    """``(num, 6)`` phenotypes in ``PHENOTYPES`` order and ``(num,)`` morphological ages (years)."""
    from anny.shape_distribution import SimpleShapeDistribution

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dist = SimpleShapeDistribution(anny_model, morphological_age_distribution=ages)
        years, kwargs = dist.sample(num)
    pheno = torch.stack([kwargs[k] for k in PHENOTYPES], dim=1).clamp(0.0, 1.0)
    return pheno.numpy(), years.numpy()


def posed_vertex_subset(topology: Topology, joint_regressor: np.ndarray) -> np.ndarray:
    """Vertices to pose for coarse output: the coarse vertices, then the joint regressor's support."""
    support = np.flatnonzero(np.abs(joint_regressor).sum(0) > 0)  # ~1,150 vertices for Anny
    extra = np.setdiff1d(support, topology.down_index)
    return np.concatenate([topology.down_index, extra]).astype(np.int64)


@dataclass(frozen=True)
class BankConfig:
    size: int = 2048  # distinct body shapes; a sample picks one at random
    seed: int = 0
    full: bool = False  # also keep all 13,718 rest vertices (needed for full-resolution posing)
    ages: AgeMixture = AgeMixture()
    role: str = "train"  # "train": bodies to train on; "test": bodies held out (phenotypes drawn apart)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"shape bank size must be >= 1, got {self.size}")
        if self.role not in ROLES:
            raise ValueError(f"shape bank role must be one of {', '.join(ROLES)}; got {self.role!r}")

    @property
    def phenotype_seed(self) -> int:
        """The torch seed of the phenotype draw: ``seed`` itself for a training bank (as before
        roles existed: the training bank is unchanged); for a test bank a 32-bit word hashed from
        ``seed`` with the spawn key ``(TEST_WORD, 0)`` (torch uses the low 32 bits of a seed)."""
        if self.role == "train":
            return self.seed
        return int(np.random.SeedSequence(self.seed, spawn_key=(TEST_WORD, 0)).generate_state(1)[0])


TEST_BANK = BankConfig(size=512, role="test")  # held-out bodies: as many as the default test split has samples


@dataclass
class ShapeBank:
    """Per-shape rest data for the fast poser (canonical body frame, metres).

    ``rest_vertices`` ``(S, N, 3)`` for ``vertex_ids`` ``(N,)``; ``bone_rot`` ``(S, 104, 3, 3)``
    and ``bone_head`` ``(S, 104, 3)`` (Anny frame, as Anny's FK wants them); skinning
    ``skin_index``/``skin_weight`` ``(N, 9)``; ``parents`` ``(104,)``; ``reference`` ``(104, 3, 3)``
    (Anny's reference bone orientations); ``phenotypes`` ``(S, 6)``; ``ages`` ``(S,)`` years;
    ``joint_regressor`` ``(25, N)`` restricted to ``vertex_ids``; ``num_coarse``: the first
    ``num_coarse`` ids are the topology's coarse vertices, in order; ``bone_labels`` (104,).
    """

    rest_vertices: np.ndarray
    vertex_ids: np.ndarray
    bone_rot: np.ndarray
    bone_head: np.ndarray
    skin_index: np.ndarray
    skin_weight: np.ndarray
    parents: np.ndarray
    reference: np.ndarray
    phenotypes: np.ndarray
    ages: np.ndarray
    joint_regressor: np.ndarray
    num_coarse: int
    bone_labels: np.ndarray

    @property
    def size(self) -> int:
        return len(self.phenotypes)

    def phenotypes_sha1(self) -> str:
        """SHA-1 of the ``(S, 6)`` float32 phenotypes: names the bodies a split was drawn from."""
        return hashlib.sha1(np.ascontiguousarray(self.phenotypes, dtype=np.float32).tobytes()).hexdigest()

    def save(self, path: Path) -> None:
        """Write ``path`` atomically: a temporary file beside it (unique, so that concurrent
        builds do not clash), synced, then renamed over ``path``; removed if anything fails."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "xb") as f:
                np.savez(f, **{k: np.asarray(v) for k, v in self.__dict__.items()})
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> "ShapeBank":
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
        fields["num_coarse"] = int(fields["num_coarse"])
        return cls(**fields)


# what reading a truncated, corrupt or foreign .npz raises
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile)


def cache_dir() -> Path:
    """The cache folder: ``HMDIFF_CACHE_DIR``, else ``~/.cache/hmdiff_ros``. A ``ValueError``
    naming it when it, or the first of its parents that exists, is not a folder."""
    env = os.environ.get("HMDIFF_CACHE_DIR", "")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "hmdiff_ros"
    where = f"HMDIFF_CACHE_DIR '{path}'" if env else f"the cache folder '{path}'"
    hint = "set HMDIFF_CACHE_DIR to a folder (new or existing)"
    ancestor = existing_ancestor(path)
    if ancestor.exists() and not ancestor.is_dir():
        what = "is a file" if ancestor == path else f"is inside '{ancestor}', a file"
        raise ValueError(f"{where} {what}; expected a folder; {hint}")
    return path


def build_shape_bank(cfg: BankConfig, topology: Topology, batch: int = 64) -> ShapeBank:
    """Run Anny once per shape (identity pose) and keep what the fast poser needs."""
    from hmdiff_ros.body.anny_body import AnnyBody

    body = AnnyBody()
    anny = body.anny
    regressor = body.joint_regressor.numpy()
    vertex_ids = np.arange(body.num_vertices) if cfg.full else posed_vertex_subset(topology, regressor)
    if cfg.full:  # keep the coarse vertices first so that slicing gives the coarse mesh
        rest_ids = np.setdiff1d(vertex_ids, topology.down_index)
        vertex_ids = np.concatenate([topology.down_index, rest_ids]).astype(np.int64)
    pheno, years = sample_phenotypes(anny, cfg.size, cfg.phenotype_seed, cfg.ages)
    to_canonical = torch.as_tensor(ANNY_TO_CANONICAL)
    verts, rots, heads = [], [], []
    for s in range(0, cfg.size, batch):
        shape = torch.as_tensor(pheno[s : s + batch])
        with torch.no_grad():
            out = anny(None, {k: shape[:, i] for i, k in enumerate(PHENOTYPES)})
            rest = out["rest_vertices"].expand(len(shape), -1, -1)[:, vertex_ids] @ to_canonical.T
            poses = out["rest_bone_poses"].expand(len(shape), -1, -1, -1)
        verts.append(rest.float().numpy())
        rots.append(poses[..., :3, :3].numpy())
        heads.append(poses[..., :3, 3].numpy())
    return ShapeBank(
        rest_vertices=np.concatenate(verts),
        vertex_ids=vertex_ids,
        bone_rot=np.concatenate(rots),
        bone_head=np.concatenate(heads),
        skin_index=anny.vertex_bone_indices.numpy()[vertex_ids].astype(np.int64),
        skin_weight=anny.vertex_bone_weights.numpy()[vertex_ids],
        parents=np.asarray(anny.bone_parents, dtype=np.int64),
        reference=anny.reference_bone_orientations.numpy(),
        phenotypes=pheno.astype(np.float32),
        ages=years.astype(np.float32),
        joint_regressor=regressor[:, vertex_ids].astype(np.float32),
        num_coarse=topology.num_coarse,
        bone_labels=np.array(anny.bone_labels),
    )


def load_or_build_shape_bank(cfg: BankConfig = BankConfig(), topology: Topology | None = None) -> ShapeBank:
    """The cached bank for ``cfg`` and this topology, built with Anny on first use."""
    topology = topology or Topology.load()
    described = asdict(cfg)
    if cfg.role == "train":  # a training bank keeps the key it had before roles: its cache stays valid
        del described["role"]
    key: Dict = {
        "v": BANK_VERSION,
        "cfg": described,
        "topology": hashlib.sha1(topology.down_index.tobytes()).hexdigest(),
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"shape_bank_{digest}.npz"
    if path.is_file():
        try:
            return ShapeBank.load(path)
        except _UNREADABLE as exc:
            reason = one_line(exc, 200)
            log.warning(
                "the cached shape bank %s cannot be read (%s: %s); building it again", path, type(exc).__name__, reason
            )
    log.info("building a %s shape bank of %d Anny bodies (once; cached at %s)", cfg.role, cfg.size, path)
    bank = build_shape_bank(cfg, topology)
    bank.save(path)
    return bank
