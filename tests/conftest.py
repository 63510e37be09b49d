"""Shared fixtures. The Anny body model is built once per session (minutes on a fresh
machine, cached in ~/.cache/anny afterwards)."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
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


SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# Rough SMPL joint locations (y up, metres), enough to build a valid synthetic rig.
SMPL_JOINTS = np.array(
    [
        [0, 0, 0],
        [0.06, -0.09, 0],
        [-0.06, -0.09, 0],
        [0, 0.1, 0],
        [0.1, -0.47, 0],
        [-0.1, -0.47, 0],
        [0, 0.24, 0],
        [0.1, -0.87, 0],
        [-0.1, -0.87, 0],
        [0, 0.29, 0],
        [0.12, -0.92, 0.12],
        [-0.12, -0.92, 0.12],
        [0, 0.5, 0],
        [0.08, 0.41, 0],
        [-0.08, 0.41, 0],
        [0, 0.6, 0.05],
        [0.17, 0.44, 0],
        [-0.17, 0.44, 0],
        [0.43, 0.43, 0],
        [-0.43, 0.43, 0],
        [0.68, 0.43, 0],
        [-0.68, 0.43, 0],
        [0.77, 0.43, 0],
        [-0.77, 0.43, 0],
    ]
)


@pytest.fixture(scope="session")
def smpl_file(tmp_path_factory):
    """A synthetic model file in the official SMPL layout (the real files are licensed)."""
    pytest.importorskip("smplx", reason="smplx is not installed")
    rng = np.random.default_rng(0)
    num_v = 6890
    owner = np.arange(num_v) % 24  # each vertex follows one joint
    v_template = SMPL_JOINTS[owner] + rng.normal(scale=0.02, size=(num_v, 3))
    weights = np.zeros((num_v, 24))
    weights[np.arange(num_v), owner] = 1.0
    j_regressor = weights.T / weights.sum(0)[:, None]
    path = tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl"
    model = dict(
        v_template=v_template,
        f=rng.integers(0, num_v, size=(13776, 3)),
        J_regressor=j_regressor,
        weights=weights,
        posedirs=np.zeros((num_v, 3, 207)),
        shapedirs=rng.normal(scale=0.01, size=(num_v, 3, 10)),
        kintree_table=np.stack([np.array(SMPL_PARENTS) % (2**32), np.arange(24)]),
    )
    path.write_bytes(pickle.dumps(model))
    return path
