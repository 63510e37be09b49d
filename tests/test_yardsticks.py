"""The prior's own figures beside the model's: the metrics, ``hmdiff eval`` on a split whose
prior is known, and the prior's 3D joints that ``Pipeline.run`` hands to ``hmdiff eval-real``."""

import json

import numpy as np
import pytest

from hmdiff_ros.body.joints import JOINT_INDEX, JOINT_NAMES, PRIOR_JOINT_INDICES
from hmdiff_ros.model.metrics import centred_mpjpe_mm, mpjpe_mm, pa_mpjpe_mm

Q = list(PRIOR_JOINT_INDICES)
# a person standing, facing the camera: our 25 joints, metres, y down, pelvis at the origin
STANDING = {
    "nose": (0, -0.60, -0.08),
    "left_eye": (0.03, -0.64, -0.06),
    "right_eye": (-0.03, -0.64, -0.06),
    "left_ear": (0.07, -0.62, 0),
    "right_ear": (-0.07, -0.62, 0),
    "left_shoulder": (0.18, -0.45, 0),
    "right_shoulder": (-0.18, -0.45, 0),
    "left_elbow": (0.22, -0.18, 0),
    "right_elbow": (-0.22, -0.18, 0),
    "left_wrist": (0.24, 0.07, 0),
    "right_wrist": (-0.24, 0.07, 0),
    "left_hip": (0.1, 0, 0),
    "right_hip": (-0.1, 0, 0),
    "left_knee": (0.11, 0.42, 0),
    "right_knee": (-0.11, 0.42, 0),
    "left_ankle": (0.11, 0.82, 0.02),
    "right_ankle": (-0.11, 0.82, 0.02),
    "pelvis": (0, 0, 0),
    "spine": (0, -0.225, 0),
    "neck": (0, -0.45, 0),
    "head_top": (0, -0.78, 0),
    "left_heel": (0.11, 0.87, 0.06),
    "right_heel": (-0.11, 0.87, 0.06),
    "left_big_toe": (0.13, 0.87, -0.12),
    "right_big_toe": (-0.13, 0.87, -0.12),
}


