"""HMDiff's network and scheduler: the DDIM scheduler's maths (against diffusers where it is
installed), options checked with the allowed values, sampling shapes, hypotheses and seeds, bad
sampling inputs, checkpoints, the metrics, and the prior-token, keypoint-token and
prior-residual variants. DAT is in tests/test_dat.py, training in tests/test_training.py; the
tiny model they share is tests/tiny_model.py's."""

import json

import numpy as np
import pytest
import torch
from tiny_model import TINY
from tiny_model import inputs as _inputs

from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.denoiser import DenoiserConfig
from hmdiff_ros.model.encoder import EncoderConfig
from hmdiff_ros.model.hmdiff import HMDiff, HMDiffConfig
from hmdiff_ros.model.metrics import mpjpe_mm, pa_mpjpe_mm, procrustes_align
from hmdiff_ros.model.scheduler import PREDICTION_TYPES, DDIMScheduler, SchedulerConfig


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_scheduler_recovers_x0_and_eps_from_any_target(prediction_type):
    sched = DDIMScheduler(SchedulerConfig(prediction_type=prediction_type))
    x0, eps = torch.randn(5, 7, 3, dtype=torch.float64), torch.randn(5, 7, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 900, 998])
    xt = sched.add_noise(x0, eps, t)
    a = sched.alphas_cumprod[t].reshape(-1, 1, 1)
    torch.testing.assert_close(xt, a.sqrt() * x0 + (1 - a).sqrt() * eps)
    x0_hat, eps_hat = sched.to_x0_eps(sched.target(x0, eps, t), t, xt)
    torch.testing.assert_close(x0_hat, x0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(eps_hat, eps, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 4, 50])
def test_ddim_with_the_true_x0_and_noise_stays_on_the_trajectory(steps):
    sched = DDIMScheduler()
    sched.set_timesteps(steps)
    assert len(sched.timesteps) == steps and sched.timesteps[0] == 999 and (sched.timesteps.diff() < 0).all()
    x0, eps = torch.randn(3, 4, 3, dtype=torch.float64), torch.randn(3, 4, 3, dtype=torch.float64)
    x = sched.add_noise(x0, eps, torch.full((3,), 999))
    for t in sched.timesteps.tolist():
        prev = sched.previous_timestep(t)
        x = sched.step(x0, eps, t, x).prev_sample
        expected = x0 if prev < 0 else sched.add_noise(x0, eps, torch.full((3,), prev))
        torch.testing.assert_close(x, expected)
    torch.testing.assert_close(x, x0)


def test_cosine_schedule_is_monotone_and_ends_near_pure_noise():
    a = DDIMScheduler().alphas_cumprod
    assert (a.diff() < 0).all() and a[0] > 0.999 and a[-1] < 1e-4


