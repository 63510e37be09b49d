"""Deployment runtime: ONNX export, ONNX Runtime parity, backend selection, TensorRT engine
naming (and TensorRT itself where it is installed with a GPU), the benchmark's rows."""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'hmdiff_ros[onnx]')")

from hmdiff_ros.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint  # noqa: E402
from hmdiff_ros.model.dat import DATConfig  # noqa: E402
from hmdiff_ros.runtime.backends import load_model, load_onnxruntime  # noqa: E402
from hmdiff_ros.runtime.export import export_onnx  # noqa: E402
from hmdiff_ros.runtime.manifest import MANIFEST, SEAL, file_sha256, manifest_seal  # noqa: E402
from hmdiff_ros.runtime.tensorrt_backend import engine_name, find_engine, gpu_tag  # noqa: E402

MM = 1000.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    manifest = export_onnx(out=out, steps=(2,), dat="fast")
    return out, manifest


@pytest.fixture(scope="module")
def torch_model():
    return load_checkpoint()[0]


def _sealed(manifest):
    """``manifest`` with its seal made again: as an export of what it now says would write it."""
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return {**body, SEAL: manifest_seal(body)}


def _inputs(model, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = model.cfg.encoder
    proxy = torch.rand(b, enc.in_channels, enc.input_size, enc.input_size, generator=g)
    noise = torch.randn(b, model.num_points, 3, generator=g)
    return proxy, noise, torch.randn(b, 24, 3, generator=g) * 0.3, torch.rand(b, 24, generator=g)


def test_manifest_records_the_export(exported):
    out, manifest = exported
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert manifest["opset"] == 17 and manifest["checkpoint_sha256"] == file_sha256(
        DEFAULT_CHECKPOINT / "model.safetensors"
    )
    assert set(manifest["files"]) == {"encoder.onnx", "denoiser.onnx", "sampler_k2_fast.onnx"}
    for name, info in manifest["files"].items():
        assert info["sha256"] == file_sha256(out / name)
    assert manifest["files"]["sampler_k2_fast.onnx"]["steps"] == 2
    assert manifest["files"]["denoiser.onnx"]["inputs"]["sample"] == ["rows", 625, 3]


def test_every_exported_axis_is_named_for_what_the_runtime_feeds_it(exported):
    """People and hypothesis rows apart (TensorRT takes equal names for equal sizes): the ONNX
    files' own dim_params, the manifest, and the sizes the runtime feeds at 3 people x 4
    hypotheses."""
    import onnx

    out, manifest = exported
    people, rows = 3, 12
    fed = {"proxy": people, "prior_xyz": people, "prior_vis": people, "image_tokens": people}
    fed.update(noise=rows, points=rows, sample=rows, timestep=rows, output=rows)
    want = {people: "people", rows: "rows"}
    for name, info in manifest["files"].items():
        graph = onnx.load(str(out / name)).graph
        weights = {w.name for w in graph.initializer}
        values = [v for v in (*graph.input, *graph.output) if v.name not in weights]
        assert {v.name for v in values} == {*info["inputs"], *info["outputs"]}, name
        for v in values:
            dim = v.type.tensor_type.shape.dim[0].dim_param
            recorded = {**info["inputs"], **info["outputs"]}[v.name][0]
            assert dim == recorded == want[fed[v.name]], (name, v.name, dim, recorded)
        encoder_tokens = manifest["files"]["encoder.onnx"]["outputs"]["image_tokens"]
    assert encoder_tokens[1] == 64  # the encoder's own tokens (the prior tokens are added after it)


def test_onnxruntime_matches_pytorch(exported, torch_model):
    out, _ = exported
    ort_model = load_onnxruntime(engines=out)
    proxy, noise, prior, vis = _inputs(torch_model)
    with torch.no_grad():
        assert (ort_model.encoder(proxy) - torch_model.encoder(proxy)).abs().max() < 1e-4
        tokens = torch_model.encode(proxy, prior, vis)  # what the denoiser reads (prior tokens too, if any)
        t = torch.tensor([999, 400, 3])
        den = (ort_model.denoiser(noise, t, tokens) - torch_model.denoiser(noise, t, tokens)).abs().max()
        assert den * torch_model.cfg.data_scale * MM < 0.1
    for steps, mode in [(2, "fast"), (3, "fast"), (2, "off")]:  # unrolled graph; DDIM loop over the graphs
        dat = DATConfig(mode=mode)
        ref = torch_model.sample(proxy, prior, vis, steps=steps, dat=dat, noise=noise).points
        got = ort_model.sample(proxy, prior, vis, steps=steps, dat=dat, noise=noise).points
        assert (got - ref).abs().max() * MM < 0.1, (steps, mode)
    # hypotheses in one call: shapes and spread
    out2 = ort_model.sample(
        proxy, prior, vis, steps=2, dat=DATConfig(), hypotheses=3, generator=torch.Generator().manual_seed(0)
    )
    assert out2.hypotheses.shape == (3, 3, 625, 3) and (out2.joint_std > 0).all()
    with pytest.raises(ValueError, match="needs PyTorch autograd"):
        ort_model.sample(proxy, prior, vis, steps=2, dat=DATConfig(mode="full"))


def test_onnxruntime_matches_pytorch_for_any_people_and_hypotheses(exported, torch_model):
    out, _ = exported
    ort_model = load_onnxruntime(engines=out)
    dat = DATConfig(mode="fast")
    for people in (1, 3, 16):
        for m in (1, 2, 4, 8):
            proxy, _, prior, vis = _inputs(torch_model, b=people, seed=people * 10 + m)
            noise = torch.randn(people * m, torch_model.num_points, 3, generator=torch.Generator().manual_seed(m))
            ref = torch_model.sample(proxy, prior, vis, steps=2, dat=dat, hypotheses=m, noise=noise).hypotheses
            got = ort_model.sample(proxy, prior, vis, steps=2, dat=dat, hypotheses=m, noise=noise).hypotheses
            assert ort_model.sampler(2, dat, 0.0) is not None  # the one-call sampler ran
            assert (got - ref).abs().max() * MM < 0.1, (people, m)
    # the DDIM loop over encoder.onnx and denoiser.onnx (no one-call sampler for 3 steps): rows and people apart
    proxy, _, prior, vis = _inputs(torch_model, b=3, seed=1)
    noise = torch.randn(12, torch_model.num_points, 3, generator=torch.Generator().manual_seed(2))
    assert ort_model.sampler(3, dat, 0.0) is None
    ref = torch_model.sample(proxy, prior, vis, steps=3, dat=dat, hypotheses=4, noise=noise).hypotheses
    got = ort_model.sample(proxy, prior, vis, steps=3, dat=dat, hypotheses=4, noise=noise).hypotheses
    assert (got - ref).abs().max() * MM < 0.1


def test_stale_or_missing_exports_are_refused_or_fall_back(exported, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    out, manifest = exported
    stale = tmp_path / "stale"
    shutil.copytree(out, stale)
    (stale / MANIFEST).write_text(json.dumps(_sealed({**manifest, "checkpoint_sha256": "0" * 64})))
    before = {p.name: p.read_bytes() for p in stale.iterdir()}
    with pytest.raises(ValueError, match="another checkpoint"):
        load_onnxruntime(engines=stale)
    with caplog.at_level(logging.WARNING):
        model = load_model("onnxruntime", engines=stale)
    assert isinstance(model, torch.nn.Module) and "falling back to torch" in caplog.text
    assert model.backend == "torch" and "another checkpoint" in model.fallback_reasons[0]
    with pytest.raises(ValueError, match="another checkpoint"):
        load_model("onnxruntime", engines=stale, fallback=False)
    assert {p.name: p.read_bytes() for p in stale.iterdir()} == before, "a user's export is never changed"
    # an export of the earlier format (samplers fed per row) is refused by name
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / MANIFEST).write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(ValueError, match=r"has format 1, this version reads format \d+"):
        load_onnxruntime(engines=old)
    with pytest.raises(ValueError, match="unknown backend"):
        load_model("tflite")


def test_the_cached_export_is_made_once_and_rebuilt_when_stale(tmp_path, monkeypatch, caplog):
    from hmdiff_ros import defaults
    from hmdiff_ros.runtime.export_cache import cache_root, cached_export

    SAMPLER_K2 = f"sampler_k2_{defaults.DAT_MODE}.onnx"  # the default DAT mode's sampler

    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        folder = cached_export()
    assert folder.parent == cache_root() == tmp_path / "cache" / "engines"
    assert "none made yet" in caplog.text and (folder / SAMPLER_K2).is_file()
    stamp = (folder / MANIFEST).stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        assert cached_export() == folder and load_model("onnxruntime", engines=None).backend == "onnxruntime"
    assert "making the ONNX export" not in caplog.text and (folder / MANIFEST).stat().st_mtime_ns == stamp
    # another step count: made beside the samplers it had
    cached_export(steps=(1,))
    assert {f"sampler_k1_{defaults.DAT_MODE}.onnx", SAMPLER_K2} <= set(
        json.loads((folder / MANIFEST).read_text())["files"]
    )
    # a truncated graph, or an export of another checkpoint under this key: rebuilt, never used
    data = (folder / SAMPLER_K2).read_bytes()
    (folder / SAMPLER_K2).write_bytes(data[: len(data) // 2])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        model = load_model("onnxruntime", engines=None)
    assert model.backend == "onnxruntime" and f"making {SAMPLER_K2} ({SAMPLER_K2} truncated or corrupt" in caplog.text
    assert (folder / SAMPLER_K2).read_bytes() != data[: len(data) // 2]
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps(_sealed({**manifest, "checkpoint_sha256": "0" * 64})))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        cached_export()
    assert "another checkpoint" in caplog.text
    assert json.loads((folder / MANIFEST).read_text())["checkpoint_sha256"] == manifest["checkpoint_sha256"]
    # another version of the code that builds the graphs: its own export, the old one left alone
    from hmdiff_ros.runtime import manifest as manifest_module

    code = tmp_path / "code"
    for name in manifest_module.GRAPH_CODE:
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(manifest_module.PACKAGE / name, code / name)
    with open(code / "model" / "dat.py", "a") as fh:
        fh.write("\n# a change\n")
    monkeypatch.setattr(manifest_module, "PACKAGE", code)
    other = cached_export()
    assert other != folder and other.parent == folder.parent and (folder / MANIFEST).is_file()


def test_pipeline_gives_the_same_people_on_both_backends(exported):
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    from hmdiff_ros.pipeline.config import PipelineConfig
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.pipeline import build_pipeline
    from hmdiff_ros.pipeline.run import DEMO_IMAGE

    out, _ = exported
    image = read_image(DEMO_IMAGE)
    results = []
    for backend in ("torch", "onnxruntime"):
        pipe = build_pipeline(PipelineConfig(steps=2, hypotheses=2, backend=backend, engines=str(out)))
        results.append(pipe(image))
        pipe.prior.close()
    (a,), (b,) = results
    assert np.abs(a.joints - b.joints).max() * MM < 1.0
    assert np.abs(a.vertices - b.vertices).max() * MM < 1.0


def test_engine_names_and_matching(tmp_path):
    assert gpu_tag("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    sha = "ab" * 32
    name = engine_name("denoiser", sha, "NVIDIA Orin", "10.3.0", "fp16")
    assert name == "denoiser_abababababab_nvidia-orin_trt10.3.0_fp16.engine"
    with pytest.raises(ValueError, match="precision"):
        engine_name("denoiser", sha, "x", "10", "int8")
    (tmp_path / engine_name("denoiser", sha, "NVIDIA A100", "10.3.0", "fp16")).write_bytes(b"x")
    found, others = find_engine(tmp_path, "denoiser", sha, "NVIDIA Orin", "10.3.0", "fp16")
    assert found is None and others == ["denoiser_abababababab_nvidia-a100_trt10.3.0_fp16.engine"]
    (tmp_path / name).write_bytes(b"x")
    found, _ = find_engine(tmp_path, "denoiser", sha, "NVIDIA Orin", "10.3.0", "fp16")
    assert found == tmp_path / name
    # the same GPU name with another compute capability is another GPU
    (tmp_path / engine_name("denoiser", sha, "NVIDIA Orin sm87", "10.3.0", "fp16")).write_bytes(b"x")
    found, others = find_engine(tmp_path, "denoiser", sha, "NVIDIA Orin sm72", "10.3.0", "fp16")
    assert found is None and "denoiser_abababababab_nvidia-orin-sm87_trt10.3.0_fp16.engine" in others


def test_tensorrt_engines_match_onnxruntime(exported, torch_model):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it needs an NVIDIA GPU)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from hmdiff_ros.runtime.tensorrt_backend import load_tensorrt

    out, _ = exported
    trt_model = load_tensorrt(engines=out)
    assert trt_model.backend == "tensorrt" and trt_model.max_batch >= 3
    proxy, noise, prior, vis = _inputs(torch_model)
    ref = torch_model.sample(proxy, prior, vis, steps=2, dat=DATConfig(), noise=noise).points
    got = trt_model.sample(proxy, prior, vis, steps=2, dat=DATConfig(), noise=noise).points
    assert (got - ref).abs().max() * MM < 5.0  # FP16 engines
    seed = lambda: torch.Generator().manual_seed(3)  # noqa: E731  the same seed draws the same noise
    ref = torch_model.sample(proxy, prior, vis, steps=2, dat=DATConfig(), generator=seed()).points
    got = trt_model.sample(proxy, prior, vis, steps=2, dat=DATConfig(), generator=seed()).points
    assert (got - ref).abs().max() * MM < 5.0
    with pytest.raises(ValueError, match="exceeds the largest batch"):
        trt_model.sample(proxy, prior, vis, steps=2, hypotheses=trt_model.max_batch)


def test_bench_rows(exported):
    from hmdiff_ros.runtime.bench import bench

    out, _ = exported
    rows = bench(["torch", "onnxruntime"], steps=2, repeats=2, warmup=1, engines=str(out))
    assert [(r["backend"], r["stage"]) for r in rows] == [
        ("torch", "encoder"),
        ("torch", "model"),
        ("onnxruntime", "encoder"),
        ("onnxruntime", "model"),
    ]
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert all(r["fps"] > 0 and r["peak_mb"] > 0 for r in rows if r["stage"] == "model")
    # the ratio to PyTorch of the same run, on the other backend's rows only
    assert ["p50_vs_torch" in r for r in rows] == [False, False, True, True]
    assert rows[3]["p50_vs_torch"] == round(rows[3]["p50_ms"] / rows[1]["p50_ms"], 3)
    with pytest.raises(ValueError, match="unknown backends"):
        bench(["tflite"])


def test_a_cache_that_cannot_be_written_falls_back_with_the_reason(tmp_path, monkeypatch):
    """A read-only home (a robot's image) or a cache path that is a file: PyTorch runs, and says why."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("HMDIFF_CACHE", str(blocker))
    model = load_model("auto", engines=tmp_path / "none")
    assert model.backend == "torch"
    assert any(r.startswith("onnxruntime: ") and str(blocker) in r for r in model.fallback_reasons), (
        model.fallback_reasons
    )


def test_two_processes_starting_together_make_the_export_once(tmp_path):
    """Two nodes of one launch file: one makes the cached export while the other waits for it."""
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout);"
        "from hmdiff_ros.runtime.export_cache import cached_export; print('folder', cached_export())"
    )
    env = {**os.environ, "HMDIFF_CACHE": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    folders = {line for out in outs for line in out.splitlines() if line.startswith("folder ")}
    assert len(folders) == 1, outs
    assert sum(out.count("making the ONNX export") for out in outs) == 1, outs
