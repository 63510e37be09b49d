"""What a prior study is made of (``hmdiff data prior-study``): its configuration and its
stream of random numbers.

The study has **its own stream**: chunk ``c`` of seed ``s`` comes from
``SeedSequence([s, c], spawn_key=STUDY_SPAWN_KEY)``, a word sequence no training stream (no
spawn key) nor held-out stream (``(TEST_WORD, 1)``) has; bodies come from the held-out test
bank. A chunk's samples depend only on (seed, chunk index, chunk size, configuration), never
on the number of workers.

A study of **training bodies** (``bodies="train"``, ``--bodies train``) is training data: MediaPipe's
own outputs on renders, for ``hmdiff train --study``. Its bodies come from a training bank
(:data:`TRAIN_STUDY_BANK`: training phenotypes, never the held-out ones) and its stream from
``TRAIN_STUDY_SPAWN_KEY``, so it shares neither bodies nor poses and cameras with the held-out
study, whose val and test parts select and test the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from hmdiff_ros.data.engine import SyntheticConfig
from hmdiff_ros.data.shapes import TEST_BANK, TEST_WORD, BankConfig
from hmdiff_ros.study.people_render import PeopleRenderConfig

STUDY_SPAWN_KEY = (TEST_WORD, 2)  # the study's stream: apart from training and held-out streams
TRAIN_STUDY_SPAWN_KEY = (TEST_WORD, 3)  # a study of training bodies: apart from the held-out study's too
BODIES = ("test", "train")  # the held-out study (selection and test sets), or training data
TRAIN_STUDY_BANK = BankConfig(size=512, role="train", full=True)  # training phenotypes, full meshes
CHUNK = 32  # samples per chunk file (and per engine call)


def _study_engine(bodies: str = "test") -> SyntheticConfig:
    bank = TRAIN_STUDY_BANK if bodies == "train" else replace(TEST_BANK, full=True)
    return SyntheticConfig(bank=bank, full=True)


@dataclass(frozen=True)
class StudyConfig:
    num: int  # samples
    seed: int = 0
    chunk: int = CHUNK  # samples per chunk; part of what the samples are
    engine: SyntheticConfig = field(default_factory=_study_engine)  # held-out bodies, full meshes
    render: PeopleRenderConfig = field(default_factory=PeopleRenderConfig)

    @classmethod
    def of_bodies(cls, bodies: str, **kwargs) -> "StudyConfig":
        """A study of held-out (``"test"``) or training (``"train"``) bodies."""
        if bodies not in BODIES:
            raise ValueError(f"--bodies must be one of {', '.join(BODIES)}, got {bodies!r}")
        return cls(engine=_study_engine(bodies), **kwargs)

    @property
    def bodies(self) -> str:
        return self.engine.bank.role

    @property
    def spawn_key(self) -> tuple:
        return TRAIN_STUDY_SPAWN_KEY if self.bodies == "train" else STUDY_SPAWN_KEY

    def __post_init__(self) -> None:
        if isinstance(self.num, bool) or not isinstance(self.num, int) or self.num < 1:
            raise ValueError(f"--num must be an integer >= 1, got {self.num!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"--chunk must be an integer >= 1, got {self.chunk!r}")
        if not self.engine.full:
            raise ValueError("the prior study renders full-resolution meshes: its engine needs full=True")

    @property
    def num_chunks(self) -> int:
        return (self.num + self.chunk - 1) // self.chunk

    def chunk_size(self, index: int) -> int:
        return min(self.chunk, self.num - index * self.chunk)


def chunk_rngs(seed: int, index: int, spawn_key: tuple = STUDY_SPAWN_KEY) -> tuple:
    """The generators of chunk ``index``: one for the engine, one for the rendering."""
    seq = np.random.SeedSequence([seed, index], spawn_key=spawn_key)
    return tuple(np.random.default_rng(s) for s in seq.spawn(2))
