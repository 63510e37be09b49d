"""The shape-bank cache: a damaged cached bank is built again (with a warning naming it), a
build that is cut short leaves no truncated file, and a cache folder that is a file is a
one-line error naming ``HMDIFF_CACHE_DIR``."""

import logging

import numpy as np
import pytest

import hmdiff_ros.data.shapes as shapes
from hmdiff_ros.cli import main
from hmdiff_ros.data.shapes import BankConfig, ShapeBank, cache_dir, load_or_build_shape_bank


def _bank(seed: int = 0) -> ShapeBank:
    """A small bank with the fields and types of a real one (random contents)."""
    rng = np.random.default_rng(seed)
    n, v, b = 3, 5, 4
    return ShapeBank(
        rest_vertices=rng.normal(size=(n, v, 3)).astype(np.float32),
        vertex_ids=np.arange(v),
        bone_rot=rng.normal(size=(n, b, 3, 3)),
        bone_head=rng.normal(size=(n, b, 3)),
        skin_index=np.zeros((v, 9), np.int64),
        skin_weight=np.full((v, 9), 1 / 9, np.float32),
        parents=np.array([-1, 0, 1, 2]),
        reference=rng.normal(size=(b, 3, 3)),
        phenotypes=rng.uniform(size=(n, 6)).astype(np.float32),
        ages=np.full(n, 30.0, np.float32),
        joint_regressor=rng.uniform(size=(25, v)).astype(np.float32),
        num_coarse=2,
        bone_labels=np.array(["root", "a", "b", "c"]),
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder, and a stand-in for the Anny build that counts its calls."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("HMDIFF_CACHE_DIR", str(folder))
    builds = []

    def build(cfg, topology):
        builds.append(cfg)
        return _bank(len(builds))

    monkeypatch.setattr(shapes, "build_shape_bank", build)
    return folder, builds


def _same(a: ShapeBank, b: ShapeBank) -> bool:
    pairs = zip(a.__dict__.values(), b.__dict__.values(), strict=True)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)


def test_a_bank_is_built_once_then_read_from_the_cache(cache, topology):
    folder, builds = cache
    first = load_or_build_shape_bank(BankConfig(size=3), topology)
    (path,) = folder.glob("shape_bank_*.npz")
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temporary files left
    again = load_or_build_shape_bank(BankConfig(size=3), topology)
    assert len(builds) == 1 and _same(first, again) and again.num_coarse == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated (a build killed before atomic writes)
        lambda data: b"",
        lambda data: b"not a zip file at all",
        lambda data: data[:200] + bytes(len(data) - 200),  # right size, zeroed
    ],
)
def test_a_damaged_cached_bank_is_built_again_with_a_warning(cache, topology, caplog, damage):
    folder, builds = cache
    load_or_build_shape_bank(BankConfig(size=3), topology)
    (path,) = folder.glob("shape_bank_*.npz")
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.data.shapes"):
        rebuilt = load_or_build_shape_bank(BankConfig(size=3), topology)
    assert len(builds) == 2
    assert f"the cached shape bank {path} cannot be read" in caplog.text and "building it again" in caplog.text
    assert _same(ShapeBank.load(path), rebuilt)  # the cache is repaired
    caplog.clear()
    load_or_build_shape_bank(BankConfig(size=3), topology)
    assert len(builds) == 2 and "cannot be read" not in caplog.text


def test_a_cached_file_of_other_arrays_is_built_again(cache, topology, caplog):
    folder, builds = cache
    load_or_build_shape_bank(BankConfig(size=3), topology)
    (path,) = folder.glob("shape_bank_*.npz")
    with path.open("wb") as f:
        np.savez(f, something=np.zeros(3))
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.data.shapes"):
        load_or_build_shape_bank(BankConfig(size=3), topology)
    assert len(builds) == 2 and "cannot be read (KeyError" in caplog.text


def test_a_save_cut_short_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "shape_bank_x.npz"

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 the first bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _bank().save(path)
    assert list(path.parent.iterdir()) == []
    monkeypatch.undo()
    _bank().save(path)
    old = path.read_bytes()
    monkeypatch.setattr(shapes.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _bank(5).save(path)
    assert path.read_bytes() == old and [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_cache_dir_that_is_a_file_is_a_value_error_naming_it(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    monkeypatch.setenv("HMDIFF_CACHE_DIR", str(a_file))
    with pytest.raises(ValueError, match=rf"^HMDIFF_CACHE_DIR '{a_file}' is a file; expected a folder"):
        cache_dir()
    monkeypatch.setenv("HMDIFF_CACHE_DIR", str(a_file / "sub"))
    with pytest.raises(ValueError, match=rf"^HMDIFF_CACHE_DIR '{a_file / 'sub'}' is inside '{a_file}', a file"):
        cache_dir()
    monkeypatch.setenv("HMDIFF_CACHE_DIR", str(tmp_path / "new" / "cache"))
    assert cache_dir() == tmp_path / "new" / "cache"  # made when first written
    monkeypatch.setenv("HMDIFF_CACHE_DIR", str(a_file))
    out = tmp_path / "split"
    assert main(["data", "make", "--num", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hmdiff data make: error: HMDIFF_CACHE_DIR '{a_file}' is a file")
    assert not out.exists() and a_file.read_text() == "mine"


def test_the_default_cache_dir_is_named_when_it_is_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HMDIFF_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".cache").write_text("not a folder")
    with pytest.raises(
        ValueError, match=r"the cache folder '.*hmdiff_ros' is inside '.*\.cache', a file.*HMDIFF_CACHE_DIR"
    ):
        cache_dir()


def test_a_truncated_real_bank_is_rebuilt_the_same(tmp_path, monkeypatch, anny_body, topology, caplog):
    """With Anny: the bank built again after damage equals the first one (the build is seeded)."""
    monkeypatch.setenv("HMDIFF_CACHE_DIR", str(tmp_path))
    first = load_or_build_shape_bank(BankConfig(size=3, seed=4), topology)
    (path,) = tmp_path.glob("shape_bank_*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="hmdiff_ros.data.shapes"):
        again = load_or_build_shape_bank(BankConfig(size=3, seed=4), topology)
    assert "cannot be read (BadZipFile" in caplog.text
    assert _same(first, again) and _same(ShapeBank.load(path), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
