"""The default test split is held out from training: its bodies are not training bodies (no
sample's phenotypes equal any training-bank shape's) and its poses and cameras come from a
seed space no training stream uses; ``meta.json`` says so. Training engines and streams
never draw a test-bank body."""

import json

import numpy as np
import pytest

from hmdiff_ros.cli import main
from hmdiff_ros.data.engine import SyntheticConfig, SyntheticDataset, batch_rng, stream_spawn_key
from hmdiff_ros.data.shapes import TEST_BANK, BankConfig, load_or_build_shape_bank
from hmdiff_ros.data.store import SplitReader


def _rows_in(rows: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """For each row of ``rows`` (N, 6): whether it equals some row of ``bank`` (S, 6) exactly."""
    return (rows[:, None, :] == bank[None, :, :]).all(-1).any(1)


@pytest.fixture(scope="module")
def held_out(engine, tmp_path_factory):
    """The default test split and the test bank, made in an empty cache folder; the training
    bank is the ``engine`` fixture's (made before the cache folder moves)."""
    from hmdiff_ros.model.evaluate import DEFAULT_TEST_SPLIT, default_test_split

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HMDIFF_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        folder = default_test_split()
        test_bank = load_or_build_shape_bank(TEST_BANK)
        assert default_test_split() == folder  # made once, then read from the cache
    return SplitReader(folder), test_bank, DEFAULT_TEST_SPLIT


def test_the_default_test_split_draws_no_training_body(held_out, engine):
    reader, test_bank, spec = held_out
    train = engine.bank.phenotypes
    shapes = reader.arrays["shape"]
    assert len(reader) == spec["num"] and engine.cfg.bank == BankConfig()
    assert not _rows_in(shapes, train).any(), "a test sample has a training body"
    assert _rows_in(shapes, test_bank.phenotypes).all(), "every test sample has a test-bank body"
    assert not _rows_in(test_bank.phenotypes, train).any()
    gap = np.abs(test_bank.phenotypes[:, None] - train[None]).max(-1).min()
    assert gap > 1e-4, "no test body is a near copy of a training body either"
    assert len(np.unique(shapes, axis=0)) > 200, "hundreds of distinct test bodies"


def test_the_default_test_split_says_it_is_held_out(held_out, engine):
    reader, test_bank, spec = held_out
    meta = reader.meta
    assert reader.held_out and meta["held_out"] is True
    assert meta["bodies"] == {
        "role": "test",
        "size": TEST_BANK.size,
        "seed": TEST_BANK.seed,
        "phenotype_seed": TEST_BANK.phenotype_seed,
        "phenotypes_sha1": test_bank.phenotypes_sha1(),
    }
    assert meta["bodies"]["phenotypes_sha1"] != engine.bank.phenotypes_sha1()
    assert TEST_BANK.phenotype_seed != BankConfig().phenotype_seed
    assert meta["stream"]["role"] == "test" and meta["stream"]["seed"] == spec["seed"]
    assert meta["stream"]["spawn_key"] == list(stream_spawn_key("test")) != []
    assert meta["config"]["bank"]["role"] == "test"


def test_held_out_poses_and_cameras_are_not_a_training_batch(held_out, engine):
    """The split's first batch is not the training stream's batch of the same seed and index
    (nor its poses), and the training stream is what it always was."""
    reader, _, spec = held_out
    n = reader.meta["stream"]["batch"]
    training = engine.generate(batch_rng(spec["seed"], 0), n)  # the training stream's batch 0 of that seed
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731 - one row per sample
    assert not _rows_in(flat(reader.arrays["pose"][:n]), flat(training["pose"])).any()
    assert not np.isin(reader.arrays["K"][:n, 0, 0], training["K"][:, 0, 0]).any()
    plain = np.random.default_rng(np.random.SeedSequence([3, 5])).random(4)
    np.testing.assert_array_equal(batch_rng(3, 5).random(4), plain)
    assert not np.isin(batch_rng(3, 5, "test").random(4), plain).any()


def test_training_engines_never_pick_test_bodies(held_out, engine, batches):
    """The training engine (the default config, as ``hmdiff train`` builds it) draws only
    training-bank bodies; a training stream over the test bank is refused."""
    _, test_bank, _ = held_out
    shapes = np.concatenate([b["shape"] for b in batches])  # 2,048 training-engine samples
    assert _rows_in(shapes, engine.bank.phenotypes).all()
    assert not _rows_in(shapes, test_bank.phenotypes).any()
    assert SyntheticConfig().bank.role == "train"
    with pytest.raises(ValueError, match="role must be 'train', got 'test'"):
        SyntheticDataset(SyntheticConfig(bank=TEST_BANK), 8)
    with pytest.raises(ValueError, match="role must be one of train, test"):
        BankConfig(role="val")


def test_data_make_holds_out_test_splits_and_not_others(engine, held_out, tmp_path, capsys):
    """``--split test`` is held out by default; ``--split val`` uses the training bank and
    streams (the same samples as the training engine's batch); ``--bodies`` chooses."""
    _, test_bank, _ = held_out
    made = {}
    for name, args in {
        "test": ["--split", "test"],
        "val": ["--split", "val"],
        "val_held_out": ["--split", "val", "--bodies", "test"],
    }.items():
        out = tmp_path / name
        assert main(["data", "make", *args, "--num", "6", "--seed", "4", "--out", str(out)]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["num"] == 6
        made[name] = SplitReader(out)
    assert made["test"].held_out and made["val_held_out"].held_out and not made["val"].held_out
    assert made["val"].meta["bodies"]["role"] == "train" and made["val"].meta["stream"]["spawn_key"] == []
    assert made["test"].meta["bodies"]["phenotypes_sha1"] == test_bank.phenotypes_sha1()
    np.testing.assert_array_equal(made["val"].arrays["coarse"], engine.generate(batch_rng(4, 0), 6)["coarse"])
    assert not _rows_in(made["test"].arrays["shape"], engine.bank.phenotypes).any()
