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
    np.savez(
        tmp_path / "h36m" / "test_h36m_body3d.npz",
        imgname=np.array([name]),
        S=S,
        part=np.zeros((1, 17, 3)),
        center=np.array([[60.0, 50.0]]),
        scale=np.array([0.4]),
    )
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


# --- a new user's mistakes and damaged data -----------------------------------------------------


def test_a_corrupt_annotation_file_is_named(real_root):
    root, _, _ = real_root
    (root / "coco" / "test_coco.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"'.*coco/test_coco.json' cannot be read: JSONDecodeError") as exc:
        evaluate_real(None, root, progress=False)
    assert "\n" not in str(exc.value)
    (root / "coco" / "test_coco.json").write_text('{"images": [], "annotations": [{"bbox": [0, 0, 9, 9]}]}')
    (root / "h36m" / "cameras.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*h36m/cameras.pkl' not found; '.*test_h36m_body3d.npz' needs"):
        evaluate_real(None, root, progress=False)
    npz = root / "h36m" / "test_h36m_body3d.npz"
    npz.write_bytes(npz.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"'.*h36m/test_h36m_body3d.npz' cannot be read: BadZipFile"):
        evaluate_real(None, root, progress=False)


def test_an_unreadable_image_is_skipped_and_counted(real_root, caplog):
    import logging

    root, gt3d, kp = real_root
    (root / "coco" / "a.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.pipeline.eval_real"):
        result = evaluate_real(FakePipeline(gt3d, kp), root, progress=False)
    assert result["skipped"] == [str(root / "coco" / "a.jpg")]
    assert result["per_dataset"]["coco"]["skipped"] == 2 and result["per_dataset"]["h36m"]["skipped"] == 0
    assert result["num_people_2d"] == 0 and result["pck_at_0.1"] is None and result["num_frames_3d"] == 1
    assert result["pa_mpjpe_mm"] == pytest.approx(0.0, abs=0.05)
    assert "skipping" in caplog.text and "a.jpg" in caplog.text
    assert set(result) >= {"pck_at_0.1", "mpjpe_mm", "pa_mpjpe_mm", "num_frames_3d", "num_people_2d", "missed_3d"}
    (root / "coco" / "a.jpg").write_bytes(b"not an image")
    name = "S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg"
    (root / "h36m" / name).unlink()
    with pytest.raises(ValueError, match="none of the 2 images of .* could be read"):
        evaluate_real(FakePipeline(gt3d, kp), root, progress=False)


def test_unusable_data_folders_say_what_is_wrong(tmp_path, real_root, caplog):
    import logging

    (tmp_path / "only" / "h36m").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no usable real evaluation data: h36m/ has no test_h36m_body3d.npz"):
        evaluate_real(None, tmp_path / "only", progress=False)
    (tmp_path / "only" / "coco").mkdir()
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"image_id": 1, "bbox": [5, 5, 0, 40], "keypoints": [10, 10, 2] * 17}],
    }
    (tmp_path / "only" / "coco" / "test_coco.json").write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"every box in coco/test_coco.json is empty") as exc:
        evaluate_real(None, tmp_path / "only", progress=False)
    assert "h36m/ has no test_h36m_body3d.npz" in str(exc.value)
    a_file = tmp_path / "data.zip"
    a_file.write_bytes(b"zip")
    with pytest.raises(ValueError, match=r"'.*data.zip' is a file; expected a folder"):
        evaluate_real(None, a_file, progress=False)
    # usable data beside an empty dataset folder: evaluated, with a warning about the folder
    root, gt3d, kp = real_root
    (root / "mpi_inf_3dhp").mkdir()
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.pipeline.eval_real"):
        result = evaluate_real(FakePipeline(gt3d, kp), root, progress=False)
    assert result["num_frames_3d"] == 1 and "mpi_inf_3dhp/ has neither" in caplog.text


def test_overlays_never_replace_a_users_files_unless_forced(real_root, tmp_path, monkeypatch):
    import hmdiff_ros.pipeline.eval_real as eval_real

    root, gt3d, kp = real_root
    pipe = FakePipeline(gt3d, kp)
    pipe.topology = SimpleNamespace(full_faces=None)
    monkeypatch.setattr(eval_real, "overlay", lambda image, people, K, faces: np.full((8, 8, 3), 99, np.uint8))
    mine = tmp_path / "er_foreign"
    mine.mkdir()
    (mine / "coco_a.jpg").write_bytes(b"my photo")
    with pytest.raises(ValueError, match="already exists and is not empty; use --force"):
        evaluate_real(pipe, root, out=mine, progress=False)
    assert (mine / "coco_a.jpg").read_bytes() == b"my photo"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ValueError, match="is an existing file; expected a folder"):
        evaluate_real(pipe, root, out=a_file, progress=False, force=True)
    assert a_file.read_text() == "mine"
    result = evaluate_real(pipe, root, out=mine, progress=False, force=True)
    assert result["num_people_2d"] == 2
    assert sorted(p.name for p in mine.iterdir()) == ["coco_a.jpg", "h36m_S1_Directions_1.54138969_000001.jpg"]
    assert cv2.imread(str(mine / "coco_a.jpg")) is not None  # the overlay, replacing the user's file as asked

    # a new folder is made only when there is an overlay to write
    class Nobody(FakePipeline):
        def __call__(self, image, K, boxes):
            return []

    result = evaluate_real(Nobody(gt3d, kp), root, out=tmp_path / "new" / "overlays", progress=False)
    assert result["missed_3d"] == 1 and not (tmp_path / "new").exists()


def test_the_command_lists_skipped_frames_and_exits_1(real_root, capsys):
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    from hmdiff_ros.cli import main

    root, _, _ = real_root
    (root / "coco" / "a.jpg").unlink()
    assert main(["eval-real", "--data", str(root), "--hypotheses", "1", "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "1 frames skipped (unreadable)" in err and str(root / "coco" / "a.jpg") in err
