"""``hmdiff bench``: per-stage latency of the model (encoder, sampling with DAT) per backend.

Prints a list of ``{"backend", "stage", "p50_ms", "p90_ms", "p99_ms"}`` rows, with a
``model`` stage (encoder + sampling + DAT, one frame) for every backend, plus ``fps`` (1 /
p50 of the model stage) and ``peak_mb`` (peak resident memory of the process so far, or GPU
memory for CUDA backends); where PyTorch eager ran in the same run, the rows of the other
backends add ``p50_vs_torch``, their p50 over PyTorch's (:func:`with_torch_ratios`). Inputs: fixed random proxies and priors (batch = people, each
sampled ``hypotheses`` times, as the pipeline does), timed after warm-up, all backends in the
same run. With ``--device cuda``, the torch backend gives two rows: ``torch-cuda`` (eager) and
``torch-cuda-graph`` (the sampler replayed from CUDA graphs, :mod:`hmdiff_ros.runtime.cuda_graph`;
inputs from the CPU and results back to it, as the pipeline uses it). ``auto`` (the default)
runs the backend :func:`~hmdiff_ros.runtime.backends.load_model` picks here, as the pipeline
does, and its rows name that backend (``torch-cuda-graph`` for PyTorch in CUDA graphs), never
``auto``; a named backend never falls back.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from hmdiff_ros import defaults
from hmdiff_ros.files import made_folder
from hmdiff_ros.model.checkpoint import load_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.runtime.backends import load_model
from hmdiff_ros.runtime.cuda_graph import TorchCudaModel

log = logging.getLogger(__name__)
REPORT_FILES = ("bench.md", "bench.png")


def _peak_mb(backend: str) -> float:
    if backend in ("tensorrt", "torch-cuda", "torch-cuda-graph") and torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # kB on Linux
    except ImportError:  # pragma: no cover - not on Linux
        return float("nan")


def _percentiles(times: List[float]) -> Dict[str, float]:
    ms = np.asarray(times) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)}


def _backend_list(backends: "Sequence[str] | str") -> List[str]:
    """The backends to run: known names, each once, in the order given."""
    if isinstance(backends, str):
        backends = [b.strip() for b in backends.split(",") if b.strip()]
    names = list(backends)
    if not names:
        raise ValueError(f"--backend: no backend given; choose from {', '.join(defaults.BACKENDS)}")
    unknown = [b for b in names if b not in defaults.BACKENDS]
    if unknown:
        raise ValueError(f"--backend: unknown backends {unknown}; available: {list(defaults.BACKENDS)}")
    unique = list(dict.fromkeys(names))
    if len(unique) < len(names):
        log.warning(
            "--backend lists %s more than once: each backend is run once",
            sorted({b for b in names if names.count(b) > 1}),
        )
    return unique


def check_device(device: str) -> None:
    """A ``ValueError`` naming ``--device`` unless it is ``cpu``, or ``cuda`` with CUDA usable here."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        why = "built without CUDA" if torch.version.cuda is None else "no GPU found"
        raise ValueError(f"--device cuda: CUDA is not available here (torch {torch.__version__}, {why})")


