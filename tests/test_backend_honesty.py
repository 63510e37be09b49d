"""Backends say what really runs, and broken files give one clear error naming the file:
``backend``/``fallback_reasons``/``max_batch`` on every loaded model, truncated checkpoints,
ONNX files and manifests, export folders that would be overwritten, the TensorRT runner's
seed, batch limit and shape check (against a stand-in ``tensorrt`` module: no GPU needed)."""

import json
import logging
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'hmdiff_ros[onnx]')")

import trt_standin  # noqa: E402  (tests/ is on the path, as ros_standin)

from hmdiff_ros import defaults  # noqa: E402
from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, WEIGHTS, load_checkpoint  # noqa: E402
from hmdiff_ros.model.dat import DATConfig  # noqa: E402
from hmdiff_ros.runtime import export as export_module  # noqa: E402
from hmdiff_ros.runtime.backends import load_model, load_onnxruntime  # noqa: E402
from hmdiff_ros.runtime.export import export_onnx  # noqa: E402
from hmdiff_ros.runtime.manifest import MANIFEST, SEAL, check_export, file_sha256, manifest_seal  # noqa: E402
from hmdiff_ros.runtime.tensorrt_backend import (  # noqa: E402
    CudaGraphModel,
    TensorRTModule,
    build_engine,
    build_engines,
    input_axes,
    load_tensorrt,
)

EXPORTED = {"encoder.onnx", "denoiser.onnx", "sampler_k2_fast.onnx", MANIFEST}
EXPORTED_BY_DEFAULT = {"encoder.onnx", "denoiser.onnx", f"sampler_k2_{defaults.DAT_MODE}.onnx", MANIFEST}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    export_onnx(out=out, steps=(2,), dat="fast")
    return out


@pytest.fixture(scope="module")
def torch_model():
    return load_checkpoint()[0]


def _copy_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, folder)
    return folder


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = model.cfg.encoder
    proxy = torch.rand(b, enc.in_channels, enc.input_size, enc.input_size, generator=g)
    return proxy, torch.randn(b, 24, 3, generator=g) * 0.3, torch.rand(b, 24, generator=g)


# --- what runs ---------------------------------------------------------------------------------