def test_scheduler_eta_is_seeded_and_stochastic():
    sched = DDIMScheduler()
    sched.set_timesteps(4)
    x0, eps, x = torch.randn(2, 3, 3), torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    run = lambda seed: sched.step(x0, eps, 999, x, eta=1.0, generator=torch.Generator().manual_seed(seed)).prev_sample  # noqa: E731
    torch.testing.assert_close(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_scheduler_matches_diffusers_ddim(prediction_type):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (optional cross-check)")
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
    )
    ours = DDIMScheduler(SchedulerConfig(prediction_type=prediction_type))
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod.float(), atol=1e-6, rtol=1e-5)
    ref.set_timesteps(4)
    ours.set_timesteps(4)
    assert ours.timesteps.tolist() == ref.timesteps.tolist()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    for t in ours.timesteps.tolist():
        out = torch.randn(2, 5, 3, dtype=torch.float64)
        expected = ref.step(out, t, x, eta=0.0).prev_sample
        x0, eps = ours.to_x0_eps(out, torch.tensor(t), x)
        x_ours = ours.step(x0, eps, t, x).prev_sample
        torch.testing.assert_close(x_ours, expected, atol=1e-5, rtol=1e-5)
        x = expected


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SchedulerConfig(prediction_type="score"), "prediction_type must be one of"),
        (lambda: SchedulerConfig(beta_schedule="sigmoid"), "beta_schedule"),
        (lambda: DDIMScheduler().set_timesteps(0), "num_inference_steps"),
        (lambda: DDIMScheduler().set_timesteps(2000), "num_inference_steps"),
        (lambda: DATConfig(mode="slow"), "dat mode must be one of"),
        (lambda: DATConfig(tau=2.0), "tau"),
        (lambda: DenoiserConfig(width=30, heads=4), "divisible"),
        (lambda: EncoderConfig(kind="depth"), "encoder kind"),
    ],
)
def test_bad_options_raise_errors_listing_the_allowed_values(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("mode", ["off", "fast", "full"])
def test_sampling_shapes_hypotheses_and_seeds(tiny, mode):
    proxy, prior, vis = _inputs(2)

    def run(seed, m):
        gen = torch.Generator().manual_seed(seed)
        return tiny.sample(proxy, prior, vis, steps=3, dat=DATConfig(mode=mode), hypotheses=m, generator=gen)

    out = run(0, 3)
    assert out.points.shape == (2, tiny.num_points, 3) and out.hypotheses.shape == (2, 3, tiny.num_points, 3)
    assert out.joint_std.shape == (2, 25) and (out.joint_std > 0).all()
    assert out.gaps.shape == (3, 6) and torch.isfinite(out.points).all()
    torch.testing.assert_close(run(0, 3).points, out.points, atol=1e-3, rtol=0)  # autograd sums may reorder
    assert not torch.allclose(run(1, 3).points, out.points)
    if mode != "off":
        assert torch.isfinite(out.gaps).all()


def test_bad_sampling_inputs_raise_clear_errors(tiny):
    proxy, prior, vis = _inputs(1)
    with pytest.raises(ValueError, match=r"proxy must have shape \(B, 26, S, S\)"):
        tiny.sample(proxy[:, :3], prior, vis)
    bad = proxy.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tiny.sample(bad, prior, vis)
    with pytest.raises(ValueError, match="DAT needs the prior"):
        tiny.sample(proxy, dat=DATConfig(mode="fast"))
    with pytest.raises(ValueError, match="hypotheses"):
        tiny.sample(proxy, prior, vis, hypotheses=0)


def test_checkpoint_round_trip_and_errors(tiny, tmp_path):
    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "ckpt", tiny, {"step": 7})
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["step"] == 7 and loaded.cfg == tiny.cfg
    proxy, prior, vis = _inputs(1)
    a = tiny.sample(proxy, prior, vis, generator=torch.Generator().manual_seed(0)).points
    b = loaded.sample(proxy, prior, vis, generator=torch.Generator().manual_seed(0)).points
    torch.testing.assert_close(a, b)
    assert not list((tmp_path / "ckpt").glob("*.pt*")), "no pickle files"
    with pytest.raises(FileNotFoundError, match="not found or incomplete"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model": {"encoder": {}}}))
    with pytest.raises(ValueError, match="not a valid HMDiff checkpoint"):
        load_checkpoint(tmp_path / "ckpt")


def test_procrustes_and_errors():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(3, 25, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    pred = 1.3 * gt @ q.T + 0.5
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-9)
    assert pa_mpjpe_mm(pred, gt).max() < 1e-6
    np.testing.assert_allclose(mpjpe_mm(gt + [0.003, 0.004, 0.0], gt), 5.0)


def test_prior_tokens_read_the_prior_and_old_configs_load_without_them(topology, tmp_path):
    from dataclasses import replace

    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = HMDiff(replace(TINY, prior_tokens=True), topology).eval()
    proxy, prior, vis = _inputs(2)
    noise = torch.randn(2, model.num_points, 3, generator=torch.Generator().manual_seed(1))
    off = DATConfig(mode="off")
    a = model.sample(proxy, prior, vis, dat=off, noise=noise).points
    b = model.sample(proxy, prior.flip(-1), vis, dat=off, noise=noise).points  # another U, DAT off
    assert (a - b).abs().max() > 1e-4, "the denoiser must read U"
    assert model.encode(proxy, prior, vis).shape[1] == TINY.encoder.input_size**2 // 64 + 24
    with pytest.raises(ValueError, match="reads the prior"):
        model.sample(proxy, None, None, dat=off)
    # a joint below the visibility cut reads as off, whatever its coordinates
    low = vis.clone()
    low[:, 3] = 0.1
    moved = prior.clone()
    moved[:, 3] += 5.0
    torch.testing.assert_close(model.encode(proxy, prior, low), model.encode(proxy, moved, low))
    save_checkpoint(tmp_path / "ckpt", model, {})
    assert load_checkpoint(tmp_path / "ckpt")[0].cfg.prior_tokens
    old = TINY.to_dict()
    del old["prior_tokens"]  # configs written before prior tokens existed
    assert HMDiffConfig.from_dict(old) == TINY


def test_heatmap_keypoints_read_the_proxy_keypoints_back():
    from hmdiff_ros.model.encoder import heatmap_keypoints
    from hmdiff_ros.observation import ProxyConfig, make_proxy

    cfg = ProxyConfig()
    s = cfg.crop_size
    g = np.random.default_rng(0)
    uv = g.uniform(6, s - 7, (3, 24, 2)).astype(np.float32)  # sub-pixel, inside the crop
    vis = np.ones((3, 24), np.float32)
    vis[0, 5] = 0.2  # below the cut: no heatmap
    uv[1, 7] = np.nan  # not finite: no heatmap
    uv[2, 9] = (-40.0, 20.0)  # far outside the crop
    proxy = make_proxy(uv, vis, np.zeros((3, s, s)), np.ones((3, s, s)), cfg)
    got = heatmap_keypoints(torch.as_tensor(proxy[:, :24])).numpy()
    want = uv / s - 0.5
    on = np.ones((3, 24), bool)
    on[0, 5] = on[1, 7] = on[2, 9] = False
    assert np.abs(got[on] - want[on]).max() * s < 1e-3  # crop pixels
    assert (got[~on] == 0).all()
    # cut by the crop's edge: pulled inwards, never outside the crop
    edge = heatmap_keypoints(
        torch.as_tensor(
            make_proxy(
                np.array([[[0.5, 30.0]] * 24], np.float32),
                np.ones((1, 24), np.float32),
                np.zeros((1, s, s)),
                np.ones((1, s, s)),
                cfg,
            )[:, :24]
        )
    )
    assert -0.5 < edge[0, 0, 0].item() < 0.5 / s - 0.5 + 1.0 / s


def test_a_keypoint_token_model_reads_the_keypoints_and_fine_tunes_from_one_without(topology, tmp_path):
    from dataclasses import replace

    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from hmdiff_ros.model.resume import load_init

    with pytest.raises(ValueError, match="needs prior_tokens"):
        replace(TINY, prior_keypoints=True)
    torch.manual_seed(0)
    model = HMDiff(replace(TINY, prior_tokens=True, prior_keypoints=True), topology).eval()
    proxy, prior, vis = _inputs(2)
    moved = proxy.clone()
    moved[:, 3] = proxy[:, 3].roll(2, dims=-1)  # one keypoint's heatmap two pixels to the right
    n = TINY.encoder.input_size**2 // 64
    with torch.no_grad():
        a, b = model.encode(proxy, prior, vis), model.encode(moved, prior, vis)
    assert (a[:, n + 3] - b[:, n + 3]).abs().max() > 1e-4, "keypoint 3's token must read its heatmap"
    torch.testing.assert_close(a[:, n + 4 :], b[:, n + 4 :])  # the other prior tokens do not
    assert HMDiffConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "prior_keypoints"}) == TINY
    # grown from a prior-token checkpoint without keypoints: starts as that checkpoint
    base = HMDiff(replace(TINY, prior_tokens=True), topology).eval()
    save_checkpoint(tmp_path / "base", base, {})
    load_init(tmp_path / "base", model)
    noise = torch.randn(2, model.num_points, 3, generator=torch.Generator().manual_seed(1))
    off = DATConfig(mode="off")
    torch.testing.assert_close(
        model.sample(proxy, prior, vis, dat=off, noise=noise).points,
        base.sample(proxy, prior, vis, dat=off, noise=noise).points,
    )
    with pytest.raises(ValueError, match="another model configuration"):  # keypoints cannot be dropped
        save_checkpoint(tmp_path / "grown", model, {})
        load_init(tmp_path / "grown", base)
    assert load_checkpoint(tmp_path / "grown")[0].cfg.prior_keypoints


