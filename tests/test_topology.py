import subprocess
import sys

import numpy as np
import pytest
import torch

from hmdiff_ros.body.joints import JOINT_NAMES
from hmdiff_ros.body.topology import DEFAULT_ASSET, Topology, roundtrip_error_mm

# Bounds on full -> coarse -> full over 64 random posed Anny bodies (seed 5), measured with
# 'hmdiff assets check' at build time: mean 1.29 mm, p99 8.6 mm, max 50 mm over 256 bodies.
ROUNDTRIP_MEAN_MM = 1.6
ROUNDTRIP_P99_MM = 11.0
ROUNDTRIP_MAX_MM = 60.0
JOINTS_MEAN_MM, JOINTS_MAX_MM = 1.0, 6.0


def _edge_counts(faces):
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    return directed, undirected, counts


def test_asset_is_small_and_coarse(topology):
    assert DEFAULT_ASSET.stat().st_size < 5 * 2**20
    assert 400 <= topology.num_coarse <= 700
    assert topology.num_full == 13718 and topology.joint_names == JOINT_NAMES
    assert topology.meta["body_model"] == "anny"


def test_coarse_mesh_is_watertight_and_consistently_oriented(topology):
    faces = topology.coarse_faces
    directed, _, counts = _edge_counts(faces)
    assert (counts == 2).all(), "every edge must be shared by exactly two triangles"
    assert len(np.unique(directed, axis=0)) == len(directed), "neighbouring triangles must have opposite edge order"
    v = topology.coarse_rest
    area = np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1)
    assert area.min() > 1e-8
    # Euler characteristic of a closed genus-0 surface.
    assert topology.num_coarse - len(counts) + len(faces) == 2


def test_sampling_matrices_are_well_formed(topology):
    assert len(np.unique(topology.down_index)) == topology.num_coarse
    np.testing.assert_allclose(topology.up_weight.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(topology.coarse_rest, topology.full_rest[topology.down_index])
    np.testing.assert_allclose(topology.joint_regressor.sum(1), 1.0, atol=1e-4)


def test_upsampling_reproduces_the_rest_mesh(topology):
    err = np.linalg.norm(topology.upsample(topology.coarse_rest) - topology.full_rest, axis=1)
    assert err.mean() < 0.002 and err.max() < 0.02


def test_operators_are_rigid_equivariant_and_batch_in_numpy_and_torch(topology):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    coarse = np.stack([topology.coarse_rest, topology.coarse_rest @ rot.T + [0.3, -1.0, 4.0]]).astype(np.float32)
    full = topology.upsample(coarse)  # (2, V, 3)
    np.testing.assert_allclose(full[1], full[0] @ rot.T + [0.3, -1.0, 4.0], atol=1e-4)
    joints = topology.regress_joints(coarse)
    np.testing.assert_allclose(joints[1], joints[0] @ rot.T + [0.3, -1.0, 4.0], atol=1e-4)
    t = torch.from_numpy(coarse)
    np.testing.assert_allclose(topology.upsample(t).numpy(), full, atol=1e-5)
    np.testing.assert_allclose(topology.regress_joints(t).numpy(), joints, atol=1e-5)
    np.testing.assert_allclose(topology.downsample(torch.from_numpy(full)).numpy(), topology.downsample(full))


def test_bad_inputs_raise_clear_errors(topology, tmp_path):
    with pytest.raises(ValueError, match=r"coarse vertices must have shape \(\.\.\., 600, 3\)"):
        topology.upsample(np.zeros((599, 3)))
    with pytest.raises(ValueError, match="full vertices"):
        topology.downsample(np.zeros((2, 13718, 2)))
    with pytest.raises(FileNotFoundError, match="hmdiff assets build"):
        Topology.load(tmp_path / "missing.npz")
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, something=np.zeros(3))
    with pytest.raises(ValueError, match="not a topology asset"):
        Topology.load(bogus)


def test_loading_and_applying_needs_numpy_only():
    code = (
        "import sys; from hmdiff_ros.body.topology import Topology; import numpy as np\n"
        "t = Topology.load(); t.upsample(t.coarse_rest); t.regress_joints(t.coarse_rest)\n"
        "bad = [m for m in ('torch', 'anny', 'warp', 'trimesh', 'smplx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_roundtrip_error_on_posed_bodies_stays_under_measured_bound(topology, anny_body):
    from hmdiff_ros.body.build_topology import joint_error_mm, random_posed_bodies

    bodies = random_posed_bodies(anny_body, 64, seed=5)
    err = roundtrip_error_mm(topology, bodies)
    assert err["mean_mm"] < ROUNDTRIP_MEAN_MM
    assert err["p99_mm"] < ROUNDTRIP_P99_MM
    assert err["max_mm"] < ROUNDTRIP_MAX_MM
    joints = joint_error_mm(topology, bodies, anny_body.joint_regressor.numpy())
    assert joints["mean_mm"] < JOINTS_MEAN_MM and joints["max_mm"] < JOINTS_MAX_MM


def test_builder_makes_a_valid_asset(tmp_path, anny_body):
    from hmdiff_ros.body.build_topology import TopologyBuildConfig, build_topology

    topo, report = build_topology(TopologyBuildConfig(coarse_vertices=450, fit_samples=32, eval_samples=8))
    topo.save(tmp_path / "small.npz")
    again = Topology.load(tmp_path / "small.npz")
    assert 400 <= again.num_coarse <= 500
    _, _, counts = _edge_counts(again.coarse_faces)
    assert (counts == 2).all()
    assert report["roundtrip_mm"]["mean_mm"] < report["roundtrip_barycentric_mm"]["mean_mm"]
    assert again.meta["heldout_error"] == report


def test_builder_rejects_bad_config():
    from hmdiff_ros.body.build_topology import TopologyBuildConfig

    with pytest.raises(ValueError, match="coarse_vertices"):
        TopologyBuildConfig(coarse_vertices=10)
    with pytest.raises(ValueError, match="neighbours"):
        TopologyBuildConfig(neighbours=2)
