import json

import numpy as np
import pytest

from hmdiff_ros.cli import main
from hmdiff_ros.data.engine import batch_rng
from hmdiff_ros.data.store import SplitReader, write_split


def test_split_round_trip_rebuilds_the_same_inputs(engine, tmp_path):
    out = write_split(engine, tmp_path / "split", num=40, seed=9, split="test", batch=16, progress=False)
    reader = SplitReader(out)
    assert len(reader) == 40 and reader.meta["seed"] == 9 and reader.meta["split"] == "test"
    first = engine.generate(batch_rng(9, 0), 16)
    got = reader.batch(0, 16)
    np.testing.assert_array_equal(got["coarse"], first["coarse"])
    np.testing.assert_allclose(got["proxy"], first["proxy"], atol=1.0 / 255 + 1e-6)
    assert sum(len(b["coarse"]) for b in reader.batches(16)) == 40


def test_data_make_command_writes_a_readable_split(engine, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "make", "--split", "test", "--num", "12", "--seed", "2", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["num"] == 12
    assert len(SplitReader(out)) == 12


def test_bad_splits_and_arguments_give_clear_errors(engine, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SplitReader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a split written by 'hmdiff data make'"):
        SplitReader(tmp_path / "empty")
    assert main(["data", "make", "--num", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--num must be >= 1" in capsys.readouterr().err


def test_a_split_is_never_written_over_unless_forced(engine, tmp_path):
    out = write_split(engine, tmp_path / "split", num=4, seed=1, split="test", batch=4, progress=False)
    before = (out / "samples.npz").read_bytes()
    with pytest.raises(ValueError, match="not empty; use --force"):
        write_split(engine, out, num=4, seed=2, split="test", batch=4, progress=False)
    assert (out / "samples.npz").read_bytes() == before
    (out / "notes.txt").write_text("mine")
    write_split(engine, out, num=4, seed=2, split="test", batch=4, progress=False, force=True)
    assert (out / "samples.npz").read_bytes() != before and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "notes.txt", "samples.npz"]
