"""A new user's mistakes in training configs, splits, export and benchmark options: each is a
one-line ``ValueError``/``OSError`` naming the file, option or key and what was expected,
raised before anything is created or loaded."""

import json
import logging
import os
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hmdiff_ros.cli import main
from hmdiff_ros.model.denoiser import DenoiserConfig
from hmdiff_ros.model.encoder import EncoderConfig
from hmdiff_ros.model.hmdiff import HMDiffConfig
from hmdiff_ros.model.scheduler import SchedulerConfig
from hmdiff_ros.model.train import train
from hmdiff_ros.model.train_config import FIELD_CHECKS, TrainConfig, load_train_config

TINY = HMDiffConfig(
    encoder=EncoderConfig(width=32, base_channels=8),
    denoiser=DenoiserConfig(width=32, heads=2, self_blocks=1, cross_blocks=1, vertex_groups=8),
    scheduler=SchedulerConfig(num_train_timesteps=100),
)
DEFAULT_YAML = Path(__file__).resolve().parents[1] / "hmdiff_ros" / "model" / "configs" / "default.yaml"


# --- training configs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, match",
    [
        ("steps: .nan", r"steps must be an integer >= 1, got nan"),
        ("steps: -5", r"steps must be >= 1, got -5"),
        ("steps: 2.5", r"steps must be an integer >= 1, got 2.5"),
        ("batch_size: true", r"batch_size must be an integer >= 1, got True"),
        ("batch_size: 0", r"batch_size must be >= 1, got 0"),
        ('lr: "fast"', r"lr must be a finite number between 0 and 1, exclusive, got 'fast'"),
        ("lr: .inf", r"lr must be a finite number between 0 and 1, exclusive, got inf"),
        ("lr: 1", r"lr must be between 0 and 1, exclusive, got 1.0"),
        ("weight_decay: -0.1", r"weight_decay must be >= 0, got -0.1"),
        ("warmup_steps: -1", r"warmup_steps must be >= 0, got -1"),
        ("ema_decay: 1.0", r"ema_decay must be in \[0, 1\), got 1.0"),
        ("grad_clip: 0", r"grad_clip must be > 0, got 0.0"),
        ("workers: -2", r"workers must be >= 0, got -2"),
        ("seed: -1", r"seed must be >= 0, got -1"),
        ("val_every: 0", r"val_every must be >= 1, got 0"),
        ("val_samples: [4]", r"val_samples must be an integer >= 1, got \[4\]"),
        ("max_minutes: -3", r"max_minutes must be >= 0, 0 for no limit, got -3.0"),
        ("device: gpu", r"device must be one of 'auto', 'cpu', 'cuda', got 'gpu'"),
        ("out: 3", r"out must be a non-empty folder path, got 3"),
        ("init: 7", r"init must be a checkpoint folder path, or empty, got 7"),
        ("force: maybe", r"force must be true or false, got 'maybe'"),
        ("stepz: 3", r"unknown training config keys \['stepz'\]"),
        ("model: 5", r"model must be a mapping"),
        ("model: {denoiser: {widht: 3}}", r"unknown model.denoiser keys \['widht'\]"),
        ("model: {denoiser: {width: wide}}", r"model.denoiser.width must be an integer >= 1, got 'wide'"),
        ("model: {denoiser: {width: 100}}", r"model.encoder.width \(128\) must equal model.denoiser.width \(100\)"),
        ("model: {scheduler: {beta_schedule: square}}", r"model.scheduler: beta_schedule must be one of"),
        ("model: {denoiser: {heads: 0}}", r"model.denoiser.heads must be >= 1, got 0"),
        ("model: {data_scale: 0}", r"model.data_scale must be > 0, got 0.0"),
        ("model: {topology: 3}", r"model.topology must be a string, got 3"),
        ("- 1\n- 2", r"must be a mapping of keys to values, got list"),
        ("steps: [1", r"is not valid YAML: line 2, column 1: expected ',' or ']'"),
        ("steps: 1\n\tlr: 2", r"is not valid YAML: line 2"),
    ],
)
def test_bad_training_configs_are_value_errors_naming_the_file_key_and_value(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=match) as exc:
        load_train_config(path)
    assert str(exc.value).startswith(f"training config '{path}'")
    assert "\n" not in str(exc.value)


