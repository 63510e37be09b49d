"""An export is used only for what it was made from: the same weights, the same model config,
the same graph code, its manifest as written and every file it lists. A user's export that does
not match is refused with the reason (and ``auto`` falls back, saying why); the export cache
repairs what it can, rebuilding only what is missing, and is used from a read-only location."""

import json
import logging
import shutil

import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'hmdiff_ros[onnx]')")

from hmdiff_ros import defaults  # noqa: E402
from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, load_checkpoint  # noqa: E402
from hmdiff_ros.model.dat import DATConfig  # noqa: E402
from hmdiff_ros.runtime import export_cache  # noqa: E402
from hmdiff_ros.runtime.backends import load_model, load_onnxruntime  # noqa: E402
from hmdiff_ros.runtime.export import export_onnx  # noqa: E402
from hmdiff_ros.runtime.export_cache import cached_export  # noqa: E402
from hmdiff_ros.runtime.manifest import MANIFEST, check_export  # noqa: E402

MM = 1000.0
SAMPLER = f"sampler_k2_{defaults.DAT_MODE}.onnx"  # what the cache makes for the default steps


def _other_config(tmp_path, name="other"):
    """The shipped weights with one scheduler setting changed in config.json: a checkpoint
    whose graphs compute something else (the same weights load into it)."""
    folder = tmp_path / name
    shutil.copytree(DEFAULT_CHECKPOINT, folder)
    meta = json.loads((folder / CONFIG).read_text())
    meta["model"]["scheduler"]["beta_schedule"] = "linear"
    (folder / CONFIG).write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "shipped"
    export_onnx(out=out, steps=(2,), dat="off")
    return out


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """(checkpoint with another config, its export)."""
    tmp = tmp_path_factory.mktemp("other")
    ckpt = _other_config(tmp)
    out = tmp / "engines"
    export_onnx(checkpoint=ckpt, out=out, steps=(2,), dat="off")
    return ckpt, out


@pytest.fixture(scope="module")
def reference():
    """PyTorch's points for fixed inputs (2 steps, DAT off): what an accepted export must give."""
    model = load_checkpoint()[0]
    g = torch.Generator().manual_seed(3)
    enc = model.cfg.encoder
    proxy = torch.rand(2, enc.in_channels, enc.input_size, enc.input_size, generator=g)
    prior, vis = torch.randn(2, 24, 3, generator=g) * 0.3, torch.rand(2, 24, generator=g)
    noise = torch.randn(6, model.num_points, 3, generator=g)  # 2 people x 3 hypotheses
    args = dict(steps=2, dat=DATConfig(mode="off"), hypotheses=3, noise=noise)
    with torch.no_grad():
        ref = model.sample(proxy, prior, vis, **args).points
    return (proxy, prior, vis), args, ref


def _points(model, reference):
    (proxy, prior, vis), args, _ = reference
    with torch.no_grad():
        return model.sample(proxy, prior, vis, **args).points


# --- a user's export made for another config ---------------------------------------------------


def test_an_export_of_the_same_weights_with_another_config_is_refused_with_the_reason(other, reference):
    """Made from a checkpoint with the shipped weights and one scheduler setting changed, then
    used with the shipped checkpoint: refused, naming the setting; ``auto`` runs PyTorch and
    says why. Before, it was accepted and its joints were hundreds of mm off."""
    ckpt, out = other
    with pytest.raises(ValueError, match=r"another model config .*scheduler\.beta_schedule: 'linear' in the export"):
        load_onnxruntime(engines=out)
    model = load_model("auto", engines=out)
    assert model.backend == "torch"
    assert any("another model config" in r for r in model.fallback_reasons), model.fallback_reasons
    assert (_points(model, reference) - reference[2]).abs().max() * MM < 0.1
    # what it would have given: far from the shipped model's points
    wrong = load_onnxruntime(checkpoint=ckpt, engines=out)
    assert (_points(wrong, reference) - reference[2]).abs().max() * MM > 10


def test_the_shipped_export_is_refused_for_a_checkpoint_with_another_config(shipped_export, other, tmp_path):
    ckpt, _ = other
    with pytest.raises(ValueError, match=r"another model config .*'cosine' in the export, 'linear' in the checkpoint"):
        load_onnxruntime(checkpoint=ckpt, engines=shipped_export)
    model = load_model("auto", checkpoint=ckpt, engines=shipped_export)
    assert model.backend == "torch" and "another model config" in " ".join(model.fallback_reasons)


