"""The SMPL adapter, tested on a synthetic model file in the official SMPL layout (the real
files are licensed and never available here)."""

import math

import pytest
import torch

pytest.importorskip("smplx", reason="smplx is not installed (pip install 'hmdiff_ros[smpl]')")

from hmdiff_ros.body.joints import JOINT_INDEX as J  # noqa: E402
from hmdiff_ros.body.smpl_body import SMPLBody, resolve_model_file  # noqa: E402


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"smpl\.is\.tue\.mpg\.de"):
        SMPLBody(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"smpl-x\.is\.tue\.mpg\.de"):
        resolve_model_file(tmp_path, "smplx", "female")
    with pytest.raises(ValueError, match="gender must be one of"):
        resolve_model_file(tmp_path, "smpl", "other")


def test_a_corrupt_model_file_is_rejected(tmp_path):
    bad = tmp_path / "SMPL_NEUTRAL.pkl"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="could not load SMPL model"):
        SMPLBody(tmp_path)


def test_folder_layout_is_found(smpl_file, tmp_path):
    (tmp_path / "smpl").mkdir()
    (tmp_path / "smpl" / "SMPL_NEUTRAL.pkl").write_bytes(smpl_file.read_bytes())
    assert resolve_model_file(tmp_path, "smpl", "neutral") == tmp_path / "smpl" / "SMPL_NEUTRAL.pkl"


def test_smpl_adapter_outputs_our_joints_and_follows_the_pose(smpl_file):
    body = SMPLBody(smpl_file)
    out = body(shape=torch.zeros(2, 10))
    assert out.vertices.shape == (2, 6890, 3) and out.joints.shape == (2, 25, 3)
    torch.testing.assert_close(body.joint_regressor.sum(1), torch.ones(25))
    pose = torch.zeros(1, 23, 3)
    pose[0, 17, 2] = math.pi / 2  # SMPL joint 18 (left elbow) is body_pose row 17
    bent = body(pose=pose).joints[0]
    assert (bent[J["left_wrist"]] - out.joints[0, J["left_wrist"]]).norm() > 0.1
    assert (bent[J["right_wrist"]] - out.joints[0, J["right_wrist"]]).norm() < 1e-5
    with pytest.raises(ValueError, match=r"'pose' must have shape \(B, 23, 3\)"):
        body(pose=torch.zeros(1, 21, 3))