def test_every_training_field_is_checked_and_good_values_pass(tmp_path):
    assert set(FIELD_CHECKS) == {f.name for f in fields(TrainConfig)} - {"model"}
    cfg = load_train_config(DEFAULT_YAML)
    assert cfg.steps == 20000 and cfg.model.scheduler.prediction_type == "sample"
    path = tmp_path / "c.yaml"
    # YAML 1.1 reads 1e-3 (no dot) as a string; numbers written so are taken as numbers
    path.write_text("lr: 1e-3\ngrad_clip: 2\nmodel: {data_scale: 5e-1, denoiser: {self_blocks: 1}}\n")
    cfg = load_train_config(path, {"steps": 7})
    assert cfg.lr == 0.001 and cfg.grad_clip == 2.0 and isinstance(cfg.grad_clip, float) and cfg.steps == 7
    assert cfg.model.data_scale == 0.5 and cfg.model.denoiser.self_blocks == 1 and cfg.model.denoiser.width == 128
    # an option's own value is not blamed on the file
    with pytest.raises(ValueError, match=r"^steps must be >= 1, got 0$"):
        load_train_config(path, {"steps": 0})
    with pytest.raises(ValueError, match="is a folder; expected a YAML file"):
        load_train_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_train_config(tmp_path / "none.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"steps: \xff\xfe\n")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_train_config(tmp_path / "bin.yaml")
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got True"):
        TrainConfig(steps=True)
    with pytest.raises(ValueError, match="model must be an HMDiffConfig"):
        TrainConfig(model={"denoiser": {}})


@pytest.mark.parametrize("text", ["steps: .nan", "steps: [1", 'lr: "fast"', "steps: -5"])
def test_train_command_reports_bad_configs_in_one_line_and_creates_nothing(tmp_path, capsys, text):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hmdiff train: error: training config '{path}'")
    assert not out.exists()


# --- nothing is created before the run is known to start ----------------------------------------


def _cfg(out, **kw):
    return TrainConfig(out=str(out), steps=2, batch_size=2, workers=0, val_every=1, val_samples=4, model=TINY, **kw)


def test_a_missing_init_checkpoint_is_named_and_no_out_folder_is_made(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(FileNotFoundError) as exc:
        train(_cfg(out, init=str(tmp_path / "missing")), progress=False)
    assert str(exc.value) == (
        f"--init checkpoint '{tmp_path / 'missing'}' not found or incomplete (needs model.safetensors and config.json)"
    )
    assert not (tmp_path / "new").exists()


def test_a_bad_or_foreign_init_checkpoint_is_refused_before_out_is_made(tmp_path, topology):
    from hmdiff_ros.model.checkpoint import save_checkpoint
    from hmdiff_ros.model.hmdiff import HMDiff

    other = save_checkpoint(tmp_path / "other", HMDiff(replace(TINY, denoiser=replace(TINY.denoiser, self_blocks=2))))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="--init checkpoint .* has another model configuration"):
        train(_cfg(out, init=str(other)), progress=False)
    assert not out.exists()
    (other / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"^--init checkpoint .*other' is not a valid HMDiff checkpoint"):
        train(_cfg(out, init=str(other)), progress=False)
    assert not out.exists()


def test_cuda_asked_for_without_cuda_is_refused_before_out_is_made(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--device cuda: CUDA is not available here \(torch "):
        train(_cfg(out, device="cuda"), progress=False)
    assert not out.exists()
    (out / "x").mkdir(parents=True)  # an existing (empty) folder is left as it was
    with pytest.raises(ValueError, match="--device cuda"):
        train(_cfg(out, device="cuda"), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["x"]


# --- splits -------------------------------------------------------------------------------------


def _split(folder: Path, n: int = 4, num_coarse: int = 600) -> Path:
    """A split in the layout of 'hmdiff data make', with random contents."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    arrays = {
        "uv": rng.uniform(0, 64, (n, 24, 2)).astype(np.float32),
        "vis": np.ones((n, 24), np.float32),
        "mask": rng.integers(0, 256, (n, 64, 64)).astype(np.uint8),
        "valid": np.ones((n, 64, 64), bool),
        "prior_xyz": rng.normal(0, 0.3, (n, 24, 3)).astype(np.float32),
        "coarse": rng.normal(0, 0.3, (n, num_coarse, 3)).astype(np.float32),
        "coarse_rel": rng.normal(0, 0.3, (n, num_coarse, 3)).astype(np.float32),
        "joints_rel": rng.normal(0, 0.3, (n, 25, 3)).astype(np.float32),
    }
    np.savez_compressed(folder / "samples.npz", **arrays)
    meta = {
        "format": 1,
        "split": "test",
        "num": n,
        "seed": 0,
        "config": {"proxy": {"crop_size": 64, "heatmap_sigma": 1.5, "min_visibility": 0.5}},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_a_made_split_reads(tmp_path):
    from hmdiff_ros.data.store import SplitReader

    reader = SplitReader(_split(tmp_path / "s"))
    assert len(reader) == 4 and reader.batch(0, 2)["proxy"].shape[0] == 2


def test_damaged_splits_are_value_errors_naming_the_file(tmp_path, capsys):
    from hmdiff_ros.data.store import SplitReader

    split = _split(tmp_path / "s")
    samples = split / "samples.npz"
    whole = samples.read_bytes()
    samples.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"'{samples}' is truncated or corrupt \(BadZipFile"):
        SplitReader(split)
    assert main(["eval", "--data", str(split), "--steps", "2", "--dat", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "samples.npz' is truncated or corrupt" in err[0]

    arrays = dict(np.load(_split(tmp_path / "s2") / "samples.npz"))
    np.savez(tmp_path / "s2" / "samples.npz", **{**arrays, "uv": arrays["uv"][:2]})
    with pytest.raises(ValueError, match=r"samples.npz': array 'uv' has 2 rows where 'coarse' has 4 samples"):
        SplitReader(tmp_path / "s2")
    np.savez(tmp_path / "s2" / "samples.npz", **{k: v for k, v in arrays.items() if k != "vis"})
    with pytest.raises(ValueError, match=r"samples.npz' lacks the arrays \['vis'\]"):
        SplitReader(tmp_path / "s2")
    np.savez(tmp_path / "s2" / "samples.npz", **{k: v[:3] for k, v in arrays.items()})
    with pytest.raises(ValueError, match="samples.npz holds 3 samples but meta.json says 4"):
        SplitReader(tmp_path / "s2")


@pytest.mark.parametrize(
    "meta, match",
    [
        ("{", r"cannot read '.*meta.json': JSONDecodeError"),
        ("[1]", r"meta.json' must hold a JSON object, got list"),
        ('{"format": 1}', r"meta.json' has no engine config under config.proxy"),
        ('{"format": 1, "config": 3}', r"meta.json' has no engine config under config.proxy"),
        ('{"format": 1, "config": {"proxy": {"crop_size": 5}}}', r"meta.json': config.proxy is not a proxy config"),
        ('{"format": 1, "config": {"proxy": {"size": 64}}}', r"meta.json': config.proxy is not a proxy config"),
        ('{"format": 2, "config": {"proxy": {}}}', r"has format 2 in meta.json, expected 1"),
    ],
)
def test_bad_split_meta_is_a_value_error_naming_meta_json(tmp_path, meta, match):
    from hmdiff_ros.data.store import SplitReader

    split = _split(tmp_path / "s")
    (split / "meta.json").write_text(meta)
    with pytest.raises(ValueError, match=match):
        SplitReader(split)


def test_a_data_file_is_not_said_to_be_missing(tmp_path):
    from hmdiff_ros.data.store import SplitReader

    (tmp_path / "samples.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file; expected a folder written by 'hmdiff data make'"):
        SplitReader(tmp_path / "samples.npz")


def test_a_split_for_another_topology_is_refused_by_name(tmp_path, topology):
    from hmdiff_ros.model.evaluate import evaluate
    from hmdiff_ros.model.hmdiff import HMDiff

    split = _split(tmp_path / "s", num_coarse=100)
    with pytest.raises(ValueError, match="has 100 coarse vertices per body but the model has 600"):
        evaluate(data=split, model=HMDiff(TINY, topology).eval(), steps=1, dat="off")


# --- export -------------------------------------------------------------------------------------


def test_export_opset_is_checked_against_torch_before_anything(tmp_path):
    from hmdiff_ros.runtime.export import MIN_OPSET, export_onnx, opset_range

    lo, hi = opset_range()
    constants = pytest.importorskip("torch.onnx._constants")
    assert hi == getattr(constants, "ONNX_MAX_OPSET", hi) and lo == max(MIN_OPSET, constants.ONNX_MIN_OPSET)
    out = tmp_path / "new" / "engines"
    for bad in (hi + 1, lo - 1, "17", True):
        # the checkpoint is missing too: the opset is checked first
        with pytest.raises(ValueError, match=rf"^--opset must be in {lo}\.\.{hi} with the installed torch"):
            export_onnx(checkpoint=tmp_path / "missing", out=out, opset=bad)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="--steps must be integers >= 1"):
        export_onnx(checkpoint=tmp_path / "missing", out=out, steps=())


def test_a_torch_export_error_is_one_line_without_graph_dumps(tmp_path, capfd):
    from hmdiff_ros.runtime.export import export_graph

    path = tmp_path / "linear.onnx"
    with pytest.raises(ValueError, match=r"^ONNX export of linear.onnx \(opset 99\) failed: ") as exc:
        export_graph(torch.nn.Linear(3, 4), (torch.randn(2, 3),), path, ["x"], ["y"], 99)
    assert "\n" not in str(exc.value)
    out, _ = capfd.readouterr()
    assert "graph" not in out and "aten::" not in out  # torch prints its IR graph to fd 1 on failure
    assert not path.exists()


def test_a_failed_export_names_the_graph_and_leaves_the_folders_as_they_were(tmp_path, capfd, monkeypatch):
    from hmdiff_ros.runtime.export import export_onnx

    def fake_export(module, args, f, **kwargs):
        if str(f).endswith("denoiser.onnx"):
            os.write(1, b"Torch IR graph at exception: graph(%0 : Float(2, 3)):\n  return (%0)\n")
            raise RuntimeError("Unsupported: something\nover several lines")
        Path(f).write_bytes(b"onnx")

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    existing = tmp_path / "engines"
    existing.mkdir()
    (existing / "encoder.onnx").write_bytes(b"old")
    (existing / "notes.txt").write_text("mine")
    for out, force in ((existing, True), (tmp_path / "new" / "deeper", False)):
        with pytest.raises(ValueError) as exc:
            export_onnx(out=out, steps=(2,), force=force)
        assert str(exc.value).startswith("ONNX export of denoiser.onnx (opset 17) failed: RuntimeError: Unsupported")
        assert "\n" not in str(exc.value)
        assert "Torch IR" not in capfd.readouterr().out
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == {"encoder.onnx": b"old", "notes.txt": b"mine"}
    assert not (tmp_path / "new").exists()


# --- bench --------------------------------------------------------------------------------------


def test_bench_refuses_cuda_without_cuda_before_loading(tmp_path, monkeypatch):
    from hmdiff_ros.runtime.bench import bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda: CUDA is not available here \(torch .*\)$"):
        bench(["torch"], device="cuda", checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="--device must be 'cpu' or 'cuda', got 'tpu'"):
        bench(["torch"], device="tpu", checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="hypotheses=0"):
        bench(["torch"], hypotheses=0, checkpoint=str(tmp_path / "missing"))
    assert main(["bench", "--hypotheses", "0", "--checkpoint", str(tmp_path / "missing")]) == 2


def test_bench_backend_lists(tmp_path, capsys, caplog):
    from hmdiff_ros.runtime.bench import bench

    for empty in ([], ""):
        with pytest.raises(ValueError, match=r"^--backend: no backend given; choose from torch"):
            bench(empty, checkpoint=str(tmp_path / "missing"))
    assert main(["bench", "--backend", " , ", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "--backend: no backend given" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown backends \['tflite'\]"):
        bench("torch,tflite", checkpoint=str(tmp_path / "missing"))
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.runtime.bench"):
        rows = bench(["torch", "torch"], steps=1, repeats=1, warmup=0)
    assert [(r["backend"], r["stage"]) for r in rows] == [("torch", "encoder"), ("torch", "model")]
    assert "--backend lists ['torch'] more than once" in caplog.text


# --- bench reports ------------------------------------------------------------------------------

ROWS = [
    {"backend": "torch", "stage": "encoder", "p50_ms": 1.0, "p90_ms": 1.5, "p99_ms": 2.0},
    {"backend": "torch", "stage": "model", "p50_ms": 9.0, "p90_ms": 9.5, "p99_ms": 9.9, "fps": 111.1, "peak_mb": 500},
]
SETTINGS = {"steps": 4, "people": 1, "dat": "fast"}


def test_a_bench_report_never_replaces_files_unless_forced(tmp_path):
    from hmdiff_ros.runtime.bench import check_report, write_report

    out = tmp_path / "report"
    write_report(ROWS, out, SETTINGS)
    assert sorted(p.name for p in out.iterdir()) == ["bench.md", "bench.png"]
    assert "| torch | model | 9.0 | 9.5 | 9.9 | 111.1 | 500 |" in (out / "bench.md").read_text()
    (out / "bench.md").write_text("my notes")
    with pytest.raises(ValueError, match=rf"'{out / 'bench.md'}' already exists; use --force"):
        write_report(ROWS, out, SETTINGS)
    with pytest.raises(ValueError, match="already exists; use --force"):
        check_report(out)
    assert (out / "bench.md").read_text() == "my notes"
    (out / "bench.md").unlink()  # bench.png alone is refused too
    with pytest.raises(ValueError, match=rf"'{out / 'bench.png'}' already exists"):
        write_report(ROWS, out, SETTINGS)
    write_report(ROWS, out, SETTINGS, force=True)
    assert (out / "bench.md").read_text().startswith("# hmdiff bench")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ValueError, match="--report '.*notes.txt' is an existing file; expected a folder"):
        write_report(ROWS, a_file, SETTINGS, force=True)
    assert a_file.read_text() == "mine"


def test_a_failed_bench_report_leaves_nothing_behind(tmp_path, monkeypatch):
    import matplotlib.figure

    from hmdiff_ros.runtime.bench import write_report

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        write_report(ROWS, tmp_path / "new" / "report", SETTINGS)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError, match="disk full"):
        write_report(ROWS, tmp_path / "kept", SETTINGS)
    assert list((tmp_path / "kept").iterdir()) == []


# --- more of a new user's mistakes: worker counts, duplicate keys, --out under a file, sheets -----


def test_workers_are_bounded_by_name(tmp_path):
    from hmdiff_ros.model.train_config import MAX_WORKERS

    assert TrainConfig(workers=MAX_WORKERS).workers == MAX_WORKERS
    with pytest.raises(ValueError, match=rf"^workers must be at most {MAX_WORKERS} .*, got 100000$"):
        TrainConfig(workers=100000)
    path = tmp_path / "c.yaml"
    path.write_text("workers: 100000\n")
    with pytest.raises(ValueError, match=rf"^training config '{path}': workers must be at most {MAX_WORKERS}"):
        load_train_config(path)
    with pytest.raises(ValueError, match="workers must be at most"):
        load_train_config(None, {"workers": MAX_WORKERS + 1})


@pytest.mark.parametrize(
    "text, key, line, first",
    [
        ("steps: 1\nlr: 0.01\nsteps: 2", "steps", 3, 1),
        ("model:\n  denoiser: {width: 32}\n  denoiser: {width: 64}", "denoiser", 3, 2),
        ("model: {denoiser: {width: 32, width: 64}}", "width", 1, 1),
    ],
)
def test_a_key_given_twice_is_refused_naming_the_file_key_and_line(tmp_path, text, key, line, first):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError) as exc:
        load_train_config(path)
    message = str(exc.value)
    assert message.startswith(f"training config '{path}'") and "\n" not in message
    assert f"line {line}," in message and f"duplicate key '{key}' (first given on line {first})" in message


def test_keys_merged_in_may_be_overridden_and_unique_keys_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encoder: &w {width: 64}\n  denoiser:\n    <<: *w\n    width: 64\n    heads: 2\n")
    cfg = load_train_config(path)
    assert cfg.model.denoiser.width == 64 and cfg.model.denoiser.heads == 2


def test_an_out_under_a_file_is_refused_before_training(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for out in (notes / "run", notes / "a" / "b"):
        with pytest.raises(ValueError, match=rf"^--out '{out}': '{notes}' is a file; expected a folder for the run$"):
            train(_cfg(out), progress=False)
    args = ["train", "--out", str(notes / "run"), "--steps", "2", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hmdiff train: error: --out '{notes / 'run'}': '{notes}' is a file; expected a folder for the run"]
    assert notes.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"out": "sheet.txt"}, r"--out '.*sheet.txt' must end in one of .png, .jpg.* got '.txt'"),
        ({"out": "sheet"}, r"--out '.*sheet' must end in one of .png.* got no extension"),
        ({"num": 1_000_000}, r"--num must be an integer in 1..1024 \(at most 1024 samples.*got 1000000"),
        ({"num": 0}, r"--num must be an integer in 1..1024"),
        ({"num": 100, "tile": 2000}, r"--num must be an integer in 1..64 .*16384x16384 pixels at --tile 2000"),
        ({"tile": 8}, r"--tile must be an integer in 32..16384 pixels, got 8"),
        ({"out": "notes.txt/sheet.png"}, r"--out '.*sheet.png': '.*notes.txt' is a file; expected a folder"),
    ],
)
def test_bad_contact_sheet_requests_are_refused_before_any_work(tmp_path, kwargs, match):
    from hmdiff_ros.data.sheet import contact_sheet

    (tmp_path / "notes.txt").write_text("mine")
    args = {"num": 4, "seed": 0, "out": "new/sheet.png", "tile": 64, **kwargs}
    args["out"] = str(tmp_path / args["out"])
    with pytest.raises(ValueError, match=match):
        contact_sheet(None, **args)  # no engine needed: refused before it is used
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_contact_sheet_is_written_whole_or_not_at_all(tmp_path, engine, monkeypatch):
    import cv2

    from hmdiff_ros.data.sheet import contact_sheet

    out = contact_sheet(engine, 5, 0, tmp_path / "a" / "sheet.JPG", tile=48)  # 3 x 2 tiles
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (96, 144, 3)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sheet.JPG"]

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hmdiff_ros.data.sheet.os.replace", full)
    with pytest.raises(OSError, match="No space left"):
        contact_sheet(engine, 2, 0, tmp_path / "b" / "c" / "sheet.png", tile=48)
    assert not (tmp_path / "b").exists()  # neither the image, its temporary file nor the folders made for it
    with pytest.raises(OSError, match="No space left"):
        contact_sheet(engine, 2, 0, out, tile=48)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sheet.JPG"]
    assert cv2.imread(str(out)).shape == (96, 144, 3)  # the earlier image is untouched
