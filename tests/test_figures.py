"""Every figure README.md and the docs quote comes from one file that ``docs/figures.sh`` writes.

The files under docs/figures/ keep each command's JSON with the command line, the date and the
machine; the quoted blocks of README.md and docs/ are rendered from them (``docs/figures.py``),
and README quotes no measured figure outside its block."""

import datetime
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _figures_module():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _figures_module()
FILES = sorted((ROOT / "docs" / "figures").glob("*.json"))
BENCH_ROW = {"backend", "stage", "p50_ms", "p90_ms", "p99_ms"}
PIPELINE_STAGE = {"backend", "stage", "people", "p50_ms", "p90_ms", "p99_ms"}
PIPELINE_RATE = {"backend", "stage", "people", "fps", "latency_p50_ms"}
FIGURE = {"mean", "ci95"}


def test_every_figure_file_says_what_ran_when_and_where():
    assert FILES, "docs/figures/ holds no figures"
    for path in FILES:
        entry = figures.load(path.stem)
        assert entry["command"].startswith("hmdiff "), (path.name, entry["command"])
        datetime.date.fromisoformat(entry["date"])
        assert re.match(r"\w+, \d+ CPUs", entry["machine"]), (path.name, entry["machine"])


@pytest.mark.parametrize("name", ["bench_steps2", "bench_torch_steps2_full"])
def test_bench_files_hold_the_rows_of_hmdiff_bench(name):
    rows = figures.load(name)["result"]
    assert rows and {r["stage"] for r in rows} == {"encoder", "model"}
    for r in rows:  # other backends' rows carry their p50 over PyTorch's in the same run
        assert set(r) == (BENCH_ROW | {"p50_vs_torch"} if r["backend"] != "torch" else BENCH_ROW), r


def test_the_pipeline_file_holds_todays_rows_of_hmdiff_bench_pipeline():
    rows = figures.load("bench_pipeline")["result"]
    for r in rows:
        assert set(r) == (PIPELINE_RATE if r["stage"] in ("frame", "stream") else PIPELINE_STAGE), r
    for people in {r["people"] for r in rows}:
        stages = {(r["backend"], r["stage"]) for r in rows if r["people"] == people}
        for backend in {b for b, _ in stages}:
            assert {(backend, "frame"), (backend, "stream"), (backend, "model")} <= stages


@pytest.mark.parametrize("name", [name for name, _ in figures.NODE_RUNS] + [f"bench_node_{d}" for d in figures.DISTROS])
def test_node_files_hold_what_hmdiff_bench_node_prints(name):
    r = figures.load(name)["result"]
    assert {"image", "fps_published", "seconds", "published", "received", "processed", "dropped", "failed"} <= set(r)
    assert {"results_per_s", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "rss_start_mib"} <= set(r)
    assert r["processed"] + r["dropped"] + r["failed"] <= r["received"] <= r["published"]


@pytest.mark.parametrize("distro", figures.DISTROS)
def test_each_distribution_file_was_measured_on_that_distribution(distro):
    """bench_node_<distro>.json says which ROS 2 its run had sourced (hmdiff bench-node records it)."""
    assert figures.load(f"bench_node_{distro}")["result"]["ros"].startswith(f"{distro}, ")


@pytest.mark.parametrize("name", ["protocol_selection", "protocol_test"])
def test_protocol_files_give_every_figure_with_its_interval(name):
    result = figures.load(name)["result"]
    assert result["sets"] and result["seeds"]
    for data in result["sets"].values():
        for figure in data["figures"].values():
            assert FIGURE <= set(figure)
            lo, hi = figure["ci95"]
            assert lo <= figure["mean"] <= hi


def test_readme_and_docs_quote_the_files_as_they_are():
    stale = figures.quote(check=True)
    assert not stale, f"run python docs/figures.py quote: {stale}"
    for page in figures.PAGES:  # each page has its blocks; none is left empty
        for m in figures.BLOCK.finditer((ROOT / page).read_text()):
            assert m["body"].strip(), (page, m["name"])
    assert "<!-- figures:readme -->" in (ROOT / "README.md").read_text()


def test_a_changed_figure_file_makes_the_quote_stale(tmp_path, monkeypatch):
    """The check compares numbers, not only the blocks' presence: one figure edited in a copy of
    the files is found."""
    copy = tmp_path / "figures"
    shutil.copytree(ROOT / "docs" / "figures", copy)
    entry = json.loads((copy / "bench_steps2.json").read_text())
    entry["result"][-1]["p50_ms"] += 1.0
    (copy / "bench_steps2.json").write_text(json.dumps(entry))
    monkeypatch.setattr(figures, "FIGURES", copy)
    stale = figures.quote(check=True)
    assert "README.md: figures:readme" in stale and "docs/model_card.md: figures:latency" in stale


def test_readme_quotes_no_measured_figure_outside_its_block():
    text = figures.BLOCK.sub("", (ROOT / "README.md").read_text())
    found = re.findall(r"\d[\d,.]*\s?(?:ms|mm|FPS|results/s)\b|\d+(?:\.\d+)?\s?%", text)
    assert not found, f"README quotes figures outside <!-- figures:readme -->: {found}"


def test_record_takes_its_options_before_or_after_the_name_and_needs_the_command(tmp_path, monkeypatch, capsys):
    """``--written`` may follow NAME (it was taken for the command's first word before); a record
    without the command after ``--`` is refused in one line."""
    monkeypatch.setattr(figures, "FIGURES", tmp_path)
    written = tmp_path / "run.json"
    written.write_text('{"passed": true}')
    assert figures.main(["record", "x", "--written", str(written), "--", "hmdiff", "bench", "--json"]) == 0
    entry = figures.load("x")
    assert entry["command"] == "hmdiff bench --json" and entry["result"] == {"passed": True}
    with pytest.raises(SystemExit) as exit_:
        figures.main(["record", "x"])
    assert exit_.value.code == 2 and "needs the command after --" in capsys.readouterr().err