def bench(
    backends: Sequence[str] = (defaults.BACKEND,),
    steps: int = defaults.STEPS,
    people: int = 1,
    dat: str = "fast",
    hypotheses: int = defaults.HYPOTHESES,
    repeats: int = 50,
    warmup: int = 5,
    checkpoint: str | None = None,
    engines: str = defaults.ENGINES,
    device: str = "cpu",
) -> List[Dict]:
    """``device``: where the torch backend runs (``cpu`` or ``cuda``); tensorrt always runs on
    the GPU and onnxruntime on its best execution provider. ``backends``: names, each run once
    in the order given (a repeated one is run once, with a warning); a string is split at
    commas. ``auto``: the backend the pipeline loads here (see the module docstring), named
    in its rows by what ran; run once when a named backend is the same. Everything is checked
    before anything is loaded."""
    backends = _backend_list(backends)
    check_device(device)
    if people < 1 or steps < 1 or repeats < 1 or hypotheses < 1 or warmup < 0:
        raise ValueError(
            f"people, steps, hypotheses and repeats must be >= 1 and warmup >= 0, got people={people}, "
            f"steps={steps}, hypotheses={hypotheses}, repeats={repeats}, warmup={warmup}"
        )
    model, _ = load_checkpoint(checkpoint)  # for the input sizes
    g = torch.Generator().manual_seed(0)
    proxy = torch.rand(
        people, model.cfg.encoder.in_channels, model.cfg.encoder.input_size, model.cfg.encoder.input_size, generator=g
    )
    prior = torch.randn(people, 24, 3, generator=g) * 0.3
    vis = torch.ones(people, 24)
    rows = []
    runs = []  # (row name, model, device of its inputs)
    for backend in backends:
        if backend == "auto":
            name, model = _auto(checkpoint, engines, steps, dat)
            if name in [r[0] for r in runs]:
                log.warning("--backend auto loads %s here, which is listed too: it is run once", name)
                continue
            runs.append((name, model, torch.device("cpu")))
            continue
        model = load_model(backend, checkpoint, engines, fallback=False, steps=(steps,))
        dev = torch.device(device if backend == "torch" else "cpu")
        if backend == "torch":
            model = model.to(dev)
        # the row names the backend that ran (fallback=False: the asked one, or an error above)
        name = model.backend if dev.type == "cpu" else f"{model.backend}-{dev.type}"
        if name in [r[0] for r in runs]:  # 'auto' before it loaded the same
            log.warning("--backend lists %s, which auto loaded before it: it is run once", backend)
            continue
        runs.append((name, model, dev))
        if backend == "torch" and dev.type == "cuda":  # beside eager: the sampler in CUDA graphs
            runs.append(("torch-cuda-graph", TorchCudaModel(model, dev), torch.device("cpu")))
    for name, model, dev in runs:
        x, u, w = proxy.to(dev), prior.to(dev), vis.to(dev)
        xe = proxy.to("cuda") if name.startswith("torch-cuda") else x  # the encoder where its weights are
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        enc, total = [], []
        with torch.no_grad():
            for i in range(warmup + repeats):
                sync()
                t0 = time.perf_counter()
                model.encoder(xe)
                sync()
                t1 = time.perf_counter()
                model.sample(
                    x,
                    u,
                    w,
                    steps=steps,
                    dat=DATConfig(mode=dat),
                    hypotheses=hypotheses,
                    generator=g if dev.type == "cpu" else None,
                )
                sync()
                t2 = time.perf_counter()
                if i >= warmup:
                    enc.append(t1 - t0)
                    total.append(t2 - t1)  # sample() runs the encoder too: the whole model
        rows.append({"backend": name, "stage": "encoder", **_percentiles(enc)})
        model_row = {"backend": name, "stage": "model", **_percentiles(total)}
        model_row["fps"] = round(1000.0 / model_row["p50_ms"], 1)
        model_row["peak_mb"] = _peak_mb(name)
        rows.append(model_row)
    return with_torch_ratios(rows)


def with_torch_ratios(rows: List[Dict]) -> List[Dict]:
    """``rows`` with ``p50_vs_torch`` on every row of another backend where PyTorch eager ran in
    the same run (``torch``, or ``torch-cuda`` with ``--device cuda``): its p50 divided by
    PyTorch's p50 of the same stage (below 1: faster than PyTorch). Both come from one run on
    one machine, so the ratio holds where the absolute times of a shared machine do not."""
    eager = {r["stage"]: r["p50_ms"] for r in rows if r["backend"] in ("torch", "torch-cuda")}
    for r in rows:
        if r["backend"] not in ("torch", "torch-cuda") and eager.get(r["stage"]):
            r["p50_vs_torch"] = round(r["p50_ms"] / eager[r["stage"]], 3)
    return rows


def _auto(checkpoint, engines, steps: int, dat: str):
    """``(row name, model)`` of ``--backend auto``: what :func:`load_model` picks here, as the
    pipeline loads it (PyTorch for full DAT, which only it runs), named by what ran: the
    concrete backend, ``torch-cuda-graph`` for PyTorch in CUDA graphs on the GPU."""
    model = load_model("torch" if dat == "full" else "auto", checkpoint, engines, steps=(steps,))
    name = "torch-cuda-graph" if isinstance(model, TorchCudaModel) else model.backend
    log.info(
        "--backend auto: %s runs%s",
        name,
        f" ({'; '.join(model.fallback_reasons)})" if getattr(model, "fallback_reasons", None) else "",
    )
    return name, model


PIPELINE_STAGES = ("prior", "proxy", "encoder", "sampling", "dat", "model", "geometry", "total")


