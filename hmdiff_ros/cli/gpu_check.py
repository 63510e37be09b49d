"""``hmdiff gpu-check``: the GPU path checked and measured in one prepared run, with a report.

On a machine with an NVIDIA GPU and a CUDA build of PyTorch it runs, in order:

1. the CPU-side capture check (:func:`~hmdiff_ros.runtime.cuda_graph.capture_safety`: the
   captured sampler on the ``meta`` device, no host reads, no host copies);
2. the CUDA-graph capture for real: :func:`~hmdiff_ros.runtime.cuda_graph.load_torch_cuda`
   (captures at load), then every bucket's graph against the eager sampler on the GPU (mm);
3. ``hmdiff bench --backend torch,onnxruntime --device cuda``: eager PyTorch, its CUDA graphs
   and ONNX Runtime, in one run;
4. ``hmdiff bench-pipeline --backend auto``: the frame's stages, one frame at a time and
   overlapped, for 1 and 3 people;

and writes ``gpu_check.json`` and ``gpu_check.md`` in ``--out`` with the device named and the
targets of the GPU path checked. Without CUDA, or with ``--dry-run``, it says so, runs the CPU
parts (1, 3 and 4 on the CPU, few repeats) and exits 0: the same code path, checked anywhere.
Each command runs as a subprocess with a time limit; one that fails is reported, the rest run.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from hmdiff_ros import defaults

REPORT_JSON, REPORT_MD = "gpu_check.json", "gpu_check.md"
TARGETS = {  # the GPU path's targets (issue: the GPU path, correct before it meets a GPU)
    "graph_model_p50_ms": 2.0,  # the model stage replayed from a CUDA graph
    "graph_speedup_vs_eager": 5.0,  # ... against eager PyTorch on the same GPU, same run
    "model_proxy_geometry_ms": 5.0,  # per frame, one person
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gpu-check",
        help="check and measure the GPU path (CUDA-graph capture, bench, bench-pipeline) and write a report",
    )
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md (made if missing)")
    p.add_argument("--force", action="store_true", help="replace a report already in --out")
    p.add_argument("--dry-run", action="store_true", help="the CPU parts only, few repeats, even where CUDA is")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds each command may run (default 240)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    out = Path(args.out)
    for name in (REPORT_JSON, REPORT_MD):
        if (out / name).exists() and not args.force:
            raise FileExistsError(f"--out '{out}' already holds {name}; pass --force to replace it")
    report = gpu_check(dry_run=args.dry_run, timeout=args.timeout)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
    (out / REPORT_MD).write_text(markdown(report))
    print(json.dumps({"report": str(out / REPORT_MD), "cuda": report["cuda"], "failed": report["failed"]}))
    return 0


def facts() -> Dict:
    import torch

    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name()
        out["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    try:
        import onnxruntime as ort

        out["onnxruntime"], out["ort_providers"] = ort.__version__, ort.get_available_providers()
    except ImportError:
        out["onnxruntime"] = None
    return out


def _run(name: str, argv: List[str], timeout: float) -> Dict:
    """``hmdiff <argv>`` in a subprocess: its JSON lines, or why it failed."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hmdiff_ros.cli", *argv], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"step": name, "argv": argv, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    rows = []
    for line in proc.stdout.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        rows.extend(value if isinstance(value, list) else [value])
    step = {"step": name, "argv": argv, "ok": proc.returncode == 0, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        step["error"] = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
    step["rows"] = rows
    return step


def capture_steps(cuda: bool) -> List[Dict]:
    """The capture check on the ``meta`` device; with ``cuda``, every bucket's graph on the GPU
    against the eager sampler there (max difference, mm)."""
    import torch

    from hmdiff_ros.model.checkpoint import load_checkpoint
    from hmdiff_ros.model.dat import DATConfig
    from hmdiff_ros.runtime.cuda_graph import BUCKETS, capture_safety, load_torch_cuda

    t0 = time.perf_counter()
    found = capture_safety(load_checkpoint()[0])
    bad = {"/".join(map(str, k)): v for k, v in found.items() if v}
    steps = [
        {
            "step": "capture-safety (meta device)",
            "ok": not bad,
            "checked": len(found),
            "problems": bad,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    ]
    if not cuda:
        return steps
    t0 = time.perf_counter()
    step = {"step": "cuda-graph capture (GPU)", "ok": False}
    try:
        model = load_torch_cuda()  # captures the default graph while loading
        enc, g = model.model.cfg.encoder, torch.Generator().manual_seed(0)
        diffs = {}
        for mode in defaults.EXPORT_DAT_MODES:
            dat = DATConfig(mode=mode)
            for people in BUCKETS:
                m = defaults.HYPOTHESES
                proxy = torch.rand(people, enc.in_channels, enc.input_size, enc.input_size, generator=g)
                prior, vis = torch.randn(people, 24, 3, generator=g) * 0.3, torch.rand(people, 24, generator=g)
                noise = torch.randn(people * m, model.num_points, 3, generator=g)
                got = model.sample(proxy, prior, vis, hypotheses=m, dat=dat, noise=noise).hypotheses
                with torch.no_grad():
                    want = model.model.sample(
                        proxy.cuda(), prior.cuda(), vis.cuda(), hypotheses=m, dat=dat, noise=noise.cuda()
                    ).hypotheses
                diffs[f"{mode}/{people}x{m}"] = round(float((got - want.cpu()).abs().max()) * 1000, 4)
        graphs = [k for s in model.samplers.values() for k, v in s.graphs.items() if isinstance(v, tuple)]
        step.update(ok=max(diffs.values()) < 0.1, max_diff_mm=diffs, graphs=len(graphs))
    except Exception as exc:  # noqa: BLE001 - the report says what failed; the other steps still run
        step["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    step["seconds"] = round(time.perf_counter() - t0, 1)
    return steps + [step]


def gpu_check(dry_run: bool = False, timeout: float = 240.0) -> Dict:
    info = facts()
    cuda = bool(info["cuda_available"]) and not dry_run
    steps = capture_steps(cuda)
    device, repeats = ("cuda", "200") if cuda else ("cpu", "3")
    steps.append(
        _run(
            "bench",
            ["bench", "--backend", "torch,onnxruntime", "--device", device, "--repeats", repeats, "--json"],
            timeout,
        )
    )
    steps.append(
        _run(
            "bench-pipeline",
            ["bench-pipeline", "--backend", "auto", "--people", "1", "3", "--repeats", "30" if cuda else "2"]
            + ["--compare", "", "--json"],
            timeout,
        )
    )
    report = {"cuda": cuda, "dry_run": dry_run, "facts": info, "steps": steps}
    if not cuda:
        report["note"] = "no CUDA here" if not info["cuda_available"] else "dry run: the CPU parts only"
    report["targets"] = targets(steps) if cuda else {}
    report["failed"] = [s["step"] for s in steps if not s["ok"]]
    return report


def _row(steps: List[Dict], name: str, **match) -> Dict | None:
    for step in steps:
        if step["step"] == name:
            for row in step.get("rows", []):
                if all(row.get(k) == v for k, v in match.items()):
                    return row
    return None


def targets(steps: List[Dict]) -> Dict:
    """The GPU targets against the measured rows (None where a row is missing)."""
    graph = _row(steps, "bench", backend="torch-cuda-graph", stage="model")
    eager = _row(steps, "bench", backend="torch-cuda", stage="model")
    out = {}
    if graph and eager:
        g, e = graph.get("p50_ms"), eager.get("p50_ms")
        out["graph_model_p50_ms"] = {
            "value": g,
            "target": TARGETS["graph_model_p50_ms"],
            "met": g is not None and g <= 2.0,
        }
        speedup = e / g if g and e else None
        out["graph_speedup_vs_eager"] = {"value": speedup, "target": 5.0, "met": speedup is not None and speedup >= 5.0}
    stages = {s: _row(steps, "bench-pipeline", stage=s, people=1) for s in ("proxy", "model", "geometry")}
    if all(stages.values()):
        total = sum(r["p50_ms"] for r in stages.values())
        out["model_proxy_geometry_ms"] = {"value": total, "target": 5.0, "met": total <= 5.0}
    prior, stream = (
        _row(steps, "bench-pipeline", stage="prior", people=1),
        _row(steps, "bench-pipeline", stage="stream", people=1),
    )
    if prior and stream:
        rate = 1000.0 / prior["p50_ms"]
        out["stream_vs_prior_alone_fps"] = {
            "value": stream["fps"],
            "target": round(rate, 1),
            "met": stream["fps"] >= 0.95 * rate,
        }
    return out


def markdown(report: Dict) -> str:
    f = report["facts"]
    where = f.get("device") or "no GPU"
    lines = [
        "# hmdiff gpu-check",
        "",
        f"{f['time_utc']} UTC, {where}"
        + (f" (compute capability {f['capability']})" if "capability" in f else "")
        + f", torch {f['torch']} (CUDA {f['torch_cuda']}), ONNX Runtime {f.get('onnxruntime')}, Python {f['python']}.",
        "",
    ]
    if report.get("note"):
        lines += [f"**{report['note']}**: the GPU steps did not run.", ""]
    lines += ["| step | ok | seconds | detail |", "|---|---|---|---|"]
    for s in report["steps"]:
        detail = (
            s.get("error")
            or (f"{s['checked']} captured configurations checked" if "checked" in s else "")
            or (
                f"max diff {max(s['max_diff_mm'].values())} mm"
                if "max_diff_mm" in s
                else f"{len(s.get('rows', []))} rows"
            )
        )
        lines.append(f"| {s['step']} | {'yes' if s['ok'] else 'NO'} | {s.get('seconds', '')} | {detail} |")
    if report["targets"]:
        lines += ["", "| target | value | bound | met |", "|---|---|---|---|"]
        for name, t in report["targets"].items():
            value = t["value"] if t["value"] is None else round(t["value"], 2)
            lines.append(f"| {name} | {value} | {t['target']} | {'yes' if t['met'] else 'NO'} |")
    for s in report["steps"]:
        if s.get("rows"):
            lines += ["", f"## {s['step']}", "", "```", *(json.dumps(r) for r in s["rows"]), "```"]
    return "\n".join(lines) + "\n"
