"""The pose prior φ_P behind a detector-agnostic interface.

A prior reports, for one person, a :class:`~hmdiff_ros.observation.PriorPerson`: landmarks
in image pixels with visibilities, root-relative metric 3D joints in camera-aligned axes
(x right, y down, z forward) and optionally a person mask over the image.
:func:`hmdiff_ros.observation.observe` turns that into what the model reads, exactly as the
synthetic engine does in training.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hmdiff_ros.observation import PriorPerson


class PosePrior(Protocol):
    """A pose estimator: ``detect`` returns the person in an RGB uint8 image (optionally
    inside a box ``(u0, v0, u1, v1)``), or ``None`` when it sees nobody."""

    def detect(self, image: np.ndarray, box: np.ndarray | None = None) -> PriorPerson | None: ...

    def close(self) -> None: ...