def bench_pipeline(pipe, image: np.ndarray, repeats: int = 20, warmup: int = 3, boxes=None) -> Dict:
    """Per-stage latency of the whole frame pipeline on one image, and end-to-end FPS
    (``boxes``: person boxes for the pipeline, as a detector gives them; None: the prior's one).

    As the pipeline runs them: ``prior`` (pose prior), ``proxy`` (crop observation + proxy
    input), ``model`` (encoder + sampling + DAT: the model call), ``geometry`` (camera
    translation, full mesh) and ``total`` (the pipeline call). The model re-timed in isolation on
    the inputs the pipeline built: ``encoder`` (once per person, as sampling runs it) and, for
    the eager PyTorch backend, ``sampling`` (the DDIM loop without DAT, encoder excluded) and
    ``dat`` (what DAT adds to it); a graph backend runs sampling and DAT in one call, which has
    no such split. p50/p90/p99 in ms. ``backend``: the one the pipeline's model really runs on.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    model, cfg = pipe.model, pipe.cfg
    eager = getattr(model, "backend", None) == "torch"
    times: Dict[str, List[float]] = {k: [] for k in PIPELINE_STAGES if eager or k not in ("sampling", "dat")}
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        frame = pipe.run(image, boxes=boxes)
        total = time.perf_counter() - t0
        if not frame.people:
            raise ValueError("no person found in the benchmark image")
        inputs = frame.model_inputs
        proxy, prior, vis = (torch.as_tensor(x) for x in (inputs.proxy, inputs.prior_xyz, inputs.prior_vis))
        with torch.no_grad():
            t0 = time.perf_counter()
            model.encode(proxy, prior, vis)
            t1 = time.perf_counter()
            if eager:
                model.sample(proxy, prior, vis, steps=cfg.steps, dat=DATConfig(mode="off"), hypotheses=cfg.hypotheses)
                t2 = time.perf_counter()
                model.sample(proxy, prior, vis, steps=cfg.steps, dat=cfg.dat, hypotheses=cfg.hypotheses)
                t3 = time.perf_counter()
        if i < warmup:
            continue
        for k in ("prior", "proxy", "model", "geometry"):
            times[k].append(frame.timings[k])
        times["encoder"].append(t1 - t0)
        if eager:
            times["sampling"].append(max(0.0, (t2 - t1) - (t1 - t0)))
            times["dat"].append(max(0.0, (t3 - t2) - (t2 - t1)))
        times["total"].append(total)
    stages = [{"stage": k, **_percentiles(v)} for k, v in times.items()]
    fps = 1000.0 / float(np.median(np.asarray(times["total"]) * 1000.0))
    return {
        "backend": getattr(model, "backend", None),  # what ran (load_model may have fallen back)
        "stages": stages,
        "fps": round(fps, 1),
        "people": len(frame.people),
        "steps": cfg.steps,
        "dat": cfg.dat.mode,
        "hypotheses": cfg.hypotheses,
        "threads": torch.get_num_threads(),
    }


def tiled_people(image: np.ndarray, people: int):
    """``(image, boxes)`` with ``people`` people: the image repeated side by side, one box per
    copy (a detector's boxes); one person: the image itself, found by the prior (no boxes)."""
    if people < 1:
        raise ValueError(f"people must be >= 1, got {people}")
    if people == 1:
        return image, None
    h, w = image.shape[:2]
    boxes = [np.array([i * w, 0, (i + 1) * w, h], dtype=np.float64) for i in range(people)]
    return np.ascontiguousarray(np.concatenate([image] * people, axis=1)), boxes


def pipeline_rows(result: Dict) -> List[Dict]:
    """The rows of one :func:`bench_pipeline` result: per stage ``{"backend", "stage",
    "people", "p50_ms", "p90_ms", "p99_ms"}``, then ``{"backend", "stage": "frame", "people",
    "fps", "latency_p50_ms"}`` (the whole pipeline call; FPS of back-to-back frames) and, where
    the result has ``"stream"`` (:func:`hmdiff_ros.pipeline.stream.stream_figures`), the same for
    ``"stage": "stream"`` (that frame streamed with overlapped stages: more frames per second,
    each frame's latency from its arrival to its result)."""
    base = {"backend": result["backend"]}
    rows = [
        {**base, "stage": r["stage"], "people": result["people"], **{k: r[k] for k in ("p50_ms", "p90_ms", "p99_ms")}}
        for r in result["stages"]
        if r["stage"] != "total"
    ]
    total = next(r for r in result["stages"] if r["stage"] == "total")
    rows.append(
        {**base, "stage": "frame", "people": result["people"], "fps": result["fps"], "latency_p50_ms": total["p50_ms"]}
    )
    stream = result.get("stream")  # pipeline.stream.stream_figures, where measured
    if stream is not None:
        row = {**base, "stage": "stream", "people": result["people"], "fps": stream["fps"]}
        rows.append({**row, "latency_p50_ms": stream["p50_ms"]})
    return rows


def write_pipeline_report(rows: List[Dict], out: "str | Path", settings: Dict, force: bool = False) -> None:
    """``bench.md`` (every row) and ``bench.png`` (p50 per stage, per number of people) of
    ``hmdiff bench-pipeline`` in folder ``out``, refused and written as :func:`write_report`."""
    import platform

    out = check_report(out, force)
    lines = [
        "# hmdiff bench-pipeline",
        "",
        f"{settings['image']}; {settings['steps']} DDIM steps, {settings['hypotheses']} hypotheses, "
        f"DAT {settings['dat']}; {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads",
        "",
        "| backend | people | stage | p50 ms | p90 ms | p99 ms | FPS |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["stage"] in ("frame", "stream"):
            lines.append(f"| {r['backend']} | {r['people']} | {r['stage']} | {r['latency_p50_ms']} | | | {r['fps']} |")
        else:
            lines.append(
                f"| {r['backend']} | {r['people']} | {r['stage']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | |"
            )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plot(ax) -> None:
        stages = ["prior", "proxy", "model", "geometry"]  # what a frame is made of (encoder ... dat: inside model)
        groups = sorted({(r["backend"], r["people"]) for r in rows})
        bottom = np.zeros(len(groups))
        for stage in stages:
            p50 = np.array(
                [
                    next((r["p50_ms"] for r in rows if (r["backend"], r["people"]) == g and r["stage"] == stage), 0.0)
                    for g in groups
                ]
            )
            ax.bar([f"{b}\n{n} people" for b, n in groups], p50, bottom=bottom, label=stage)
            bottom += p50
        ax.set_ylabel("p50 per frame (ms)")
        ax.set_title("frame pipeline, per stage")
        ax.legend(fontsize=7)

    with made_folder(out):
        _write_report_files(out, lines, plot, plt)


def check_report(out: "str | Path", force: bool = False) -> Path:
    """Refuse a report folder ``out`` that is a file, or that already holds ``bench.md`` or
    ``bench.png`` unless ``force`` (call it before benchmarking, so that a refusal comes first)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--report '{out}' is an existing file; expected a folder for bench.md and bench.png")
    if not force:
        for name in REPORT_FILES:
            if (out / name).exists():
                raise ValueError(
                    f"--report: '{out / name}' already exists; use --force to replace it or choose another --report folder"
                )
    return out


def write_report(rows: List[Dict], out: "str | Path", settings: Dict, force: bool = False) -> None:
    """``bench.md`` (every row, with FPS and peak memory) and ``bench.png`` (model p50 per
    backend) in folder ``out`` (made if needed). Existing files of those names are refused
    unless ``force`` (:func:`check_report`); a failure leaves neither file half written, and
    no folder it made."""
    import platform

    out = check_report(out, force)
    lines = [
        "# hmdiff bench",
        "",
        f"{settings['steps']} DDIM steps, {settings['people']} person(s) x {settings.get('hypotheses', 1)} "
        f"hypotheses, DAT {settings['dat']}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "",
        "| backend | stage | p50 ms | p90 ms | p99 ms | FPS | peak MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['stage']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r.get('fps', '')} | {r.get('peak_mb', '')} |"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plot(ax) -> None:
        model = [r for r in rows if r["stage"] == "model"]
        ax.bar([r["backend"] for r in model], [r["p50_ms"] for r in model], color="#4a7fb5")
        ax.set_ylabel("model p50 (ms)")
        ax.set_title("encoder + sampling + DAT, one frame")

    with made_folder(out):
        _write_report_files(out, lines, plot, plt)


def _write_report_files(out: Path, lines: List[str], plot, plt) -> None:
    tmp_md, tmp_png = out / ".bench.md.tmp", out / ".bench.png.tmp"
    try:
        tmp_md.write_text("\n".join(lines) + "\n")
        fig, ax = plt.subplots(figsize=(5, 3))
        try:
            plot(ax)
            fig.tight_layout()
            fig.savefig(tmp_png, dpi=100, format="png")
        finally:
            plt.close(fig)
        os.replace(tmp_md, out / "bench.md")
        os.replace(tmp_png, out / "bench.png")
    finally:
        tmp_md.unlink(missing_ok=True)
        tmp_png.unlink(missing_ok=True)
