"""DAT, the guidance the sampling loop calls between the network and the scheduler's step: the
gap's closed-form gradient against autograd, the alignment step (about lambda of the gap, its
bound when the direction barely helps), the rigid rotation (polar decomposition against SVD
Kabsch, a turned body turned back), which steps align (the first always; tau and
max_fraction), and samples pulled towards the prior. The tiny model is tests/tiny_model.py's."""

import torch
from tiny_model import inputs as _inputs

from hmdiff_ros.model.dat import DAT, DATConfig


def test_dat_alignment_reduces_the_gap_by_about_lambda(tiny):
    sched = tiny.scheduler
    aligner = DAT(DATConfig(scale=0.5), tiny.dat_map, tiny.cfg.data_scale)
    x0 = torch.randn(3, tiny.num_points, 3) * 0.5
    prior = torch.randn(3, 24, 3) * 0.3
    w = torch.ones(3, 24)
    xt = torch.randn(3, tiny.num_points, 3)
    gap, grad = aligner.gap_and_grad(x0, prior, w)
    a = sched.alphas_cumprod[50]
    eps = (xt - a.sqrt() * x0) / (1 - a).sqrt()
    x0_new, eps_new = aligner.align(x0, eps, xt, a, gap, grad, torch.tensor([True, True, False]))
    new_gap, _ = aligner.gap_and_grad(x0_new, prior, w)
    assert (new_gap[:2] < 0.75 * gap[:2]).all() and (new_gap[:2] > 0.3 * gap[:2]).all()
    torch.testing.assert_close(new_gap[2], gap[2])
    # x̂_0' and ε' stay consistent with the same noisy sample.
    torch.testing.assert_close(a.sqrt() * x0_new + (1 - a).sqrt() * eps_new, xt, atol=1e-4, rtol=1e-4)


def test_dat_closed_form_gradient_matches_autograd(tiny):
    aligner = DAT(DATConfig(), tiny.dat_map, tiny.cfg.data_scale)
    x0 = (torch.randn(2, tiny.num_points, 3, dtype=torch.float64) * 0.5).requires_grad_(True)
    prior = torch.randn(2, 24, 3, dtype=torch.float64) * 0.3
    w = torch.rand(2, 24, dtype=torch.float64)
    gap, grad = aligner.gap_and_grad(x0, prior, w)
    (auto,) = torch.autograd.grad(gap.sum(), x0)
    torch.testing.assert_close(grad, auto)


def test_dat_pulls_samples_towards_the_prior(tiny):
    proxy, prior, vis = _inputs(4, seed=3)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    off = tiny.sample(proxy, prior, vis, steps=4, dat=DATConfig(mode="off"), generator=gen())
    on = tiny.sample(proxy, prior, vis, steps=4, dat=DATConfig(mode="fast", tau=0.0, max_fraction=1.0), generator=gen())
    aligner = DAT(DATConfig(), tiny.dat_map, tiny.cfg.data_scale)
    norm = lambda p: p / tiny.cfg.data_scale  # noqa: E731
    gap_off, _ = aligner.gap_and_grad(norm(off.points), prior, vis)
    gap_on, _ = aligner.gap_and_grad(norm(on.points), prior, vis)
    assert (gap_on < gap_off).all()


def test_polar_rotation_matches_svd_kabsch_and_rejects_reflections():
    from hmdiff_ros.model.dat import polar_rotation

    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 20, 3, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(40, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.linalg.det(q).sign()[:, None, None]  # proper rotations
    b = a @ q.transpose(-1, -2) + 0.02 * torch.randn(a.shape, generator=g, dtype=torch.float64)
    h = torch.einsum("bqi,bqj->bij", a, b)
    u, _, vt = torch.linalg.svd(h)
    kabsch = vt.transpose(-1, -2) @ u.transpose(-1, -2)
    rot = polar_rotation(h)
    torch.testing.assert_close(rot, kabsch, atol=1e-9, rtol=0)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(40, 3, 3))
    mirror = torch.einsum("bqi,bqj->bij", a, b * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(polar_rotation(mirror[:1]), torch.eye(3, dtype=torch.float64)[None])


def test_dat_rigid_rotation_recovers_a_turned_body(tiny):
    """A prediction turned about the root is turned back onto the prior in one step."""
    import math as m

    aligner = DAT(DATConfig(), tiny.dat_map, tiny.cfg.data_scale)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, tiny.num_points, 3, generator=g, dtype=torch.float64) * 0.5
    f = torch.einsum("qp,bpd->bqd", tiny.dat_map.double(), x0) * tiny.cfg.data_scale  # the prior, exactly
    c, s = m.cos(2.5), m.sin(2.5)
    turn = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)  # 143 degrees about y
    w = torch.ones(2, 24, dtype=torch.float64)
    rot = aligner.rotation(x0 @ turn.T, f, w, torch.tensor([True, False]))
    back = (x0 @ turn.T) @ rot.transpose(-1, -2)
    torch.testing.assert_close(back[0], x0[0], atol=1e-8, rtol=0)
    torch.testing.assert_close(rot[1], torch.eye(3, dtype=torch.float64))  # inactive: untouched


def test_dat_step_is_bounded_when_its_direction_barely_helps(tiny):
    aligner = DAT(DATConfig(scale=1.0), tiny.dat_map, tiny.cfg.data_scale)
    x0 = torch.randn(1, tiny.num_points, 3) * 0.5
    prior = torch.randn(1, 24, 3) * 0.3
    gap, grad = aligner.gap_and_grad(x0, prior, torch.ones(1, 24))
    ortho = torch.randn_like(grad)
    ortho = ortho - (ortho * grad).sum() / (grad * grad).sum() * grad + 1e-6 * grad  # almost orthogonal
    a = tiny.scheduler.alphas_cumprod[50]
    x0_new, _ = aligner.align(x0, torch.zeros_like(x0), x0, a, gap, grad, torch.tensor([True]), grad_h=ortho)
    bound = 1.0 * gap / (0.2 * grad.norm())
    assert (x0_new - x0).norm() <= bound * 1.0001


def test_dat_first_step_always_aligns_and_tau_acts_at_two_steps(tiny):
    proxy, prior, vis = _inputs(4, seed=3)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731

    def run(tau, max_fraction=1.0):
        cfg = DATConfig(mode="fast", tau=tau, max_fraction=max_fraction)
        return tiny.sample(proxy, prior, vis, steps=2, dat=cfg, generator=gen()).points

    aligner = DAT(DATConfig(mode="fast", tau=0.5, max_fraction=1.0), tiny.dat_map, tiny.cfg.data_scale)
    gap = torch.tensor([1.0, 2.0])
    assert aligner.is_active(gap, gap, 0, 2).all()  # the first step is the reference: always aligned
    strict = DAT(DATConfig(mode="fast", tau=1.0, max_fraction=1.0), tiny.dat_map, 1.0)
    assert strict.is_active(gap, gap, 0, 2).all()  # ... at tau 1 too (its gap was compared with itself: 1 > 1)
    assert aligner.is_active(torch.tensor([0.4, 1.2]), gap, 1, 2).tolist() == [False, True]  # R = 0.4, 0.6
    assert not DAT(DATConfig(mode="fast", max_fraction=0.5), tiny.dat_map, 1.0).is_active(gap, gap, 1, 2).any()
    # at 2 steps tau decides whether the second step aligns: 0 aligns every sample, 1 only a grown gap
    assert not torch.allclose(run(0.0), run(1.0))
    # with half of the steps aligned only the first step aligns, whatever tau
    torch.testing.assert_close(run(0.0, 0.5), run(1.0, 0.5))
