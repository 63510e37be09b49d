"""The CUDA-graph path without a GPU.

- What is captured is safe to capture: the sampler runs on PyTorch's ``meta`` device under a
  dispatch mode that records every host read and every copy from the CPU to the model's device
  (either breaks a capture: "operation not permitted when stream is capturing"), for every
  bucket, step count and DAT mode that ``auto`` captures; a parametrised fault restores the
  scheduler that copied its table to the device every step, and the check catches it.
- The buffers, buckets and padding, with the capture stood in by one that keeps the same
  contract (static inputs in, a static output refilled by ``replay``), against the eager sampler.
- A capture that fails: at load, ``auto`` falls back with the reason and every frame runs; for
  a later bucket, that bucket runs eagerly, said once.
"""

import logging
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from hmdiff_ros import defaults
from hmdiff_ros.model.checkpoint import load_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.scheduler import DDIMScheduler
from hmdiff_ros.runtime import backends
from hmdiff_ros.runtime.cuda_graph import (
    BUCKETS,
    EAGER,
    GraphedSampler,
    HostTraffic,
    TorchCudaModel,
    capture_safety,
    load_torch_cuda,
)

MM = 1000.0


@pytest.fixture(scope="module")
def model():
    return load_checkpoint()[0]


def _inputs(model, people, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = model.cfg.encoder
    proxy = torch.rand(people, enc.in_channels, enc.input_size, enc.input_size, generator=g)
    noise = torch.randn(people * m, model.num_points, 3, generator=g)
    return proxy, noise, torch.randn(people, 24, 3, generator=g) * 0.3, torch.rand(people, 24, generator=g)


def test_padded_buckets_give_the_eager_samples(model):
    sampler = GraphedSampler(model, 2, DATConfig(), device="cpu", buckets=(1, 4), capture=False)
    assert [sampler.bucket(n) for n in (1, 2, 3, 4)] == [1, 4, 4, 4]
    with pytest.raises(ValueError, match="exceed the largest CUDA graph bucket"):
        sampler.bucket(5)
    for people, m in ((1, 4), (3, 2), (4, 1), (2, 2), (5, 2)):  # 5: beyond the largest bucket, eagerly
        proxy, noise, prior, vis = _inputs(model, people, m, seed=people)
        got = sampler(proxy, noise, prior, vis)
        want = model.sample(proxy, prior, vis, steps=2, hypotheses=m, noise=noise).hypotheses.flatten(0, 1)
        assert got.shape == (people * m, model.num_points, 3)
        assert (got - want).abs().max() * MM < 0.1, (people, m)
    # one set of buffers per (bucket, hypotheses), made once and reused
    assert sorted(sampler.graphs) == [(1, 4), (4, 1), (4, 2)]
    assert all(graph is None for graph, _, _ in sampler.graphs.values())
    with pytest.raises(ValueError, match="cannot be exported or captured in a CUDA graph"):
        GraphedSampler(model, 2, DATConfig(mode="full"), device="cpu")


def test_the_model_on_a_device_samples_as_the_cpu_model(model):
    """TorchCudaModel's logic on the CPU: the graphed sampler for off/fast, the model's own loop for
    full DAT and eta > 0; the noise drawn on the CPU from the seed, as every backend draws it."""
    on_device = TorchCudaModel(model, device="cpu")
    on_device.samplers = {}
    proxy, _, prior, vis = _inputs(model, 2, 3)
    for dat, eta in (
        (DATConfig(mode="fast"), 0.0),
        (DATConfig(mode="off"), 0.0),
        (DATConfig(mode="full"), 0.0),
        (DATConfig(mode="fast"), 0.5),
    ):
        got = on_device.sample(
            proxy, prior, vis, steps=2, dat=dat, hypotheses=3, eta=eta, generator=torch.Generator().manual_seed(7)
        )
        want = model.sample(
            proxy, prior, vis, steps=2, dat=dat, hypotheses=3, eta=eta, generator=torch.Generator().manual_seed(7)
        )
        assert (got.points - want.points).abs().max() * MM < 0.1, (dat.mode, eta)
    assert sorted(k[1].mode for k in on_device.samplers) == ["fast", "off"]  # full and eta > 0 ran eagerly


def test_without_cuda_the_gpu_path_says_why():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        load_torch_cuda()


def _alpha_copied_every_step(self, t, like):
    """The scheduler's ᾱ lookup before the sampler could be captured: the float64 table on the
    CPU copied to the samples' device at every call."""
    a = self.alphas_cumprod.to(like.device)[t]
    return a.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


@pytest.fixture(scope="module")
def meta_model():
    return load_checkpoint()[0].to("meta").eval()


@pytest.mark.parametrize("fault", [None, "table copied every step"])
def test_the_captured_sampler_neither_reads_from_nor_copies_from_the_host(meta_model, fault, monkeypatch):
    if fault:
        monkeypatch.setattr(DDIMScheduler, "_alpha", _alpha_copied_every_step)
    found = capture_safety(meta_model)  # what TorchCudaModel captures: eta 0, DAT off or fast
    modes, steps = set(defaults.EXPORT_DAT_MODES), {1, defaults.STEPS, 4}
    assert {(mode, k) for mode, k, _, _ in found} == {(mode, k) for mode in modes for k in steps}
    assert {b for _, _, b, _ in found} == set(BUCKETS) and {m for *_, m in found} == {1, defaults.HYPOTHESES}
    for (mode, k, bucket, m), traffic in found.items():
        if fault:
            assert any("host copy" in f and "(1000,)" in f for f in traffic), traffic
            assert sum("host copy" in f for f in traffic) >= k  # one per step at least
        else:
            assert traffic == [], (mode, k, bucket, m, traffic)


def test_the_host_traffic_check_sees_reads_and_copies():
    x = torch.zeros(3, device="meta")
    with HostTraffic("meta") as traffic:
        x + torch.ones(3).to("meta")  # a host copy
        with pytest.raises(RuntimeError, match="meta"):  # a host read (a branch on a value): recorded, then raises
            bool(x.sum() > 0)
    kinds = [f.split()[1] for f in traffic.found]
    assert kinds == ["copy", "read"], traffic.found


def _stand_in_capture(fail_buckets=(), replays=None):
    """A capture with the real one's contract, on any device: the output is made from the static
    inputs once, ``replay`` recomputes it in place from whatever the buffers hold then (a graph
    reads its buffers' memory, never the caller's tensors, and writes the same output tensor at
    every replay); buckets in ``fail_buckets`` fail as CUDA does when something in the region is
    not allowed. ``replays``: a list that gets each replay's bucket."""

    def capture(self, static):
        if static[0].shape[0] in fail_buckets:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        output = self.run(*static)

        def replay():
            if replays is not None:
                replays.append(static[0].shape[0])
            output.copy_(self.run(*static))

        return SimpleNamespace(replay=replay), output

    return capture


def test_replayed_graphs_read_their_buffers_and_give_the_eager_samples(model, monkeypatch):
    """Every call on a captured bucket is one replay on that call's inputs: new inputs on the
    same graph give their own samples (a graph that kept its first inputs would repeat them), and
    a result stays what it was after later replays (the graph's output tensor is refilled)."""
    replays = []
    monkeypatch.setattr(GraphedSampler, "_capture", _stand_in_capture(replays=replays))
    sampler = GraphedSampler(model, 2, DATConfig(mode="fast"), device="cpu", buckets=(1, 4), capture=True)
    calls = ((1, 4), (3, 2), (1, 4), (2, 2), (4, 2), (1, 4))  # (1, 4) three times: replayed on new inputs
    results = []
    for i, (people, m) in enumerate(calls):
        proxy, noise, prior, vis = _inputs(model, people, m, seed=10 + i)
        got = sampler(proxy, noise, prior, vis)
        want = model.sample(
            proxy, prior, vis, steps=2, dat=DATConfig(mode="fast"), hypotheses=m, noise=noise
        ).hypotheses.flatten(0, 1)
        assert (got - want).abs().max() * MM < 0.1, (people, m)
        results.append((got.clone(), got))
    assert replays == [1, 4, 1, 4, 4, 1]  # one replay per call, none eager
    assert all(torch.equal(kept, got) for kept, got in results), "a result changed when its graph was replayed"
    assert not torch.equal(results[0][0], results[2][0])  # the same graph, other inputs: other samples
    assert sorted(sampler.graphs) == [(1, 4), (4, 2)]
    assert all(entry[0] is not None for entry in sampler.graphs.values())  # captured, not eager


def test_a_bucket_whose_capture_fails_runs_eagerly_and_says_so_once(model, monkeypatch, caplog):
    monkeypatch.setattr(GraphedSampler, "_capture", _stand_in_capture(fail_buckets=(4,)))
    sampler = GraphedSampler(model, 2, DATConfig(mode="off"), device="cpu", buckets=(1, 4), capture=True)
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.runtime.cuda_graph"):
        for _ in range(3):
            proxy, noise, prior, vis = _inputs(model, 3, 2, seed=3)
            got = sampler(proxy, noise, prior, vis)
            want = model.sample(proxy, prior, vis, steps=2, dat=DATConfig(mode="off"), hypotheses=2, noise=noise)
            assert (got - want.hypotheses.flatten(0, 1)).abs().max() * MM < 0.1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "4 people x 2 hypotheses" in warnings[0] and "run eagerly" in warnings[0]
    assert "operation not permitted when stream is capturing" in warnings[0]
    assert sampler.graphs[(4, 2)] is EAGER


def test_auto_falls_back_with_the_reason_when_the_capture_fails_at_load(monkeypatch, tmp_path):
    """A GPU where capture fails: loading fails, auto takes the next backend and says why, and
    every frame is sampled."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "load_torch_cuda", partial(load_torch_cuda, device="cpu"))
    monkeypatch.setattr(GraphedSampler, "_capture", _stand_in_capture(fail_buckets=(1,)))
    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    loaded = backends.load_model("auto", engines=tmp_path / "no_engines")
    assert loaded.backend != "torch" or not isinstance(loaded, TorchCudaModel)
    assert not isinstance(loaded, TorchCudaModel)
    reasons = [r for r in loaded.fallback_reasons if r.startswith("torch-cuda:")]
    assert len(reasons) == 1 and "capture" in reasons[0] and "1 people x 4 hypotheses" in reasons[0], reasons
    assert "operation not permitted when stream is capturing" in reasons[0]
    proxy, _, prior, vis = _inputs(loaded, 2, 1)
    for seed in range(3):
        out = loaded.sample(
            proxy, prior, vis, hypotheses=defaults.HYPOTHESES, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.isfinite(out.points).all()
    # the same load where the capture works: the GPU path itself, its default graph made at load
    monkeypatch.setattr(GraphedSampler, "_capture", _stand_in_capture())
    loaded = backends.load_model("auto", engines=tmp_path / "no_engines")
    assert isinstance(loaded, TorchCudaModel) and loaded.backend == "torch"
    (sampler,) = loaded.samplers.values()
    assert (
        list(sampler.graphs) == [(1, defaults.HYPOTHESES)] and sampler.graphs[(1, defaults.HYPOTHESES)][0] is not None
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (hmdiff gpu-check runs it there)")
def test_the_real_capture_replays_the_eager_samples_on_a_gpu():
    on_gpu = load_torch_cuda()  # captures the one-person graph while loading
    for mode in defaults.EXPORT_DAT_MODES:
        for people in (1, 3, 16):
            proxy, noise, prior, vis = _inputs(on_gpu.model, people, defaults.HYPOTHESES, seed=people)
            dat = DATConfig(mode=mode)
            got = on_gpu.sample(proxy, prior, vis, hypotheses=defaults.HYPOTHESES, dat=dat, noise=noise)
            with torch.no_grad():
                want = on_gpu.model.sample(
                    proxy.cuda(), prior.cuda(), vis.cuda(), hypotheses=defaults.HYPOTHESES, dat=dat, noise=noise.cuda()
                )
            assert (got.hypotheses - want.hypotheses.cpu()).abs().max() * MM < 0.1, (mode, people)
    graphs = [entry for s in on_gpu.samplers.values() for entry in s.graphs.values()]
    assert graphs and all(entry is not EAGER and entry[0] is not None for entry in graphs)
