"""The CUDA-graph sampler's buffers, buckets and padding, run eagerly on the CPU (``capture=False``:
the same code without the capture), against the eager sampler; the capture itself needs a GPU."""

import pytest
import torch

from hmdiff_ros.model.checkpoint import load_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.runtime.cuda_graph import GraphedSampler, TorchCudaModel, load_torch_cuda

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
