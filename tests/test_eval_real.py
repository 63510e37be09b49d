"""``hmdiff eval-real``: readers of the real-data layout and the metrics, on tiny fixtures
made here (the real frames stay outside the repository)."""

import json
import pickle
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.pipeline.eval_real import H36M_LIMBS, LIMBS, evaluate_real, frames_3d, people_2d


@pytest.fixture()
def real_root(tmp_path):
    rng = np.random.default_rng(0)
    # Human3.6M: one frame, 17 joints in camera coordinates, a camera in cameras.pkl
    name = "S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg"
    (tmp_path / "h36m" / name).parent.mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "h36m" / name), np.full((100, 120, 3), 10, np.uint8))
    S = np.concatenate([rng.normal(0, 0.4, (1, 17, 3)) + [0, 0, 4], np.ones((1, 17, 1))], -1)
    np.savez(tmp_path / "h36m" / "test_h36m_body3d.npz", imgname=np.array([name]), S=S,
             part=np.zeros((1, 17, 3)), center=np.array([[60.0, 50.0]]), scale=np.array([0.4]))  # fmt: skip
    cams = {("S1", "54138969"): {"f": np.array([[500.0], [500.0]]), "c": np.array([[60.0], [50.0]])}}
    (tmp_path / "h36m" / "cameras.pkl").write_bytes(pickle.dumps(cams))
    # COCO: one photo, two annotated people (the second is one the pipeline will miss)
    (tmp_path / "coco").mkdir()
    cv2.imwrite(str(tmp_path / "coco" / "a.jpg"), np.full((100, 120, 3), 200, np.uint8))
    kp = np.zeros((17, 3))
    kp[5:17, :2] = rng.uniform(20, 80, (12, 2))
    kp[5:17, 2] = 2
    ann = [
        {"image_id": 1, "bbox": [10, 10, 50, 80], "keypoints": kp.ravel().tolist(), "num_keypoints": 12},
        {"image_id": 1, "bbox": [70, 10, 40, 80], "keypoints": kp.ravel().tolist(), "num_keypoints": 12},
        {"image_id": 1, "bbox": [0, 0, 5, 5], "keypoints": [0] * 51, "num_keypoints": 0},  # no keypoints: skipped
    ]
    (tmp_path / "coco" / "test_coco.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": ann})
    )
    return tmp_path, S[0, list(H36M_LIMBS), :3], kp


class FakePipeline:
    """Answers the 3D frame with a scaled, turned, shifted copy of the truth (PA error 0) and
    the first COCO person with the annotated keypoints, one of them 30 px off."""

    cfg = SimpleNamespace(hfov_deg=65.0)

    def __init__(self, gt3d, kp):
        self.gt3d, self.kp = gt3d, kp

    def __call__(self, image, K, boxes):
        box = np.asarray(boxes[0], dtype=np.float64)
        joints, uv = np.zeros((25, 3)), np.zeros((25, 2))
        if image[0, 0, 0] == 10:  # the Human3.6M frame
            c, s = np.cos(0.3), np.sin(0.3)
            rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
            for k, n in enumerate(LIMBS):
                joints[JOINT_INDEX[n]] = 1.1 * self.gt3d[k] @ rot.T + [0.1, 0, 0]
        elif box[0] < 50:  # the first COCO person
            uv[:17] = self.kp[:, :2]
            uv[JOINT_INDEX["left_wrist"]] += 30.0
        else:
            return []
        return [SimpleNamespace(box=box, joints=joints, joints_uv=uv)]


def test_readers_follow_the_fixture_layout(real_root):
    root, gt3d, kp = real_root
    (frame,) = list(frames_3d(root))
    assert frame[0] == "h36m" and frame[1].is_file()
    np.testing.assert_allclose(frame[2], [[500, 0, 60], [0, 500, 50], [0, 0, 1]])
    np.testing.assert_allclose(frame[3], [20, 10, 100, 90])  # square side = scale * 200
    np.testing.assert_allclose(frame[4], gt3d)
    people = list(people_2d(root))
    assert [p[0] for p in people] == ["coco", "coco"]
    np.testing.assert_allclose(people[0][2], [10, 10, 60, 90])
    assert sorted(people[0][3]) == sorted(LIMBS)


def test_metrics_on_known_answers(real_root):
    root, gt3d, kp = real_root
    result = evaluate_real(FakePipeline(gt3d, kp), root, progress=False)
    assert set(result) >= {"pck_at_0.1", "mpjpe_mm", "pa_mpjpe_mm", "num_frames_3d", "num_people_2d"}
    assert result["num_frames_3d"] == 1 and result["num_people_2d"] == 2
    assert result["pa_mpjpe_mm"] == pytest.approx(0.0, abs=0.05)
    assert result["mpjpe_mm"] > 10  # a turned, scaled body is wrong before Procrustes
    # person 1: 11 of 12 joints right (one 30 px off > 0.1 * 80 px); person 2 missed: 0 of 12
    assert result["pck_at_0.1"] == pytest.approx(11 / 24, abs=1e-3)
    assert result["per_dataset"]["coco"]["missed"] == 1


def test_missing_or_unknown_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_real(None, tmp_path / "nothing", progress=False)
    with pytest.raises(ValueError, match="holds no known real evaluation data"):
        evaluate_real(None, tmp_path, progress=False)
