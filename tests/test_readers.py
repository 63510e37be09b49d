"""Dataset readers on tiny fixtures written here in the datasets' own layouts."""

import pickle

import numpy as np
import pytest
import torch

from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.data.readers import matrix_to_rotvec, read_3dpw_sequence, read_h36m_body3d, rotvec_to_matrix


def test_h36m_body3d_layout_with_cameras(tmp_path):
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(size=(2, 17, 3)) + [0, 0, 4], np.ones((2, 17, 1))], -1)
    names = np.array(
        [
            "S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg",
            "S8/S8_WalkDog_1.55011271/S8_WalkDog_1.55011271_000026.jpg",
        ]
    )
    np.savez(
        tmp_path / "body3d.npz",
        imgname=names,
        S=s,
        part=rng.normal(size=(2, 17, 3)),
        center=np.zeros((2, 2)),
        scale=np.ones(2),
    )
    cams = {
        ("S1", "54138969"): {"f": np.array([[1145.0], [1144.0]]), "c": np.array([[512.5], [515.4]])},
        ("S8", "55011271"): {"f": np.array([[1150.0], [1149.0]]), "c": np.array([[500.0], [501.0]])},
    }
    (tmp_path / "cameras.pkl").write_bytes(pickle.dumps(cams))
    frames = read_h36m_body3d(tmp_path / "body3d.npz", tmp_path / "cameras.pkl")
    assert len(frames) == 2 and frames[0].joint_names[1] == "right_hip"
    np.testing.assert_allclose(frames[1].joints, s[1, :, :3])
    np.testing.assert_allclose(frames[0].K, [[1145.0, 0, 512.5], [0, 1144.0, 515.4], [0, 0, 1]])
    assert frames[0].image == tmp_path / names[0]


def test_h36m_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        read_h36m_body3d(tmp_path / "nothing.npz")
    np.savez(tmp_path / "bad.npz", imgname=np.array(["a.jpg"]), S=np.zeros((1, 14, 4)), part=np.zeros((1, 14, 3)))
    with pytest.raises(ValueError, match=r"S must have shape \(N, 17, 4\)"):
        read_h36m_body3d(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an mmpose Human3.6M"):
        read_h36m_body3d(tmp_path / "other.npz")


def _write_3dpw(folder, num_frames=3):
    rng = np.random.default_rng(1)
    R = rotvec_to_matrix(np.array([0.1, 1.2, -0.2]))
    cam = np.tile(np.eye(4), (num_frames, 1, 1))
    cam[:, :3, :3] = R
    cam[:, :3, 3] = [0.2, -0.1, 3.0]
    seq = {
        "sequence": "courtyard_test_00",
        "poses": [rng.normal(scale=0.2, size=(num_frames, 72))],
        "betas": [rng.normal(scale=0.5, size=10)],
        "trans": [rng.normal(size=(num_frames, 3))],
        "cam_poses": cam,
        "cam_intrinsics": np.array([[1961.0, 0, 540], [0, 1969.0, 960], [0, 0, 1]]),
        "genders": ["m"],
        "img_frame_ids": np.arange(num_frames) + 10,
        "campose_valid": [np.array([True, False, True][:num_frames])],
    }
    path = folder / "sequenceFiles" / "test" / "courtyard_test_00.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(seq))
    return path, seq, R


def test_3dpw_sequence_to_camera_frame_parameters(tmp_path):
    path, seq, R = _write_3dpw(tmp_path)
    frames = read_3dpw_sequence(path)
    assert len(frames) == 2, "invalid camera poses are skipped"
    f = frames[1]
    assert f.image == tmp_path / "imageFiles" / "courtyard_test_00" / "image_00012.jpg"
    np.testing.assert_allclose(
        rotvec_to_matrix(f.extra["global_orient"]), R @ rotvec_to_matrix(seq["poses"][0][2, :3]), atol=1e-9
    )
    assert f.extra["gender"] == "male" and f.K[0, 0] == 1961.0


def test_3dpw_with_smpl_gives_camera_frame_joints(tmp_path, smpl_file):
    import shutil

    from hmdiff_ros.body.smpl_body import SMPLBody

    shutil.copy(smpl_file, tmp_path / "SMPL_MALE.pkl")
    path, seq, R = _write_3dpw(tmp_path)
    frames = read_3dpw_sequence(path, smpl_model_path=tmp_path)
    body = SMPLBody(tmp_path, gender="male", dtype=torch.float64)
    p = seq["poses"][0][0]
    world = (
        body(
            shape=seq["betas"][0][None],
            pose=p[3:].reshape(1, 23, 3),
            global_orient=p[None, :3],
            transl=seq["trans"][0][:1],
        )
        .joints[0]
        .numpy()
    )
    expected = world @ R.T + [0.2, -0.1, 3.0]
    np.testing.assert_allclose(frames[0].joints, expected, atol=1e-6)
    assert frames[0].joints.shape == (25, 3) and frames[0].extra["vertices"].shape == (6890, 3)
    assert abs(frames[0].joints[JOINT_INDEX["pelvis"], 2] - expected[JOINT_INDEX["pelvis"], 2]) < 1e-6


def test_3dpw_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="3DPW sequence file"):
        read_3dpw_sequence(tmp_path / "x.pkl")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"poses": []}))
    with pytest.raises(ValueError, match="missing"):
        read_3dpw_sequence(tmp_path / "x.pkl")
    (tmp_path / "y.pkl").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        read_3dpw_sequence(tmp_path / "y.pkl")


def test_rotation_conversions_round_trip():
    rng = np.random.default_rng(0)
    for v in list(rng.normal(size=(20, 3))) + [np.array([np.pi - 1e-8, 0, 0])]:
        v = v / np.linalg.norm(v) * min(np.linalg.norm(v), np.pi - 1e-7)
        np.testing.assert_allclose(
            rotvec_to_matrix(matrix_to_rotvec(rotvec_to_matrix(v))), rotvec_to_matrix(v), atol=1e-6
        )