def test_an_engines_folder_in_the_working_folder_is_checked_like_any_other(other, tmp_path, monkeypatch):
    """The default ``--engines`` is the relative ``engines``: a stale one where the command
    runs is refused, not used."""
    _, out = other
    shutil.copytree(out, tmp_path / defaults.ENGINES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    model = load_model("auto")
    assert model.backend == "torch"
    assert any("another model config" in r for r in model.fallback_reasons), model.fallback_reasons


def test_a_config_whose_training_notes_differ_is_the_same_model(shipped_export, tmp_path, reference):
    """Only what the graphs compute counts: config.json's training record is not part of it."""
    ckpt = tmp_path / "renoted"
    shutil.copytree(DEFAULT_CHECKPOINT, ckpt)
    meta = json.loads((ckpt / CONFIG).read_text())
    meta["train"] = {**meta.get("train", {}), "out": "elsewhere"}
    (ckpt / CONFIG).write_text(json.dumps(meta, indent=2))
    model = load_onnxruntime(checkpoint=ckpt, engines=shipped_export)
    assert (_points(model, reference) - reference[2]).abs().max() * MM < 0.1


# --- any one edit: refused, or the same result --------------------------------------------------


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _edited(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    return 0 if value is None else None


def test_any_one_edit_of_the_manifest_or_a_file_is_refused_or_changes_nothing(shipped_export, tmp_path, reference):
    """Property: edit one field of the manifest (every leaf, in turn) or one file (truncate,
    delete, swap with another graph): loading either refuses with a one-line reason or gives
    PyTorch's points within 0.1 mm."""
    manifest = json.loads((shipped_export / MANIFEST).read_text())
    copy = tmp_path / "copy"

    def outcome(edit):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(shipped_export, copy)
        edit(copy)
        try:
            model = load_onnxruntime(engines=copy)
        except (ValueError, FileNotFoundError) as exc:
            assert "\n" not in str(exc)
            return "refused"
        err = (_points(model, reference) - reference[2]).abs().max().item() * MM
        assert err < 0.1, err
        return "same"

    def set_leaf(path, value):
        def edit(folder):
            m = json.loads((folder / MANIFEST).read_text())
            node = m
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
            (folder / MANIFEST).write_text(json.dumps(m, indent=1))

        return edit

    results = {}
    leaves = list(_leaves(manifest))
    assert len(leaves) > 40
    for path in leaves:
        node = manifest
        for k in path:
            node = node[k]
        results[path] = outcome(set_leaf(path, _edited(node)))
    # a key removed, a sampler record added
    results["no seal"] = outcome(lambda f: (f / MANIFEST).write_text(json.dumps({**manifest, "manifest_sha256": None})))
    files = list(manifest["files"])
    for name in files:
        results[("truncate", name)] = outcome(lambda f, n=name: (f / n).write_bytes((f / n).read_bytes()[:1000]))
        results[("delete", name)] = outcome(lambda f, n=name: (f / n).unlink())
        other = next(x for x in files if x != name)
        results[("swap", name)] = outcome(lambda f, n=name, o=other: shutil.copy(f / o, f / n))
    assert set(results.values()) <= {"refused", "same"}
    # the manifest is sealed: here every edit is refused, the sampler's step count among them
    assert results[("files", "sampler_k2_off.onnx", "steps")] == "refused"
    assert all(v == "refused" for v in results.values()), {k: v for k, v in results.items() if v != "refused"}


# --- the export cache ----------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    return cached_export()


def _stamps(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir() if p.suffix == ".onnx"}


def test_a_cached_export_missing_its_sampler_rebuilds_only_the_sampler(cache, caplog):
    """Before, the export was used without its one-call sampler ("one-call samplers []": the
    slow loop on every run) and never rebuilt."""
    before = _stamps(cache)
    (cache / SAMPLER).unlink()
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        model = load_model("onnxruntime", engines=None)
    assert model.backend == "onnxruntime" and (defaults.STEPS, defaults.DAT_MODE) in model.samplers
    assert f"making {SAMPLER} ({SAMPLER} missing)" in caplog.text
    after = _stamps(cache)
    assert set(after) == set(before)
    assert {n: v for n, v in after.items() if n != SAMPLER} == {n: v for n, v in before.items() if n != SAMPLER}
    check_export(cache, DEFAULT_CHECKPOINT)  # whole again


def test_a_cached_manifest_with_edited_sampler_settings_is_made_again(cache, caplog):
    """Before, an edited manifest was trusted: its sampler was taken for another step count."""
    manifest = json.loads((cache / MANIFEST).read_text())
    manifest["files"][SAMPLER]["steps"] = 3
    (cache / MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        model = load_model("onnxruntime", engines=None, steps=(defaults.STEPS,))
    assert "was edited after export" in caplog.text and "making the ONNX export" in caplog.text
    assert set(model.samplers) == {(defaults.STEPS, defaults.DAT_MODE)}
    assert json.loads((cache / MANIFEST).read_text())["files"][SAMPLER]["steps"] == defaults.STEPS


def test_a_read_only_cache_is_used_when_whole_and_refused_with_the_reason_when_not(cache, monkeypatch, caplog):
    """Before, a valid cache in a read-only folder was ignored (no lock file could be made)."""

    def read_only(path):
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(export_cache, "_locked", read_only)
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        assert cached_export() == cache
        assert load_model("auto", engines=None).backend == "onnxruntime"
    assert "making" not in caplog.text
    (cache / SAMPLER).unlink()
    with pytest.raises(OSError, match=rf"cannot be written .* \({SAMPLER} missing\); set HMDIFF_CACHE"):
        cached_export()
    model = load_model("auto", engines=None)
    assert model.backend == "torch" and any("cannot be written" in r for r in model.fallback_reasons)


def test_a_cache_entry_that_is_a_file_is_replaced_by_the_export(tmp_path, monkeypatch, caplog):
    """Before: not repaired, and the hint named an option (--out) the user never gave."""
    monkeypatch.setenv("HMDIFF_CACHE", str(tmp_path / "cache"))
    folder = cached_export()
    shutil.rmtree(folder)
    folder.write_text("debris")
    with caplog.at_level(logging.INFO, logger="hmdiff_ros.runtime.export_cache"):
        model = load_model("auto", engines=None)
    assert model.backend == "onnxruntime" and folder.is_dir() and "--out" not in caplog.text
    assert "is a file, not an export folder" in caplog.text
    check_export(folder, DEFAULT_CHECKPOINT)


def test_the_cache_keeps_samplers_of_other_step_counts_when_it_repairs(cache):
    cached_export(steps=(1,))
    names = set(json.loads((cache / MANIFEST).read_text())["files"])
    k1 = f"sampler_k1_{defaults.DAT_MODE}.onnx"
    assert {SAMPLER, k1} <= names
    (cache / "encoder.onnx").write_bytes(b"\0" * 10)
    cached_export()
    assert set(json.loads((cache / MANIFEST).read_text())["files"]) == names
    check_export(cache, DEFAULT_CHECKPOINT)