def _turn(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def test_known_rigid_offsets_give_known_errors():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 0.3, (3, 12, 3))
    hips = [6, 7]
    assert np.allclose(centred_mpjpe_mm(gt, gt, hips), 0) and np.allclose(pa_mpjpe_mm(gt, gt), 0, atol=1e-6)
    moved = gt + [0.2, -0.1, 0.3]  # a shift: nothing after mid-hip alignment, everything before
    assert np.allclose(centred_mpjpe_mm(moved, gt, hips), 0, atol=1e-9)
    assert np.allclose(mpjpe_mm(moved, gt), np.linalg.norm([0.2, -0.1, 0.3]) * 1000)
    centre = gt[:, hips].mean(1, keepdims=True)
    turned = 1.2 * (gt - centre) @ _turn(0.4).T + centre  # turned and scaled about the mid-hip
    expected = np.linalg.norm(turned - gt, axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(centred_mpjpe_mm(turned, gt, hips), expected)
    np.testing.assert_allclose(pa_mpjpe_mm(turned, gt), 0, atol=1e-6)


def _split(folder, prior_xyz: np.ndarray, joints_rel: np.ndarray):
    """A split in the layout of 'hmdiff data make' with the given prior and ground-truth joints."""
    from hmdiff_ros.data.store import FORMAT_VERSION, META_FILE, SAMPLES_FILE

    rng = np.random.default_rng(1)
    n = len(joints_rel)
    folder.mkdir(parents=True)
    arrays = {
        "uv": rng.uniform(10, 54, (n, 24, 2)).astype(np.float32),
        "vis": np.ones((n, 24), np.float32),
        "mask": np.zeros((n, 64, 64), np.uint8),
        "valid": np.ones((n, 64, 64), bool),
        "prior_xyz": prior_xyz.astype(np.float32),
        "coarse": rng.normal(0, 0.3, (n, 600, 3)).astype(np.float32),
        "coarse_rel": rng.normal(0, 0.3, (n, 600, 3)).astype(np.float32),
        "joints_rel": joints_rel.astype(np.float32),
    }
    np.savez_compressed(folder / SAMPLES_FILE, **arrays)
    meta = {"format": FORMAT_VERSION, "split": "test", "num": n, "seed": 0}
    meta["config"] = {"proxy": {"crop_size": 64, "heatmap_sigma": 1.5, "min_visibility": 0.5}}
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def shipped_model():
    from hmdiff_ros.model.checkpoint import load_checkpoint

    return load_checkpoint()[0]


def _people(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(2)
    body = np.array([STANDING[name] for name in JOINT_NAMES], dtype=np.float64)
    return np.stack([body @ _turn(a).T for a in rng.uniform(-1, 1, n)])  # (n, 25, 3) root-relative


def test_eval_gives_the_priors_figures_on_its_joints(tmp_path, shipped_model):
    from hmdiff_ros.model.evaluate import evaluate

    gt = _people()
    exact = evaluate(data=_split(tmp_path / "a", gt[:, Q], gt), model=shipped_model, steps=1, dat="off")
    assert set(exact) == {"mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm", "num_samples"}  # as before
    exact = evaluate(
        data=_split(tmp_path / "b", gt[:, Q], gt), model=shipped_model, steps=1, dat="off", yardsticks=True
    )
    assert exact["prior_mpjpe_mm"] == 0 and exact["prior_pa_mpjpe_mm"] == pytest.approx(0, abs=0.01)
    # the prior turned about the root: MPJPE the turn's mean displacement, PA nothing
    turned = gt[:, Q] @ _turn(0.5).T
    result = evaluate(data=_split(tmp_path / "c", turned, gt), model=shipped_model, steps=1, dat="off", yardsticks=True)
    expected = np.linalg.norm(turned - gt[:, Q], axis=-1).mean() * 1000
    assert expected > 50
    assert result["prior_mpjpe_mm"] == pytest.approx(expected, abs=0.01)
    assert result["prior_pa_mpjpe_mm"] == pytest.approx(0, abs=0.01)
    # the model's figures on the prior's joints come with it, and the existing ones are unchanged
    # (the same split without yardsticks: the shipped model reads the prior, so it is split "c")
    plain = evaluate(data=tmp_path / "c", model=shipped_model, steps=1, dat="off")
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm", "num_samples"):
        assert result[k] == plain[k]
    assert 0 < result["pa_mpjpe_mm_on_prior_joints"] <= result["mpjpe_mm_on_prior_joints"]


def test_eval_command_prints_the_prior_beside_the_model(tmp_path, capsys):
    from hmdiff_ros.cli import main

    gt = _people(2)
    split = _split(tmp_path / "s", gt[:, Q] + 0.01, gt)
    assert main(["eval", "--data", str(split), "--steps", "1", "--dat", "off", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm", "num_samples"}
    assert set(result) >= {"prior_mpjpe_mm", "prior_pa_mpjpe_mm", "mpjpe_mm_on_prior_joints"}
    assert result["prior_mpjpe_mm"] == pytest.approx(np.sqrt(3) * 10, abs=0.01)
    assert main(["eval", "--data", str(split), "--steps", "1", "--dat", "off"]) == 0
    assert f"(prior {result['prior_mpjpe_mm']:.1f})" in capsys.readouterr().out


def test_eval_command_defaults_its_options_like_the_other_commands(tmp_path, capsys):
    """``hmdiff eval`` with neither --steps nor --dat runs the defaults every other command runs."""
    from hmdiff_ros import defaults
    from hmdiff_ros.cli import main

    gt = _people(2)
    split = _split(tmp_path / "s", gt[:, Q] + 0.01, gt)
    assert main(["eval", "--data", str(split), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    explicit = ["--steps", str(defaults.STEPS), "--dat", defaults.DAT_MODE]
    assert main(["eval", "--data", str(split), *explicit, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == plain


class StandingPrior:
    """Sees the standing person 3 m in front of a 640 x 480 camera, at the prior's joints."""

    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])

    def __init__(self):
        body = np.array([STANDING[name] for name in JOINT_NAMES], dtype=np.float64)
        self.xyz = body[Q] - body[[JOINT_INDEX["left_hip"], JOINT_INDEX["right_hip"]]].mean(0)
        cam = body[Q] + [0, 0, 3]
        self.uv = (cam[:, :2] / cam[:, 2:]) * 500 + [320, 240]

    def detect(self, image, box=None):
        from hmdiff_ros.observation import PriorPerson

        return PriorPerson(uv=self.uv.copy(), visibility=np.full(24, 0.9), xyz=self.xyz.copy())

    def close(self):
        pass


def test_pipeline_results_carry_the_priors_3d_joints(shipped_model):
    from hmdiff_ros.pipeline.io import person_json
    from hmdiff_ros.pipeline.pipeline import Pipeline, PipelineConfig

    prior = StandingPrior()
    pipe = Pipeline(shipped_model, prior, cfg=PipelineConfig(hypotheses=1, steps=1, full_mesh=False))
    (person,) = pipe(np.full((480, 640, 3), 90, np.uint8), prior.K)
    assert person.prior_xyz.shape == (25, 3)
    np.testing.assert_allclose(person.prior_xyz[Q], prior.xyz, atol=1e-6)
    assert np.isnan(person.prior_xyz[JOINT_INDEX["head_top"]]).all()
    # the run records stay as they were
    record = person_json(person, 0)
    assert set(record) == {"id", "score", "box", "joints"}
    assert set(record["joints"][0]) == {"name", "xyz", "uv", "prior_uv", "visibility", "std_m"}