def test_every_model_names_the_backend_that_runs(exported, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    model = load_model("torch")
    assert (model.backend, model.fallback_reasons, model.max_batch) == ("torch", [], None)
    model = load_model("onnxruntime", engines=exported)
    assert (model.backend, model.fallback_reasons, model.max_batch) == ("onnxruntime", [], None)
    # no export in 'engines': the one made once in the cache runs, no manual step
    model = load_model("onnxruntime", engines=tmp_path / "none")
    assert (model.backend, model.fallback_reasons) == ("onnxruntime", [])
    assert not (tmp_path / "none").exists() and any((tmp_path / "cache" / "engines").glob("*/manifest.json"))
    model = load_model("auto", engines=tmp_path / "none")
    assert model.backend == "onnxruntime" and [r.split(":")[0] for r in model.fallback_reasons] == ["tensorrt"]
    # ONNX Runtime not installed: torch runs, and says why
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level(logging.WARNING):
        model = load_model("onnxruntime", engines=exported)
    assert model.backend == "torch" and isinstance(model, torch.nn.Module)
    (reason,) = model.fallback_reasons
    assert (
        reason.startswith("onnxruntime: ") and "onnxruntime" in reason[13:] and "falling back to torch" in caplog.text
    )
    model = load_model("auto", engines=exported)
    assert model.backend == "torch" and [r.split(":")[0] for r in model.fallback_reasons] == ["tensorrt", "onnxruntime"]


def test_a_broken_checkpoint_is_the_error_on_every_backend(exported, tmp_path):
    missing = tmp_path / "missing"
    for backend in ("torch", "onnxruntime", "tensorrt", "auto"):  # torch, the last one, used to raise IndexError
        with pytest.raises(FileNotFoundError, match=f"checkpoint '{missing}' not found"):
            load_model(backend, checkpoint=missing, engines=exported)
    ckpt = _copy_checkpoint(tmp_path)
    _truncate(ckpt / WEIGHTS)
    with pytest.raises(ValueError, match=f"checkpoint '{ckpt}': model.safetensors is truncated or corrupt") as err:
        load_model("onnxruntime", checkpoint=ckpt, engines=exported)
    assert "\n" not in str(err.value)


def test_bench_never_relabels_a_fallback(tmp_path):
    from hmdiff_ros.runtime.bench import bench

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text("{ not json")
    with pytest.raises(ValueError, match="is truncated or corrupt"):
        bench(["onnxruntime"], steps=1, repeats=1, warmup=0, engines=str(broken))
    (enc, mod) = bench(["torch"], steps=1, repeats=1, warmup=0)
    assert enc["backend"] == mod["backend"] == "torch"


# --- truncated or corrupt files -----------------------------------------------------------------


def test_truncated_or_corrupt_checkpoints_name_the_file(tmp_path):
    ckpt = _copy_checkpoint(tmp_path)
    weights = (ckpt / WEIGHTS).read_bytes()
    for keep in (0.5, 0.0001, 0.0):
        (ckpt / WEIGHTS).write_bytes(weights[: int(len(weights) * keep)])
        with pytest.raises(ValueError, match=f"checkpoint '{ckpt}': model.safetensors is truncated or corrupt"):
            load_checkpoint(ckpt)
    (ckpt / WEIGHTS).write_bytes(weights)
    config = (ckpt / CONFIG).read_text()
    (ckpt / CONFIG).write_text(config[: len(config) // 2])
    with pytest.raises(
        ValueError, match=f"checkpoint '{ckpt}' is not a valid HMDiff checkpoint: config.json is truncated"
    ):
        load_checkpoint(ckpt)
    meta = json.loads(config)
    meta["model"]["denoiser"]["width"] = meta["model"]["denoiser"]["width"] * 2
    (ckpt / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit the model described in config.json") as err:
        load_checkpoint(ckpt)
    assert "\n" not in str(err.value)


def test_a_corrupt_onnx_file_is_named_and_falls_back_to_torch(exported, tmp_path, caplog):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    _truncate(broken / "denoiser.onnx")
    with pytest.raises(ValueError, match=f"ONNX file '{broken / 'denoiser.onnx'}' is truncated or corrupt"):
        load_onnxruntime(engines=broken)
    with caplog.at_level(logging.WARNING):
        model = load_model("onnxruntime", engines=broken)
    assert model.backend == "torch" and str(broken / "denoiser.onnx") in caplog.text
    assert "denoiser.onnx' is truncated or corrupt" in model.fallback_reasons[0]
    with pytest.raises(ValueError, match="denoiser.onnx"):
        load_model("onnxruntime", engines=broken, fallback=False)
    # a file that matches its manifest but that ONNX Runtime cannot parse: its own error, named
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["files"]["denoiser.onnx"]["sha256"] = file_sha256(broken / "denoiser.onnx")
    manifest[SEAL] = manifest_seal(manifest)  # as if exported so
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"denoiser.onnx' could not be loaded by ONNX Runtime \(InvalidProtobuf"):
        load_onnxruntime(engines=broken)


@pytest.mark.parametrize(
    "content", [b'{"format": 1, "files": {"encoder.onnx"', b"\xff\xfe\x00garbage", b"[1, 2]", b'{"files": [1]}']
)
def test_a_corrupt_manifest_is_named(exported, tmp_path, content):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / MANIFEST).write_bytes(content)
    with pytest.raises(ValueError, match=f"export manifest '{broken / MANIFEST}' is truncated or corrupt"):
        check_export(broken, DEFAULT_CHECKPOINT)
    assert load_model("onnxruntime", engines=broken).backend == "torch"


# --- export folders -----------------------------------------------------------------------------


def test_export_refuses_to_overwrite_without_force(exported, tmp_path):
    with pytest.raises(ValueError, match=f"export folder '{exported}' already exists and is not empty; use --force"):
        export_onnx(out=exported, steps=(2,))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ValueError, match="is an existing file, not a folder"):
        export_onnx(out=a_file, steps=(2,), force=True)
    assert a_file.read_text() == "mine"


def test_forced_export_replaces_only_its_own_files(exported, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(exported, out)
    (out / "notes.txt").write_text("mine")
    (out / "encoder.onnx").write_bytes(b"stale")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(export_module, "export_graph", fail)  # a failed export leaves the folder as it was
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(out=out, steps=(2,), dat="fast", force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(RuntimeError):
        export_onnx(out=tmp_path / "new", steps=(2,))
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()

    manifest = export_onnx(out=out, steps=(2,), dat="fast", force=True)
    assert {p.name for p in out.iterdir()} == EXPORTED | {"notes.txt"} and (out / "notes.txt").read_text() == "mine"
    assert manifest["files"]["encoder.onnx"]["sha256"] == file_sha256(out / "encoder.onnx")
    assert load_model("onnxruntime", engines=out).backend == "onnxruntime"


def test_a_folder_with_only_a_readme_counts_as_empty(tmp_path):
    out = tmp_path / "engines"
    out.mkdir()
    (out / "README.md").write_text("what goes here")
    export_onnx(out=out, steps=(2,))
    assert {p.name for p in out.iterdir()} == EXPORTED_BY_DEFAULT | {"README.md"}


# --- the TensorRT runner's logic, on the CPU --------------------------------------------------


def test_tensorrt_wrapper_refuses_a_batch_beyond_its_engines(torch_model):
    proxy, prior, vis = _inputs(torch_model, b=3)
    wrapped = CudaGraphModel(load_checkpoint()[0], max_batch=4, device="cpu")
    with pytest.raises(ValueError, match=r"3 people x 2 hypotheses = 6 exceeds the largest batch .* \(4\)"):
        wrapped.sample(proxy, prior, vis, steps=1, hypotheses=2)
    assert wrapped.sample(proxy[:2], prior[:2], vis[:2], steps=1, hypotheses=2).points.shape[0] == 2


def _standin(monkeypatch):
    trt = trt_standin.make()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Stand-in GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 9))
    # the stand-in's engines run at once on the CPU: a stream with nothing to wait for
    monkeypatch.setattr(
        torch.cuda, "current_stream", lambda *a: SimpleNamespace(cuda_stream=0, synchronize=lambda: None)
    )
    return trt


def test_tensorrt_engines_sample_as_pytorch_does_for_the_same_seed(exported, torch_model, tmp_path, monkeypatch):
    """The TensorRT runner's own logic against engines that run (the stand-in's run their ONNX
    graph with ONNX Runtime on the memory bound to them): load_tensorrt builds and wires the
    engines, TensorRTModule binds every input by name in the engine's order, dtype and shape,
    sizes the outputs from the context and returns them, CudaGraphModel draws the noise on the
    CPU and runs the DDIM loop and DAT over the engines. The samples are PyTorch's for the same
    seed to ONNX Runtime's precision (< 0.1 mm), and another seed's differ."""
    trt = _standin(monkeypatch)
    folder = tmp_path / "engines"
    shutil.copytree(exported, folder)
    wrapped = load_tensorrt(engines=folder, device="cpu")  # builds the engines: none are there
    assert (wrapped.backend, wrapped.max_batch, wrapped.max_people) == ("tensorrt", 64, 16)
    proxy, prior, vis = _inputs(torch_model, b=3)
    dat = DATConfig(mode="fast")
    seed = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    ref = torch_model.sample(proxy, prior, vis, steps=2, dat=dat, hypotheses=2, generator=seed(7))
    got = wrapped.sample(proxy, prior, vis, steps=2, dat=dat, hypotheses=2, generator=seed(7))
    assert (got.hypotheses - ref.hypotheses).abs().max() * 1000 < 0.1  # mm
    # what ran: the encoder once for the 3 people, the denoiser once per step on 3 x 2 rows
    tokens = trt.executions[1][1]["image_tokens"]
    assert trt.executions == [
        ("proxy", {"proxy": tuple(proxy.shape)}),
        *[("sample", {"sample": (6, 625, 3), "timestep": (6,), "image_tokens": tokens})] * 2,
    ]
    assert tokens[0] == 3
    other = wrapped.sample(proxy, prior, vis, steps=2, dat=dat, hypotheses=2, generator=seed(8))
    assert (other.hypotheses - ref.hypotheses).abs().max() * 1000 > 1.0


def test_engines_are_built_with_one_range_per_named_axis_and_take_people_and_rows_apart(
    exported, tmp_path, monkeypatch
):
    trt = _standin(monkeypatch)
    folder = tmp_path / "engines"
    shutil.copytree(exported, folder)
    paths = build_engines(folder, max_people=16, hypotheses=4)
    assert [p.name.split("_")[0] for p in paths] == ["encoder", "denoiser"]
    assert all("_nvidia-stand-in-gpu-sm89_" in p.name for p in paths)  # cached by GPU and compute capability
    (enc_axes, _, flags), (axes, den_profile, _) = trt.builds[0], trt.builds[1]
    assert enc_axes == {"proxy": "people"} and "FP16" in flags
    assert axes == {"sample": "rows", "timestep": "rows", "image_tokens": "people"}
    shapes = den_profile[0].shapes  # what build_engine itself asked for
    assert shapes["sample"][0][0] == 1 and [s[0] for s in shapes["sample"]] == [1, 4, 64]
    assert [s[0] for s in shapes["image_tokens"]] == [1, 1, 16] and [s[0] for s in shapes["timestep"]] == [1, 4, 64]
    sidecar = json.loads(paths[1].with_suffix(".json").read_text())
    assert sidecar["profile"]["image_tokens"][2][0] == 16 and sidecar["precision"] == "fp16"
    den = TensorRTModule(paths[1], input_axes(folder / "denoiser.onnx"))
    enc = TensorRTModule(paths[0], input_axes(folder / "encoder.onnx"))
    assert (den.max_batch, den.max_people, enc.max_batch, enc.max_people) == (64, 16, None, 16)
    tokens = shapes["image_tokens"][0][1:]
    for people, m in ((1, 4), (3, 4), (16, 4), (2, 8)):  # a frame: rows for the points, people for the tokens
        ctx = den.context = den.engine.create_execution_context()
        den._bind_input("sample", torch.zeros(people * m, 625, 3))
        den._bind_input("timestep", torch.zeros(people * m, dtype=torch.long))
        den._bind_input("image_tokens", torch.zeros(people, *tokens))
        assert ctx.shapes["sample"][0] == people * m and ctx.shapes["image_tokens"][0] == people
    with pytest.raises(ValueError, match=r"input 'sample' of shape \(65, 625, 3\) is outside the engine's profile"):
        den._bind_input("sample", torch.zeros(65, 625, 3))
    wrapped = CudaGraphModel(load_checkpoint()[0], max_batch=den.max_batch, device="cpu", max_people=enc.max_people)
    proxy, prior, vis = _inputs(wrapped, b=17)
    with pytest.raises(ValueError, match=r"17 people exceed the largest the TensorRT engines take \(16\)"):
        wrapped.sample(proxy, prior, vis, steps=1, hypotheses=1)


def test_the_standin_tensorrt_catches_one_axis_name_for_people_and_rows(tmp_path, monkeypatch):
    """The export before format 3 named both axes ``batch``: TensorRT takes that as one size,
    so a frame with 3 people and 4 hypotheses (12 rows) cannot be bound; build_engine now
    refuses such an export by name."""
    trt = _standin(monkeypatch)
    monkeypatch.setattr(export_module, "PEOPLE", "batch")
    monkeypatch.setattr(export_module, "ROWS", "batch")
    old = tmp_path / "old"
    export_onnx(out=old, steps=(2,), dat="off")
    axes = input_axes(old / "denoiser.onnx")
    assert set(axes.values()) == {"batch"}
    with pytest.raises(ValueError, match="first axis named 'batch'.*older than format 3"):
        build_engine(old / "denoiser.onnx", tmp_path / "out")
    # the profile the builder made before (every input 1 / 4 / 16 on its first axis) builds ...
    builder = trt.Builder(None)
    network = builder.create_network(0)
    assert trt.OnnxParser(network, None).parse((old / "denoiser.onnx").read_bytes())
    config, profile = builder.create_builder_config(), builder.create_optimization_profile()
    for t in network.inputs:
        rest = tuple(t.shape)[1:]
        profile.set_shape(t.name, (1, *rest), (4, *rest), (16, *rest))
    config.add_optimization_profile(profile)
    (tmp_path / "old.engine").write_bytes(builder.build_serialized_network(network, config))
    module = TensorRTModule(tmp_path / "old.engine")
    module._bind_input("sample", torch.zeros(12, 625, 3))
    module._bind_input("timestep", torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match="input 'image_tokens' of shape \\(3,"):  # ... and fails the first frame
        module._bind_input("image_tokens", torch.zeros(3, *network.inputs[2].shape[1:]))
    # and ranges that differ on one named axis do not build, as TensorRT refuses them
    profile.set_shape("timestep", (1,), (4,), (8,))
    assert builder.build_serialized_network(network, config) is None
    (tmp_path / "bad.engine").write_bytes(b"junk")
    with pytest.raises(RuntimeError, match="is not a TensorRT engine"):
        TensorRTModule(tmp_path / "bad.engine")
