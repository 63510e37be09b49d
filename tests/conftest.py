"""Shared fixtures. The Anny body model is built once per session (minutes on a fresh
machine, cached in ~/.cache/anny afterwards)."""

from __future__ import annotations

import importlib.util

import pytest

HAS_ANNY = importlib.util.find_spec("anny") is not None


@pytest.fixture(scope="session")
def anny_body():
    if not HAS_ANNY:
        pytest.skip("the Anny body model is not installed (pip install 'hmdiff_ros[anny]')")
    from hmdiff_ros.body.anny_body import AnnyBody

    return AnnyBody()


@pytest.fixture(scope="session")
def topology():
    from hmdiff_ros.body.topology import Topology

    return Topology.load()


@pytest.fixture(scope="session")
def engine():
    """The default synthetic engine (its shape bank is built with Anny once, then cached)."""
    if not HAS_ANNY:
        pytest.skip("the Anny body model is not installed (pip install 'hmdiff_ros[anny]')")
    from hmdiff_ros.data.engine import SyntheticEngine

    return SyntheticEngine()


@pytest.fixture(scope="session")
def batches(engine):
    """2048 samples from 8 seeded batches, shared by the checks that need many draws."""
    from hmdiff_ros.data.engine import batch_rng

    return [engine.generate(batch_rng(7, i), 256) for i in range(8)]
