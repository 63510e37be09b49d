"""``hmdiff bench``, ``hmdiff export`` and ``hmdiff build-engine``: the model's backends."""

from __future__ import annotations

import argparse
import json

from hmdiff_ros import defaults
from hmdiff_ros.cli import gpu_check
from hmdiff_ros.cli.common import (
    POSITIVE,
    STEPS,
    UsageError,
    number,
)


def add_parsers(sub) -> None:
    p = sub.add_parser("bench", help="per-stage model latency per backend (p50/p90/p99)")
    p.add_argument(
        "--backend",
        default=defaults.BACKEND,
        help="comma-separated: torch, onnxruntime, tensorrt, auto (the default: the backend the pipeline loads "
        "here; its rows name the one that ran)",
    )
    p.add_argument("--engines", default=defaults.ENGINES, help="folder of the ONNX export / TensorRT engines")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the torch backend runs")
    p.add_argument("--report", default=None, help="also write bench.md and bench.png (model p50 per backend) here")
    p.add_argument("--force", action="store_true", help="replace bench.md and bench.png in --report")
    p.add_argument("--steps", **STEPS, default=defaults.STEPS, help="DDIM steps")
    p.add_argument("--people", **number(int, 1, 64), default=1, help="batch size (people)")
    p.add_argument(
        "--hypotheses",
        **number(int, *defaults.HYPOTHESES_RANGE),
        default=defaults.HYPOTHESES,
        help="samples per person, as the pipeline draws them",
    )
    p.add_argument("--dat", choices=defaults.DAT_MODES, default=defaults.DAT_MODE)
    p.add_argument("--repeats", **POSITIVE, default=50)
    p.add_argument("--warmup", **number(int, 0), default=5, help="untimed calls before the timed ones")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("export", help="export the encoder, denoiser and unrolled samplers to ONNX")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=defaults.ENGINES, help="output folder (ONNX files and manifest.json)")
    p.add_argument("--force", action="store_true", help="replace the export in an existing, non-empty --out")
    p.add_argument(
        "--steps", default=str(defaults.STEPS), help="comma-separated step counts of the unrolled samplers, e.g. 2,4"
    )
    p.add_argument(
        "--dat",
        choices=defaults.EXPORT_DAT_MODES,
        default=defaults.DAT_MODE,
        help="DAT mode inside the unrolled samplers",
    )
    p.add_argument("--opset", **number(int, 13, 30), default=17)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("build-engine", help="build TensorRT engines from the ONNX export, on this GPU")
    p.add_argument("--engines", default=defaults.ENGINES, help="folder written by 'hmdiff export'")
    p.add_argument("--fp32", action="store_true", help="no FP16 even where the GPU has it")
    p.add_argument("--max-people", **number(int, 1, defaults.MAX_BATCH), default=16, help="largest people per call")
    p.add_argument(
        "--hypotheses",
        **number(int, *defaults.HYPOTHESES_RANGE),
        default=defaults.HYPOTHESES,
        help="hypotheses per person the engines are tuned for (the profile's optimum)",
    )
    p.add_argument(
        "--max-batch",
        **number(int, 1, defaults.MAX_BATCH * defaults.HYPOTHESES_RANGE[1]),
        default=None,
        help="largest rows per call, people x hypotheses (default: max-people x hypotheses)",
    )
    p.set_defaults(func=_cmd_build_engine)

    gpu_check.add_parser(sub)


def _cmd_bench(args: argparse.Namespace) -> int:
    from hmdiff_ros.runtime.bench import bench, check_report, write_report

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    graphs = [b for b in backends if b in ("onnxruntime", "tensorrt")]
    if args.dat == "full" and graphs:  # before any model loads
        raise ValueError(
            f"--dat full needs PyTorch's autograd, which the {graphs[0]} backend does not have; "
            "use --dat fast or off, or --backend torch"
        )
    if args.report:  # refused before the benchmark runs, not after
        check_report(args.report, force=args.force)
    rows = bench(
        backends,
        steps=args.steps,
        people=args.people,
        dat=args.dat,
        hypotheses=args.hypotheses,
        repeats=args.repeats,
        warmup=args.warmup,
        checkpoint=args.checkpoint,
        engines=args.engines,
        device=args.device,
    )
    if args.report:
        write_report(
            rows,
            args.report,
            {"steps": args.steps, "people": args.people, "hypotheses": args.hypotheses, "dat": args.dat},
            force=args.force,
        )
    if args.json:  # the contract: these keys per row, and the ratio to PyTorch where it ran beside
        keys = ("backend", "stage", "p50_ms", "p90_ms", "p99_ms", "p50_vs_torch")
        print(json.dumps([{k: r[k] for k in keys if k in r} for r in rows]))
    else:
        for r in rows:
            extra = f"  {r['fps']:6.1f} FPS  peak {r['peak_mb']:.0f} MB" if "fps" in r else ""
            extra += f"  {r['p50_vs_torch']:.2f}x PyTorch's p50" if "p50_vs_torch" in r else ""
            print(
                f"{r['backend']:<12} {r['stage']:<8} p50 {r['p50_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms{extra}"
            )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from hmdiff_ros.runtime.export import export_onnx

    try:
        steps = [int(k) for k in str(args.steps).split(",")]
    except ValueError:
        raise UsageError(f"--steps must be comma-separated step counts such as 2,4, got {args.steps!r}") from None
    for k in steps:
        why = defaults.range_error("--steps", k, defaults.STEPS_RANGE, integer=True)
        if why:
            raise UsageError(why)
    manifest = export_onnx(args.checkpoint, args.out, steps=steps, dat=args.dat, opset=args.opset, force=args.force)
    print(
        json.dumps(
            {
                "out": args.out,
                "files": sorted(manifest["files"]),
                "opset": manifest["opset"],
                "checkpoint_sha256": manifest["checkpoint_sha256"],
            }
        )
    )
    return 0


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from hmdiff_ros.runtime.tensorrt_backend import build_engines

    paths = build_engines(args.engines, not args.fp32, args.max_people, args.hypotheses, args.max_batch)
    print(json.dumps({"engines": [str(p) for p in paths]}))
    return 0