def test_the_prior_residual_adds_a_linear_read_of_u_to_x0_and_grows_from_zero(topology, tmp_path):
    from dataclasses import replace

    from hmdiff_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from hmdiff_ros.model.resume import load_init

    with pytest.raises(ValueError, match="prior_residual needs"):
        replace(TINY, prior_residual=True)  # no prior tokens
    with pytest.raises(ValueError, match="prior_residual needs"):
        replace(TINY, prior_tokens=True, prior_residual=True, scheduler=SchedulerConfig(prediction_type="epsilon"))
    torch.manual_seed(0)
    base = HMDiff(replace(TINY, prior_tokens=True, prior_keypoints=True), topology).eval()
    save_checkpoint(tmp_path / "base", base, {})
    model = HMDiff(replace(base.cfg, prior_residual=True), topology).eval()
    load_init(tmp_path / "base", model)
    proxy, prior, vis = _inputs(2)
    vis[1, 6] = 0.1  # an off joint: U there is not read
    noise = torch.randn(2, model.num_points, 3, generator=torch.Generator().manual_seed(1))
    off = DATConfig(mode="off")
    a = model.sample(proxy, prior, vis, steps=1, dat=off, noise=noise).points
    torch.testing.assert_close(
        a, base.sample(proxy, prior, vis, steps=1, dat=off, noise=noise).points
    )  # starts as base
    with torch.no_grad():  # x̂_0 gains mean + W U: one step from the noisiest level ends on x̂_0
        model.prior_base.mean.fill_(0.1)
        model.prior_base.weight[:, 2] = 1.0  # every point moves with prior joint 2
    moved = prior.clone()
    moved[:, 2] += torch.tensor([0.05, 0.0, 0.0])
    moved[1, 6] += 3.0  # off: no effect
    b = model.sample(proxy, prior, vis, steps=1, dat=off, noise=noise).points
    c = model.sample(proxy, moved, vis, steps=1, dat=off, noise=noise).points
    scale = model.cfg.data_scale
    torch.testing.assert_close(b - a, (0.1 * scale + prior[:, None, 2, :]).expand_as(a), atol=1e-5, rtol=0)
    # moving U changes the tokens too; the base's share is exactly the joint's move
    base_only = model.prior_offset(moved, vis) - model.prior_offset(prior, vis)
    torch.testing.assert_close(
        base_only * scale, torch.tensor([0.05, 0.0, 0.0]).expand_as(base_only), atol=1e-6, rtol=0
    )
    assert (c - b).abs().max() > 0
    save_checkpoint(tmp_path / "res", model, {})
    assert load_checkpoint(tmp_path / "res")[0].cfg.prior_residual
