import numpy as np
import pytest

from hmdiff_ros.camera import apply_affine, crop_affine, intrinsics_from_fov, project, solve_translation, unproject
from hmdiff_ros.observation import square_box


def test_projection_round_trips_with_known_intrinsics():
    K = intrinsics_from_fov(1280, 720, 70.0)
    assert np.isclose(K[0, 0], 640 / np.tan(np.deg2rad(35))) and np.allclose(K[:2, 2], [639.5, 359.5])
    pts = np.random.default_rng(0).uniform([-2, -1, 1], [2, 1, 9], size=(50, 3))
    uv = project(pts, K)
    np.testing.assert_allclose(unproject(uv, pts[:, 2], K), pts, atol=1e-9)
    batched = project(pts.reshape(5, 10, 3), np.stack([K] * 5))
    np.testing.assert_allclose(batched.reshape(50, 2), uv)


def test_translation_is_recovered_from_projections():
    rng = np.random.default_rng(1)
    K = intrinsics_from_fov(640, 480, 60.0)
    body = rng.normal(scale=0.3, size=(24, 3))
    body -= body[0]
    for t in ([0.3, -0.2, 2.0], [-1.5, 0.4, 7.5], [0.0, 0.0, 0.9]):
        uv = project(body + t, K)
        np.testing.assert_allclose(solve_translation(body, uv, np.ones(24), K), t, atol=1e-9)
        noisy = uv + rng.normal(scale=2.0, size=uv.shape)
        w = np.ones(24)
        noisy[:3] += 300  # three wild keypoints with no weight
        w[:3] = 0
        assert np.linalg.norm(solve_translation(body, noisy, w, K) - t) < 0.05 * t[2]


def test_translation_needs_two_points():
    K = intrinsics_from_fov(640, 480)
    with pytest.raises(ValueError, match="at least 2 points"):
        solve_translation(np.zeros((5, 3)), np.zeros((5, 2)), np.array([1, 0, 0, 0, 0]), K)


def test_square_boxes_and_crops():
    uv = np.array([[[10.0, 20.0], [30.0, 100.0], [1e6, 1e6]]])
    box = square_box(uv, np.array([[True, True, False]]))
    np.testing.assert_allclose(box, [[20.0, 60.0, 100.0]])
    assert np.isnan(square_box(uv, np.zeros((1, 3), bool))).all()
    affine = crop_affine(box[0], 64)
    corners = apply_affine(affine, np.array([[-30.0, 10.0], [70.0, 110.0], [20.0, 60.0]]))
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [63.5, 63.5], [31.5, 31.5]])


@pytest.mark.parametrize(("w", "h", "fov"), [(0, 10, 60.0), (10, 10, 0.5), (10, 10, 180.0)])
def test_bad_intrinsics_raise(w, h, fov):
    with pytest.raises(ValueError):
        intrinsics_from_fov(w, h, fov)
