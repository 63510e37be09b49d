"""The one source of the figures README.md and the docs quote.

``docs/figures.sh`` runs each measuring command through ``record``, which keeps the command's
JSON in ``docs/figures/<name>.json`` with the command line, the date and the machine::

    python docs/figures.py record bench_steps2 -- hmdiff bench --backend torch,onnxruntime --json

and then ``quote``, which rewrites every block of README.md and docs/*.md written as::

    <!-- figures:NAME -->
    ...
    <!-- /figures:NAME -->

from those files (``NAME`` is one of :data:`BLOCKS`). ``quote --check`` changes nothing and
exits 1 where a block differs from its files (``tests/test_figures.py`` runs it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
PAGES = ("README.md", "docs/model_card.md", "docs/bench/soak.md", "docs/eval_real.md", "docs/ros.md")
BLOCK = re.compile(r"(<!-- figures:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)
RECORD_KEYS = {"command", "date", "machine", "result"}


# ---- recording ----------------------------------------------------------------------------------


def machine() -> str:
    """The machine in one line: architecture, cores, CPU model, Python and the libraries that time."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu})", f"Python {platform.python_version()}"]
    for module in ("torch", "onnxruntime"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


def shown(arg: str) -> str:
    """A command's argument as the docs show it: a path beside the repository as ``../name``, one
    in the home folder as ``~/name`` (the same on every machine that renders the figures)."""
    if not os.path.isabs(arg):
        return arg
    for base, short in ((ROOT.parent, ".."), (Path.home(), "~")):
        try:
            return f"{short}/{Path(arg).relative_to(base).as_posix()}"
        except ValueError:
            pass
    return arg


def record(name: str, command: list, written: "str | None" = None) -> Path:
    """Run ``command``, keep its JSON (the last line of its output) with what ran, when, where.

    ``written``: the command ran apart (the hour of ``bench-node --faults``) and wrote its JSON
    there, today, on this machine; it is kept as it is, with ``command`` (not run again).
    """
    if written is None:
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        result = json.loads(Path(written).read_text())
    path = FIGURES / f"{name}.json"
    entry = {
        "command": " ".join(shown(arg) for arg in command),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "result": result,
    }
    path.write_text(json.dumps(entry, indent=1) + "\n")
    return path


def load(name: str) -> dict:
    """A recorded figure file: {"command", "date", "machine", "result"}."""
    path = FIGURES / f"{name}.json"
    entry = json.loads(path.read_text())
    if not isinstance(entry, dict) or set(entry) != RECORD_KEYS:
        raise ValueError(f"{path}: expected the keys {sorted(RECORD_KEYS)}, found {sorted(entry)}")
    return entry


# ---- the quoted blocks --------------------------------------------------------------------------


def _ci(figure: dict, digits: int = 1) -> str:
    lo, hi = figure["ci95"]
    return f"{figure['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _when(entry: dict) -> str:
    return f"{entry['date']}; {entry['machine'].split(' (')[0]}"


def _rows(entry: dict, **match) -> dict:
    """The bench rows whose fields equal ``match``, by (backend, stage)."""
    rows = [r for r in entry["result"] if all(r.get(k) == v for k, v in match.items())]
    return {(r["backend"], r["stage"]): r for r in rows}


def readme() -> list:
    """README's table: accuracy on the test sets beside the prior and the lifter, then speed."""
    test = load("protocol_test")
    sets = test["result"]["sets"]
    syn, study, real = (sets[k]["figures"] for k in ("synthetic-test", "study-test", "real"))
    near = sets["study-test"]["strata"]["prior_nearly_right"]["figures"]
    when = _when(test)
    lines = [
        "| what | HMDiff | the prior alone | the MLP lifter | command, file, date and machine |",
        "| --- | --- | --- | --- | --- |",
        f"| synthetic test set ({sets['synthetic-test']['num_samples']} held-out samples), MPJPE / PA-MPJPE mm, "
        f"mean [95 % interval] | {_ci(syn['mpjpe_mm'])} / {_ci(syn['pa_mpjpe_mm'])} | "
        f"{syn['prior_mpjpe_mm']['mean']:.1f} / {syn['prior_pa_mpjpe_mm']['mean']:.1f} | "
        f"{syn['lifter_mpjpe_mm']['mean']:.1f} / {syn['lifter_pa_mpjpe_mm']['mean']:.1f} | "
        f"`{test['command']}`, [protocol_test.json](docs/figures/protocol_test.json), {when} |",
        f"| MediaPipe's own outputs on {sets['study-test']['num_samples']:,} rendered held-out people, PA-MPJPE mm "
        f"(where MediaPipe is nearly right) | {_ci(study['pa_mpjpe_mm'])} ({near['pa_mpjpe_mm']['mean']:.1f}); "
        f"paired difference {_ci(study['delta_pa_mpjpe_mm'])} | {study['prior_pa_mpjpe_mm']['mean']:.1f} "
        f"({near['prior_pa_mpjpe_mm']['mean']:.1f}) | {study['lifter_pa_mpjpe_mm']['mean']:.1f} "
        f"({near['lifter_pa_mpjpe_mm']['mean']:.1f}) | the same run |",
        f"| real frames ({sets['real']['num_frames_3d']} with 3D truth), MPJPE / PA-MPJPE mm; PCK@0.1 | "
        f"{_ci(real['mpjpe_mm'])} / {_ci(real['pa_mpjpe_mm'])}; {real['pck_at_0.1']['mean']:.3f}; "
        f"paired PA difference {_ci(real['delta_pa_mpjpe_mm'])} | {real['prior_mpjpe_mm']['mean']:.1f} / "
        f"{real['prior_pa_mpjpe_mm']['mean']:.1f}; {real['prior_pck_at_0.1']['mean']:.3f} | "
        f"{real['lifter_mpjpe_mm']['mean']:.1f} / {real['lifter_pa_mpjpe_mm']['mean']:.1f} | the same run |",
    ]
    bench = load("bench_steps2")
    model = _rows(bench)
    ort, torch = model[("onnxruntime", "model")]["p50_ms"], model[("torch", "model")]["p50_ms"]
    lines.append(
        f"| model latency, 1 person × 4 hypotheses, p50 | ONNX Runtime {ort:.1f} ms, PyTorch eager {torch:.1f} ms "
        f"(ONNX Runtime {torch / ort:.2f}× as fast, one run) | | | `{bench['command']}`, "
        f"[bench_steps2.json](docs/figures/bench_steps2.json), {_when(bench)} |"
    )
    pipe = load("bench_pipeline")
    for people in sorted({r["people"] for r in pipe["result"]}):
        rows = _rows(pipe, people=people)
        backends = sorted({b for b, _ in rows}, key=lambda b: b == "torch")
        text = "; ".join(
            f"{b}: {rows[(b, 'frame')]['fps']:.1f} FPS one frame at a time, {rows[(b, 'stream')]['fps']:.1f} "
            f"streamed (latency {rows[(b, 'stream')]['latency_p50_ms']:.0f} ms p50)"
            for b in backends
        )
        lines.append(
            f"| frame pipeline on the demo photo, {people} {'person' if people == 1 else 'people'} "
            f"| {text} | | | `{pipe['command']}`, [bench_pipeline.json](docs/figures/bench_pipeline.json), "
            f"{_when(pipe)} |"
        )
    if (FIGURES / "soak_humble.json").exists():
        soak_run = load("soak_humble")
        lines.append(
            f"| the ROS 2 node (Humble) under camera faults | {_soak_verdict(soak_run)} | | | "
            f"`{soak_run['command']}`, [docs/bench/soak.md](docs/bench/soak.md), {_when(soak_run)} |"
        )
    return lines


def protocol_test() -> list:
    """The model card's test-set table: the markdown ``hmdiff eval-protocol --report`` wrote."""
    entry = load("protocol_test")
    table = (FIGURES / "protocol_test.md").read_text().strip().splitlines()
    return table + ["", f"`{entry['command']}`; {_when(entry)}."]


def latency() -> list:
    """The model card's latency sentence."""
    bench = load("bench_steps2")
    model = _rows(bench)
    ort, torch = model[("onnxruntime", "model")]["p50_ms"], model[("torch", "model")]["p50_ms"]
    full = _rows(load("bench_torch_steps2_full"))[("torch", "model")]["p50_ms"]
    return [
        f"`{bench['command']}` ({_when(bench)}; `docs/figures/bench_steps2.json`): the whole model "
        f"(encoder + 2-step sampling of 4 hypotheses, DAT off) **{ort:.1f} ms** p50 on ONNX Runtime, "
        f"{torch:.1f} ms in PyTorch eager ({torch / ort:.2f}× in one run); with full DAT (PyTorch) {full:.1f} ms "
        f"(`docs/figures/bench_torch_steps2_full.json`)."
    ]


def _soak_verdict(entry: dict) -> str:
    r = entry["result"]
    verdict = r["verdict"]
    if not verdict["passed"]:
        return "**FAIL** (" + "; ".join(verdict["failures"]) + ")"
    recovery = max(p["recovery_max_s"] or 0 for p in r["phases"])
    return (
        f"**PASS** over {r['minutes']:.0f} min: {r['node']['failed']} failed frames, {r['unpublished_stamps']} results "
        f"with a wrong stamp, recovery at most {recovery:.2f} s, memory growth {r['memory']['rss_growth_mib']:.1f} MiB"
    )


def soak() -> list:
    """The last hour of ``hmdiff bench-node --faults``: its verdict, in one line."""
    entry = load("soak_humble")
    return [f"`{entry['command']}`: {_soak_verdict(entry)} ({_when(entry)}; `docs/figures/soak_humble.json`)."]


def eval_real() -> list:
    """docs/eval_real.md's table: ``hmdiff eval-real`` per data set, the prior and the lifter beside."""
    entry = load("eval_real")
    r = entry["result"]
    lines = [
        "| data | frames / people | missed | MPJPE (prior, lifter) | PA-MPJPE (prior, lifter) | PCK@0.1 (prior) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, d in r["per_dataset"].items():
        if "mpjpe_mm" in d:
            lines.append(
                f"| {name} | {d['frames']} | {d['missed']} | {d['mpjpe_mm']:.1f} ({d['prior_mpjpe_mm']:.1f}, "
                f"{d['lifter_mpjpe_mm']:.1f}) | {d['pa_mpjpe_mm']:.1f} ({d['prior_pa_mpjpe_mm']:.1f}, "
                f"{d['lifter_pa_mpjpe_mm']:.1f}) | |"
            )
        else:
            lines.append(
                f"| {name} | {d['people']} | {d['missed']} | | | {d['pck_at_0.1']:.3f} ({d['prior_pck_at_0.1']:.3f}) |"
            )
    lines.append(
        f"| **all** | {r['num_frames_3d']} / {r['num_people_2d']} | | **{r['mpjpe_mm']:.1f}** "
        f"({r['prior_mpjpe_mm']:.1f}, {r['lifter_mpjpe_mm']:.1f}) | **{r['pa_mpjpe_mm']:.1f}** "
        f"({r['prior_pa_mpjpe_mm']:.1f}, {r['lifter_pa_mpjpe_mm']:.1f}) | **{r['pck_at_0.1']:.3f}** "
        f"({r['prior_pck_at_0.1']:.3f}) |"
    )
    return lines + ["", f"`{entry['command']}`; {_when(entry)}."]


NODE_RUNS = (  # docs/ros.md's table: the figure files of `hmdiff bench-node` and what each ran
    ("bench_node_demo", "demo photo"),
    ("bench_node_video", "`single_person_demo.mp4`"),
    ("bench_node_video_torch", "the same video, `--param backend:=torch` (PyTorch eager)"),
)


def bench_node() -> list:
    """docs/ros.md's table: the node under a camera-rate stream, per ``hmdiff bench-node`` run."""
    lines = [
        "| stream | published | node received | processed | dropped | failed | results/s | "
        "latency p50 / p90 / p99 (ms) | node memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    commands = []
    for name, what in NODE_RUNS:
        entry = load(name)
        r = entry["result"]
        lines.append(
            f"| {what}, {r['image']}, {r['fps_published']:g} FPS for {r['seconds']:g} s | {r['published']} | "
            f"{r['received']} | {r['processed']} | {r['dropped']} | {r['failed']} | {r['results_per_s']:.1f} | "
            f"{r['latency_p50_ms']:.0f} / {r['latency_p90_ms']:.0f} / {r['latency_p99_ms']:.0f} | "
            f"{r['rss_start_mib']:.0f} → {r['rss_end_mib']:.0f} MiB |"
        )
        commands.append(f"`{entry['command']}`")
    return lines + ["", "; ".join(commands) + f" ({_when(entry)}; `docs/figures/bench_node_*.json`)."]


DISTROS = ("humble", "jazzy")  # `bash docs/figures.sh --distros`: bench_node_<distro>.json, one sitting


def bench_node_distros() -> list:
    """docs/ros.md's Humble-beside-Jazzy table: the same ``hmdiff bench-node`` run on each core,
    one after the other, and Jazzy's figures as a share of Humble's."""
    entries = {d: load(f"bench_node_{d}") for d in DISTROS}
    lines = [
        "| ROS 2 | stream | received / processed / dropped / failed | results/s | latency p50 / p90 / p99 (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d, entry in entries.items():
        r = entry["result"]
        lines.append(
            f"| {r.get('ros', d)} | {r['source'].split('/')[-1]}, {r['image']}, {r['fps_published']:g} FPS for "
            f"{r['seconds']:g} s | {r['received']} / {r['processed']} / {r['dropped']} / {r['failed']} | "
            f"{r['results_per_s']:.1f} | {r['latency_p50_ms']:.0f} / {r['latency_p90_ms']:.0f} / "
            f"{r['latency_p99_ms']:.0f} |"
        )
    h, j = (entries[d]["result"] for d in DISTROS)
    return lines + [
        "",
        f"Jazzy against Humble: results/s {j['results_per_s'] / h['results_per_s'] - 1:+.1%}, latency p50 "
        f"{j['latency_p50_ms'] / h['latency_p50_ms'] - 1:+.1%}. `bash docs/figures.sh --real ../shared/data/eval-real "
        f"--distros` (each: `{entries['humble']['command']}` with that core sourced; {_when(entries['jazzy'])}; "
        "`docs/figures/bench_node_humble.json`, `bench_node_jazzy.json`).",
    ]


BLOCKS = {
    "readme": readme,
    "protocol_test": protocol_test,
    "latency": latency,
    "soak": soak,
    "eval_real": eval_real,
    "bench_node": bench_node,
    "bench_node_distros": bench_node_distros,
}


def quote(check: bool = False) -> list:
    """Rewrite (or, with ``check``, compare) every figures block of :data:`PAGES`; the stale ones."""
    stale = []
    for page in PAGES:
        path = ROOT / page
        text = path.read_text()

        def fill(m, page=page):
            body = "\n".join(BLOCKS[m["name"]]()) + "\n"
            if body != m["body"]:
                stale.append(f"{page}: figures:{m['name']}")
            return m.group(1) + body + m.group(4)

        new = BLOCK.sub(fill, text)
        if new != text and not check:
            path.write_text(new)
    return stale


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []  # record's command, after --
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("record", help="run the command after -- and keep its JSON in docs/figures/NAME.json")
    p.add_argument("name")
    p.add_argument("--written", metavar="FILE.json", help="the command ran apart today and wrote its JSON there")
    p = sub.add_parser("quote", help="rewrite the figures blocks of README.md and docs/ from the files")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 where a block differs")
    args = parser.parse_args(argv)
    if args.what == "record":
        if not command:
            parser.error("record needs the command after --, e.g. record NAME -- hmdiff bench --json")
        print(record(args.name, command, args.written))
        return 0
    stale = quote(check=args.check)
    for block in stale:
        print(f"{'differs from its files' if args.check else 'rewritten'}: {block}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
