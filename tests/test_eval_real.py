"""``hmdiff eval-real``: readers of the real-data layout and the metrics, on tiny fixtures
made here (the real frames stay outside the repository)."""

import json
import pickle
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from hmdiff_ros.body.joints import JOINT_INDEX
from hmdiff_ros.study.eval_real import evaluate_real
from hmdiff_ros.study.real_data import H36M_LIMBS, LIMBS, frames_3d, people_2d


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


def _turn(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


PRIOR_TURN = 0.5  # the fake prior's 3D joints: the truth turned by this angle (rad) about the mid-hip
PRIOR_OFF = ("left_wrist", "right_knee")  # the fake prior's keypoints 30 px off


class FakePipeline:
    """Answers the 3D frame with a scaled, turned, shifted copy of the truth (PA error 0) and
    the first COCO person with the annotated keypoints, one of them 30 px off. Its prior's 3D
    joints are the truth turned by ``PRIOR_TURN`` about the mid-hip and moved (PA error 0),
    its keypoints the annotated ones with the ``PRIOR_OFF`` joints 30 px off."""

    cfg = SimpleNamespace(hfov_deg=65.0)

    def __init__(self, gt3d, kp):
        self.gt3d, self.kp = gt3d, kp

    def __call__(self, image, K, boxes):
        box = np.asarray(boxes[0], dtype=np.float64)
        joints, uv = np.zeros((25, 3)), np.zeros((25, 2))
        prior_xyz, prior_uv = np.full((25, 3), np.nan), np.full((25, 2), np.nan)
        if image[0, 0, 0] == 10:  # the Human3.6M frame
            rot = _turn(0.3)
            mid_hip = self.gt3d[[LIMBS.index("left_hip"), LIMBS.index("right_hip")]].mean(0)
            for k, n in enumerate(LIMBS):
                joints[JOINT_INDEX[n]] = 1.1 * self.gt3d[k] @ rot.T + [0.1, 0, 0]
                prior_xyz[JOINT_INDEX[n]] = (self.gt3d[k] - mid_hip) @ _turn(PRIOR_TURN).T + [0, 0.05, 0]
        elif box[0] < 50:  # the first COCO person
            uv[:17] = self.kp[:, :2]
            uv[JOINT_INDEX["left_wrist"]] += 30.0
            prior_uv[:17] = self.kp[:, :2]
            for n in PRIOR_OFF:
                prior_uv[JOINT_INDEX[n]] += 30.0
        else:
            return []
        return [SimpleNamespace(box=box, joints=joints, joints_uv=uv, prior_xyz=prior_xyz, prior_uv=prior_uv)]


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


def test_the_priors_figures_stand_beside_the_models(real_root):
    root, gt3d, kp = real_root
    result = evaluate_real(FakePipeline(gt3d, kp), root, progress=False)
    # 3D: the prior's joints are the truth turned about the mid-hip: PA 0, MPJPE the turn's displacement
    hips = [LIMBS.index("left_hip"), LIMBS.index("right_hip")]
    centred = gt3d - gt3d[hips].mean(0)
    turn_mm = np.linalg.norm(centred @ _turn(PRIOR_TURN).T - centred, axis=-1).mean() * 1000
    assert turn_mm > 50
    assert result["prior_mpjpe_mm"] == pytest.approx(turn_mm, abs=0.05)
    assert result["prior_pa_mpjpe_mm"] == pytest.approx(0.0, abs=0.05)
    h36m = result["per_dataset"]["h36m"]
    assert h36m["prior_mpjpe_mm"] == result["prior_mpjpe_mm"] and h36m["prior_pa_mpjpe_mm"] == pytest.approx(
        0, abs=0.05
    )
    # 2D: person 1: 10 of 12 prior keypoints right; person 2 missed by the pipeline: 0 of 12 for the prior too
    assert result["prior_pck_at_0.1"] == pytest.approx(10 / 24, abs=1e-3)
    assert result["per_dataset"]["coco"]["prior_pck_at_0.1"] == pytest.approx(10 / 24, abs=1e-3)
    assert result["per_dataset"]["coco"]["prior_hits"] == 10


def test_per_sample_figures_add_up_to_the_totals(real_root):
    """eval-protocol's intervals resample these: per 3D frame, and per 2D person its hits and joints."""
    root, gt3d, kp = real_root
    result = evaluate_real(FakePipeline(gt3d, kp), root, progress=False, per_sample=True)
    per = result["per_sample"]
    assert per["mpjpe_mm"].mean() == pytest.approx(result["mpjpe_mm"], abs=0.05)
    assert per["prior_mpjpe_mm"].mean() == pytest.approx(result["prior_mpjpe_mm"], abs=0.05)
    assert per["pck_hits"].tolist() == [11, 0] and per["pck_prior_hits"].tolist() == [10, 0]
    assert per["pck_hits"].sum() / per["pck_joints"].sum() == pytest.approx(result["pck_at_0.1"], abs=1e-3)
    assert "per_sample" not in evaluate_real(FakePipeline(gt3d, kp), root, progress=False)


def test_a_joint_the_prior_has_no_keypoint_for_counts_as_wrong_for_the_prior(real_root):
    root, gt3d, kp = real_root
    (root / "mpii").mkdir()
    joints = np.zeros((16, 2))
    # head top (put at the left shoulder), right wrist and right elbow, 1-based; the box (-5, 10, 75, 90)
    joints[[9, 10, 11]] = (
        kp[[JOINT_INDEX["left_shoulder"], JOINT_INDEX["right_wrist"], JOINT_INDEX["right_elbow"]], :2] + 1
    )
    vis = np.zeros(16)
    vis[[9, 10, 11]] = 1
    record = {"image": "a.jpg", "joints": joints.tolist(), "joints_vis": vis.tolist(), "center": [35, 50], "scale": 0.4}
    (root / "mpii" / "test_mpii.json").write_text(json.dumps([record]))
    cv2.imwrite(str(root / "mpii" / "a.jpg"), np.full((100, 120, 3), 200, np.uint8))

    class HeadTop(FakePipeline):
        def __call__(self, image, K, boxes):
            people = super().__call__(image, K, boxes)
            for p in people:
                p.joints_uv[JOINT_INDEX["head_top"]] = kp[JOINT_INDEX["left_shoulder"], :2]  # the prior has none
            return people

    result = evaluate_real(HeadTop(gt3d, kp), root, progress=False)
    mpii = result["per_dataset"]["mpii"]
    assert mpii["people"] == 1 and mpii["hits"] == 3 and mpii["pck_at_0.1"] == 1.0
    assert mpii["prior_hits"] == 2 and mpii["prior_pck_at_0.1"] == pytest.approx(2 / 3, abs=1e-3)


def test_eval_real_json_has_the_prior_keys(real_root, capsys):
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    from hmdiff_ros.cli import main

    root, _, _ = real_root
    assert main(["eval-real", "--data", str(root), "--hypotheses", "1", "--steps", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"prior_mpjpe_mm", "prior_pa_mpjpe_mm", "prior_pck_at_0.1"}
    assert set(result["per_dataset"]["h36m"]) >= {"mpjpe_mm", "prior_mpjpe_mm", "prior_pa_mpjpe_mm"}
    assert set(result["per_dataset"]["coco"]) >= {"pck_at_0.1", "prior_pck_at_0.1"}


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
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.study.eval_real"):
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
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.study.real_data"):
        result = evaluate_real(FakePipeline(gt3d, kp), root, progress=False)
    assert result["num_frames_3d"] == 1 and "mpi_inf_3dhp/ has neither" in caplog.text


def test_overlays_never_replace_a_users_files_unless_forced(real_root, tmp_path, monkeypatch):
    import hmdiff_ros.study.eval_real as eval_real

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


class EchoLifter:
    """A lifter that answers with the prior's own U on its joints (head_top at the origin) and
    keeps what it was given: its figures must then be the prior's."""

    def __init__(self):
        self.calls = []

    def predict(self, uv, visibility, prior_xyz):
        from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES

        self.calls.append((uv, visibility, prior_xyz))
        joints = np.zeros((25, 3), np.float32)
        joints[list(PRIOR_JOINT_INDICES)] = np.nan_to_num(prior_xyz)
        return joints


def test_the_lifter_is_scored_on_the_3d_frames_like_the_model_and_the_prior(real_root):
    root, gt3d, kp = real_root

    class WithVisibility(FakePipeline):
        proxy_cfg = SimpleNamespace(crop_size=64)

        def __call__(self, image, K, boxes):
            people = super().__call__(image, K, boxes)
            for p in people:
                p.visibility = np.ones(25)
            return people

    lifter = EchoLifter()
    result = evaluate_real(WithVisibility(gt3d, kp), root, progress=False, lifter=lifter)
    assert len(lifter.calls) == 1  # the one 3D frame; 2D people get no lifter figure
    assert result["lifter_mpjpe_mm"] == pytest.approx(result["prior_mpjpe_mm"], abs=0.05)
    assert result["lifter_pa_mpjpe_mm"] == pytest.approx(0.0, abs=0.05)
    assert result["per_dataset"]["h36m"]["lifter_mpjpe_mm"] == result["lifter_mpjpe_mm"]
    without = evaluate_real(FakePipeline(gt3d, kp), root, progress=False)
    assert without["lifter_mpjpe_mm"] is None and without["lifter_pa_mpjpe_mm"] is None


def test_the_lifter_reads_the_keypoints_in_the_models_crop():
    from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES
    from hmdiff_ros.observation import PriorPerson, observe
    from hmdiff_ros.study.eval_real import lifted

    rng = np.random.default_rng(3)
    uv = rng.uniform([100, 80], [400, 460], size=(24, 2))
    person = PriorPerson(uv=uv, visibility=rng.uniform(0.6, 1, 24), xyz=rng.normal(size=(24, 3)) * 0.3)
    obs = observe(person, (640, 480))
    cx, cy, s = obs.box
    q = list(PRIOR_JOINT_INDICES)
    prior_uv, vis, xyz = np.full((25, 2), np.nan), np.zeros(25), np.full((25, 3), np.nan)
    prior_uv[q], vis[q], xyz[q] = uv, person.visibility, person.xyz
    result = SimpleNamespace(box=np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]), prior_uv=prior_uv)
    result.visibility, result.prior_xyz = vis, xyz
    lifter = EchoLifter()
    lifted(lifter, result, 64)
    given_uv, given_vis, given_xyz = lifter.calls[0]
    np.testing.assert_allclose(given_uv, obs.uv, atol=1e-4)  # what the model's crop holds, not image pixels
    np.testing.assert_allclose(given_vis, obs.visibility, atol=1e-6)
    np.testing.assert_allclose(given_xyz, obs.prior_xyz, atol=1e-6)


def test_data_whose_images_are_all_missing_is_refused_before_the_model(real_root):
    from hmdiff_ros.study.real_data import read_real

    root, _, _ = real_root
    for image in [*root.rglob("*.jpg")]:
        image.unlink()
    with pytest.raises(ValueError, match=r"none of the \d+ images of .* could be read, so nothing would be evaluated"):
        read_real(root)
