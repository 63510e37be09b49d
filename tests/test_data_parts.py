"""Pose sampler, fast posing, cameras, configs: the parts of the data engine."""

import math

import numpy as np
import pytest
import torch

from hmdiff_ros.data.observe import PriorNoiseConfig
from hmdiff_ros.data.poses import DEFAULT_FAMILY_WEIGHTS, ELBOW_FLEX_DEG, FAMILY_NAMES, PoseSampler
from hmdiff_ros.data.scene import SceneConfig, sample_scenes
from hmdiff_ros.data.shapes import AgeMixture
from hmdiff_ros.observation import ProxyConfig


def test_fast_posing_matches_anny_forward(anny_body, topology):
    from hmdiff_ros.data.posing import FastPoser
    from hmdiff_ros.data.shapes import BankConfig, build_shape_bank

    bank = build_shape_bank(BankConfig(size=6, seed=5, full=True), topology)
    poser = FastPoser(bank)
    pose = (torch.rand(6, 103, 3, generator=torch.Generator().manual_seed(0)) - 0.5) * 1.6  # up to ~46 degrees
    verts, joints = poser(torch.arange(6), pose)
    ref = anny_body(shape=torch.as_tensor(bank.phenotypes, dtype=torch.float64), pose=pose.double())
    ref_verts = ref.vertices[:, torch.as_tensor(bank.vertex_ids)]
    assert (verts.double() - ref_verts).norm(dim=-1).max() < 1e-3  # < 1 mm
    assert (joints.double() - ref.joints).norm(dim=-1).max() < 1e-3
    coarse, _ = poser(torch.arange(6), pose, count=topology.num_coarse)
    torch.testing.assert_close(
        coarse.double(), ref.vertices[:, torch.as_tensor(topology.down_index).long()], atol=1e-3, rtol=0
    )


@pytest.fixture(scope="module")
def sampler(engine):
    return engine.pose_sampler


def test_poses_respect_joint_limits_and_families(sampler):
    rng = np.random.default_rng(0)
    pose, family, tilt = sampler.sample(rng, 4000)
    labels = sampler.labels
    assert pose.shape == (4000, 103, 3) and np.isfinite(pose).all()
    knee = pose[:, labels.index("lowerleg01.L"), 0]
    assert (knee >= 0).all(), "knees never bend forwards"
    for side in "LR":
        elbow = pose[:, sampler.elbows[side]]
        flex = elbow @ sampler.elbow_axes[side]
        assert flex.min() > -0.2 and flex.max() <= math.radians(ELBOW_FLEX_DEG[1]) + 0.2
    assert (np.abs(pose[:, [i for i, lab in enumerate(labels) if lab.startswith("toe")]]) == 0).all()
    freq = np.bincount(family, minlength=len(FAMILY_NAMES)) / len(family)
    np.testing.assert_allclose(freq, np.array(DEFAULT_FAMILY_WEIGHTS) / sum(DEFAULT_FAMILY_WEIGHTS), atol=0.03)
    sitting = family == FAMILY_NAMES.index("sitting")
    hip = pose[:, labels.index("upperleg01.L"), 0]
    assert (hip[sitting] < -1.0).all() and np.median(hip[family == FAMILY_NAMES.index("standing")]) > -0.2
    lying = family == FAMILY_NAMES.index("lying")
    assert (np.abs(tilt[lying, 0]) > 0.6).all() and (tilt[~lying] == 0).all()


def test_left_and_right_leads_are_mirrored(sampler):
    pose, family, _ = sampler.sample(np.random.default_rng(1), 6000)
    reach = family == FAMILY_NAMES.index("reaching")
    up_l = pose[reach, sampler.labels.index("upperarm01.L"), 0]
    up_r = pose[reach, sampler.labels.index("upperarm01.R"), 0]
    # Either arm reaches forward (flexion < -40 degrees) about equally often.
    assert abs((up_l < -0.7).mean() - (up_r < -0.7).mean()) < 0.08


def test_cameras_look_at_people_at_the_configured_distances():
    rng = np.random.default_rng(0)
    cfg = SceneConfig()
    body = np.random.default_rng(1).normal(scale=0.3, size=(500, 50, 3)) + [0, 0.9, 0]
    scene = sample_scenes(rng, body, cfg)
    cam = np.einsum("nij,nvj->nvi", scene["R"], body) + scene["t"][:, None]
    dist = np.linalg.norm(cam.mean(1), axis=-1)
    assert dist.min() > 0.6 and dist.max() < 11
    uv = cam[..., :2] / cam[..., 2:] * scene["K"][:, None, [0, 1], [0, 1]] + scene["K"][:, None, [0, 1], [2, 2]]
    centre = uv.mean(1) / scene["image_size"]
    assert ((centre > -0.1) & (centre < 1.1)).all(1).mean() > 0.95
    np.testing.assert_allclose(np.linalg.det(scene["R"]), 1.0, atol=1e-9)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SceneConfig(height_m=(2.0, 1.0)), "height_m"),
        (lambda: SceneConfig(distance_m=(0.1, 5.0)), "distance_m"),
        (lambda: SceneConfig(occluder_prob=1.5), "occluder_prob"),
        (lambda: PriorNoiseConfig(swap_prob=-0.1), "swap_prob"),
        (lambda: PriorNoiseConfig(uv_noise=(0.1, 0.01)), "uv_noise"),
        (lambda: ProxyConfig(crop_size=8), "crop_size"),
        (lambda: ProxyConfig(heatmap_sigma=0), "heatmap_sigma"),
        (lambda: AgeMixture(child=(0.2, 20.0, 10.0)), "age mixture 'child'"),
        (lambda: PoseSampler(["root", "spine05"], np.zeros((2, 3)), family_weights=(1.0,)), "family_weights"),
    ],
)
def test_bad_config_values_raise_clear_errors(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
