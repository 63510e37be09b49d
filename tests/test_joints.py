import numpy as np
import pytest
import torch

from hmdiff_ros.body import joints as J


def test_joint_set_starts_with_coco17_and_adds_robot_joints():
    assert J.JOINT_NAMES[:17] == J.COCO17_NAMES
    assert {"pelvis", "spine", "neck", "head_top"} <= set(J.JOINT_NAMES)
    assert len(set(J.JOINT_NAMES)) == J.NUM_JOINTS == 25
    assert J.ROOT_JOINT in J.JOINT_NAMES


def test_flip_permutation_swaps_sides_and_is_an_involution():
    perm = np.array(J.FLIP_PERMUTATION)
    assert (perm[perm] == np.arange(J.NUM_JOINTS)).all()
    for i, name in enumerate(J.JOINT_NAMES):
        other = J.JOINT_NAMES[perm[i]]
        if name.startswith("left_"):
            assert other == "right_" + name[5:]
        elif not name.startswith("right_"):
            assert other == name


def test_skeleton_edges_use_known_joints_and_connect_everything():
    names = set(J.JOINT_NAMES)
    reached = {J.ROOT_JOINT}
    for _ in range(J.NUM_JOINTS):
        for a, b in J.SKELETON_EDGES:
            assert a in names and b in names
            if a in reached or b in reached:
                reached |= {a, b}
    assert reached == names


def test_mediapipe_mapping_averages_the_right_landmarks():
    matrix, valid = J.mediapipe_to_joints_matrix()
    assert matrix.shape == (25, 33)
    assert not valid[J.JOINT_INDEX["head_top"]] and valid.sum() == 24
    np.testing.assert_allclose(matrix[valid].sum(1), 1.0)
    landmarks = np.random.default_rng(0).normal(size=(4, 33, 3))
    ours = J.map_joints(landmarks, matrix)
    mp = {n: i for i, n in enumerate(J.MEDIAPIPE33_NAMES)}
    np.testing.assert_allclose(ours[:, J.JOINT_INDEX["left_wrist"]], landmarks[:, mp["left_wrist"]])
    np.testing.assert_allclose(
        ours[:, J.JOINT_INDEX["pelvis"]], 0.5 * (landmarks[:, mp["left_hip"]] + landmarks[:, mp["right_hip"]])
    )
    np.testing.assert_allclose(ours[:, J.JOINT_INDEX["left_big_toe"]], landmarks[:, mp["left_foot_index"]])


def test_h36m_mapping_respects_h36m_sides():
    matrix, valid = J.joints_to_h36m_matrix()
    assert matrix.shape == (17, 25) and valid.all()
    ours = torch.randn(2, 25, 3, dtype=torch.float64)
    h36m = J.map_joints(ours, matrix)
    # H36M index 1 is the subject's RIGHT hip.
    torch.testing.assert_close(h36m[:, 1], ours[:, J.JOINT_INDEX["right_hip"]])
    torch.testing.assert_close(h36m[:, 10], ours[:, J.JOINT_INDEX["head_top"]])
    assert set(J.H36M17_EXACT) < set(J.H36M17_NAMES) and len(J.H36M17_EXACT) == 12


def test_smpl_mapping_leaves_unmatched_joints_out():
    matrix, valid = J.joints_to_smpl_matrix()
    assert matrix.shape == (24, 25)
    smpl = dict(zip(J.SMPL24_NAMES, valid, strict=True))
    assert smpl["left_wrist"] and smpl["pelvis"] and not smpl["head"] and not smpl["left_hand"]
    assert (matrix[~valid] == 0).all()


def test_bad_mapping_input_and_unknown_names_raise():
    matrix, _ = J.mediapipe_to_joints_matrix()
    with pytest.raises(ValueError, match="33"):
        J.map_joints(np.zeros((25, 3)), matrix)
    with pytest.raises(ValueError, match="left_tail"):
        J.joint_indices(["pelvis", "left_tail"])
