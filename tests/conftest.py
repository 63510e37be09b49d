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
