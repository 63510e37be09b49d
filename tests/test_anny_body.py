import math

import numpy as np
import pytest
import torch

from hmdiff_ros.body.anny_body import PHENOTYPES
from hmdiff_ros.body.joints import JOINT_INDEX as J


def _bone(body, label):
    return body.bone_labels.index(label) - 1  # pose rows skip the root bone


def test_neutral_body_shapes_units_and_canonical_frame(anny_body):
    out = anny_body()
    assert out.vertices.shape == (1, 13718, 3) and out.joints.shape == (1, 25, 3)
    assert anny_body.faces.shape == (27420, 3) and anny_body.faces.max() < 13718
    j = out.joints[0]
    height = float(out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min())
    assert 1.4 < height < 1.9, "metres, adult neutral body"
    assert j[J["head_top"], 1] > j[J["nose"], 1] > j[J["neck"], 1] > j[J["pelvis"], 1] > j[J["left_knee"], 1]
    assert j[J["nose"], 2] > j[J["pelvis"], 2] + 0.05, "the body faces +z"
    assert j[J["left_shoulder"], 0] > 0 > j[J["right_shoulder"], 0], "x points to the subject's left"
    torch.testing.assert_close(j[J["pelvis"]], 0.5 * (j[J["left_hip"]] + j[J["right_hip"]]))


def test_phenotypes_span_children_to_adults(anny_body):
    shape = torch.full((2, len(PHENOTYPES)), 0.5, dtype=torch.float64)
    shape[0, PHENOTYPES.index("age")] = 0.0
    heights = anny_body(shape=shape).vertices[..., 1]
    height = heights.max(1).values - heights.min(1).values
    assert height[0] < 0.8 * height[1]


def test_joints_move_with_the_pose(anny_body):
    pose = torch.zeros(2, 103, 3, dtype=torch.float64)
    pose[1, _bone(anny_body, "lowerarm01.L"), 0] = -math.pi / 2  # bend the left elbow
    j = anny_body(pose=pose).joints
    moved = (j[1] - j[0]).norm(dim=-1)
    assert moved[J["left_wrist"]] > 0.15
    assert moved[J["right_wrist"]] < 1e-6 and moved[J["left_shoulder"]] < 1e-6
    pose = torch.zeros(1, 103, 3, dtype=torch.float64)
    pose[0, _bone(anny_body, "lowerleg01.L"), 0] = math.pi / 2  # knee flexion
    bent = anny_body(pose=pose).joints[0]
    assert bent[J["left_ankle"], 2] < j[0, J["left_knee"], 2] - 0.2, "a bent knee moves the foot backwards"


def test_global_orient_and_transl_are_rigid(anny_body):
    rotvec = torch.tensor([[0.0, math.pi / 2, 0.0]], dtype=torch.float64)
    base = anny_body().joints[0]
    moved = anny_body(global_orient=rotvec, transl=torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)).joints[0]
    rot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(moved, base @ rot.T + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"pose": torch.zeros(1, 104, 3)}, r"'pose' must have shape \(B, 103, 3\)"),
        ({"shape": torch.zeros(2, 5)}, r"'shape' must have shape \(B, 6\)"),
        ({"transl": torch.tensor([[0.0, float("nan"), 0.0]])}, "'transl' contains NaN"),
        ({"shape": torch.full((1, 6), 1.5)}, r"must lie in \[0, 1\]"),
        ({"betas": torch.zeros(1, 10)}, "unknown parameters"),
        ({"shape": torch.zeros(2, 6), "transl": torch.zeros(3, 3)}, "batch size"),
        ({"pose": "not a pose"}, "'pose' must be a numeric array"),
    ],
)
def test_bad_parameters_raise_clear_errors(anny_body, params, match):
    with pytest.raises(ValueError, match=match):
        anny_body(**params)


def test_accepts_numpy_parameters(anny_body):
    out = anny_body(shape=np.full((3, 6), 0.4), transl=np.zeros((3, 3)))
    assert out.vertices.shape == (3, 13718, 3)
