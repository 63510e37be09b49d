"""Shared fixtures. The Anny body model is built once per session (minutes on a fresh
machine, cached in ~/.cache/anny afterwards). Below them, the fixtures that test modules split
by topic share: the tiny model, the model loaders that must not run, and rclpy with a running
node; helpers that are not fixtures live in modules beside this one (tiny_model.py,
cli_refusals.py, ros_helpers.py)."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest

HAS_ANNY = importlib.util.find_spec("anny") is not None


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "ros: runs on a sourced ROS 2 core (.ci/run runs these on every distribution it builds; "
        "tests/test_code_quality.py checks that each test module using the core has it)",
    )


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


# ---- the model tests (tests/test_model.py, test_dat.py, test_training.py) ---------------------


@pytest.fixture(scope="module")
def tiny(topology):
    """The tiny HMDiff of tests/tiny_model.py, seeded: built once in each module that uses it."""
    import torch
    from tiny_model import TINY

    from hmdiff_ros.model.hmdiff import HMDiff

    torch.manual_seed(0)
    return HMDiff(TINY, topology).eval()


# ---- the input-check tests (tests/test_input_checks_*.py) ------------------------------------


@pytest.fixture()
def no_models(monkeypatch):
    """Every model loader raises (and notes the call): a command that checks its inputs first
    fails on them with exit 2 and never gets here."""
    import hmdiff_ros.model.checkpoint
    import hmdiff_ros.model.evaluate
    import hmdiff_ros.model.lifter
    import hmdiff_ros.pipeline.pipeline
    import hmdiff_ros.runtime.backends

    calls = []

    def loader(name):
        def load(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called before the inputs were checked")

        return load

    for module, name in (
        (hmdiff_ros.runtime.backends, "load_model"),
        (hmdiff_ros.pipeline.pipeline, "build_pipeline"),
        (hmdiff_ros.model.checkpoint, "load_checkpoint"),
        (hmdiff_ros.model.evaluate, "load_checkpoint"),
        (hmdiff_ros.model.lifter, "load_lifter"),
    ):
        monkeypatch.setattr(module, name, loader(f"{module.__name__}.{name}"))
    return calls


# ---- the ROS 2 core tests (tests/test_ros_core.py, test_ros_launch.py; helpers in ros_helpers.py)


@pytest.fixture
def ros():
    """rclpy initialised for one test and shut down after it (the ROS 2 core tests)."""
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.shutdown()


@pytest.fixture
def running(ros):
    """``start(probe_name, **params) -> (node, probe, executor)``: an active HMDiffNode with the
    parameters ``params`` and a probe node, on one executor; all destroyed after the test."""
    from rclpy.executors import SingleThreadedExecutor
    from ros_helpers import activate, make_node

    made = []

    def start(probe_name: str, **params):
        node = make_node(**params)
        activate(node)
        probe = ros.create_node(probe_name)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(probe)
        made.append((node, probe, executor))
        return node, probe, executor

    yield start
    for node, probe, executor in made:
        executor.shutdown()
        probe.destroy_node()
        node.destroy_node()
