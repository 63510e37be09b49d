import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from hmdiff_ros.pipeline.tracking import (
    OneEuroConfig,
    OneEuroFilter,
    Tracker,
    TrackerConfig,
    box_iou,
    linear_sum_assignment,
)


def brute_force(cost):
    n, m = cost.shape
    best = np.inf
    if n <= m:
        for cols in itertools.permutations(range(m), n):
            best = min(best, cost[np.arange(n), list(cols)].sum())
    else:
        for rows in itertools.permutations(range(n), m):
            best = min(best, cost[list(rows), np.arange(m)].sum())
    return best


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5)])
def test_assignment_is_optimal(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.uniform(0, 1, shape)
        rows, cols = linear_sum_assignment(cost)
        assert len(rows) == min(shape) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert cost[rows, cols].sum() == pytest.approx(brute_force(cost))


def test_assignment_rejects_bad_costs():
    with pytest.raises(ValueError, match="finite 2-D"):
        linear_sum_assignment(np.array([[0.0, np.nan]]))
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_one_euro_smooths_noise_and_follows_a_ramp():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.0))
    t = np.arange(200) / 30.0
    noisy = rng.normal(0, 0.05, (200, 3))
    out = np.stack([f(x, s) for x, s in zip(noisy, t, strict=True)])
    assert out[50:].std() < 0.5 * noisy[50:].std()
    g = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=5.0))
    ramp = np.stack([g(np.array([s]), s) for s in t])[:, 0]
    assert abs(ramp[-1] - t[-1]) < 0.1  # a fast filter (high beta) keeps up with motion
    g2 = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=5.0))
    assert g2(np.array([1.0]), 5.0)[0] == 1.0  # the first sample passes through
    assert g2(np.array([3.0]), 4.0)[0] == 3.0  # time going back resets the filter


def person(box, t=(0.0, 0.0, 3.0)):
    t = np.asarray(t, dtype=np.float64)
    joints = np.zeros((25, 3)) + t
    return SimpleNamespace(
        box=np.asarray(box, dtype=np.float64),
        translation=t,
        joints=joints,
        coarse_vertices=np.zeros((6, 3)) + t,
        vertices=None,
        joints_uv=np.zeros((25, 2)),
        track_id=-1,
    )


def test_tracker_keeps_ids_and_swaps_correctly():
    tr = Tracker(TrackerConfig(smooth=False, max_age=2))
    a, b = [0, 0, 100, 200], [300, 0, 400, 200]
    ids0 = [p.track_id for p in tr([person(a), person(b)], 0.0)]
    assert ids0 == [0, 1]
    moved = [person(np.add(b, 5)), person(np.add(a, 5))]  # order swapped, moved a little
    assert [p.track_id for p in tr(moved, 0.04)] == [1, 0]
    # a new person far away gets a new id; lost tracks expire after max_age frames
    assert [p.track_id for p in tr([person([800, 0, 900, 200])], 0.08)] == [2]
    for k in range(3):
        tr([], 0.12 + 0.04 * k)
    assert [p.track_id for p in tr([person(a)], 0.3)] == [3]


def test_a_jump_to_the_neighbour_starts_a_new_track():
    tr = Tracker(TrackerConfig(smooth=True))
    a = [0, 0, 100, 200]
    assert tr([person(a)], 0.0)[0].track_id == 0
    neighbour = [30, 0, 130, 200]  # the same person, moved: IoU 0.54, centre shift 0.15 of the side
    assert tr([person(neighbour, t=(1.0, 0.0, 3.0))], 0.04)[0].track_id == 0
    far = [160, 0, 260, 200]  # no overlap: the prior jumped to someone else
    p = tr([person(far, t=(2.0, 0.0, 3.0))], 0.08)[0]
    assert p.track_id == 1
    np.testing.assert_allclose(p.translation, [2.0, 0.0, 3.0])  # fresh filters: no smoothing from the old track
    loose = Tracker(TrackerConfig(min_iou=0.0, max_shift=0.5))
    loose([person([0, 0, 100, 100])], 0.0)
    assert loose([person([60, 0, 160, 100])], 0.04)[0].track_id == 1  # overlapping, but the centre moved 0.6 side


def test_tracker_smoothing_reduces_jitter_and_keeps_mesh_with_joints():
    rng = np.random.default_rng(1)
    tr = Tracker(TrackerConfig(smooth=True))
    raw, smooth = [], []
    for k in range(60):
        t = np.array([0.0, 0.0, 3.0]) + rng.normal(0, 0.03, 3)
        p = tr([person([0, 0, 100, 200], t)], k / 30.0)[0]
        raw.append(t)
        smooth.append(p.translation)
        np.testing.assert_allclose(p.joints, np.zeros((25, 3)) + p.translation, atol=1e-9)
        np.testing.assert_allclose(p.coarse_vertices, np.zeros((6, 3)) + p.translation, atol=1e-9)
    assert np.std(smooth[20:], axis=0).max() < 0.6 * np.std(raw[20:], axis=0).min()


def test_tracker_bad_config_and_stamp():
    with pytest.raises(ValueError, match="min_iou"):
        TrackerConfig(min_iou=1.5)
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroConfig(min_cutoff=0)
    with pytest.raises(ValueError, match="stamp"):
        Tracker()([person([0, 0, 1, 1])], float("nan"))
