"""``hmdiff ablate``: DAT off/fast/full x DDIM steps, the rigid start on/off, DAT's two parts
(rigid start, gradient step) apart over sampling seeds, hypotheses, a tau/lambda sweep.

Writes ``ablation.md`` (tables) and ``ablation.png`` (PA-MPJPE vs steps, with and without
DAT) into ``--out``, and ``ablation.json`` with every number, so defaults are chosen by
measurement. Every table sits beside its yardsticks, on the same samples: the simulated
prior alone (its 3D joints U against the truth on the 24 joints U has), the lifter (an MLP
from the same keypoints, visibilities and U, :mod:`hmdiff_ros.model.lifter`; the shipped one
unless ``lifter`` names another, left out with a note when there is none) and HMDiff at its
defaults. With ``study`` (a prior study's folder) the yardsticks are also measured on
MediaPipe's own outputs there (:mod:`hmdiff_ros.study.study_eval`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Dict, Sequence

from hmdiff_ros import defaults
from hmdiff_ros.data.store import SplitReader
from hmdiff_ros.model.checkpoint import WEIGHTS, load_checkpoint, trained_samples
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.evaluate import default_test_split, evaluate
from hmdiff_ros.model.lifter import DEFAULT_LIFTER, Lifter, evaluate_lifter, load_lifter

log = logging.getLogger(__name__)

STEPS = (1, 2, 4, 8, 16, 50)
TAUS = (0.0, 0.3, 0.6)
SCALES = (0.25, 0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4)  # sampling seeds of the DAT-parts table: its spread
HYPOTHESES = (1, 4)


def ablate(
    checkpoint: "str | Path | None" = None,
    data: "str | Path | None" = None,
    out: "str | Path" = "docs/ablation",
    limit: int | None = 256,
    steps: Sequence[int] = STEPS,
    modes: Sequence[str] = defaults.DAT_MODES,
    progress: bool = True,
    lifter: "str | Path | None" = None,
    study: "str | Path | None" = None,
    seeds: Sequence[int] = SEEDS,
) -> Dict:
    """Every run on the first ``limit`` samples of split ``data`` (default: the fixed test
    split); ``lifter``: the lifter's checkpoint (default: the shipped one, if any); ``study``:
    a prior study for the yardsticks on MediaPipe's outputs (the first ``limit`` held-out
    samples); ``seeds``: the sampling seeds of the DAT-parts table."""
    from tqdm import tqdm

    model, meta = load_checkpoint(checkpoint)
    lifted = _load_lifter(lifter)  # before the long runs: a bad --lifter fails at once
    yard = yardsticks(model, lifted and lifted[0], data, limit)
    yard["hmdiff"]["training_samples"] = trained_samples(meta)
    if lifted is not None:
        yard["lifter"] = {
            "checkpoint": str(lifted[2]),
            "training_samples": trained_samples(lifted[1]),
            **yard["lifter"],
        }
    base = DATConfig()
    runs = [("steps", mode, k, replace(base, mode=mode)) for mode in modes for k in steps]
    k = defaults.STEPS
    runs += [("rigid", mode, k, replace(base, mode=mode, rigid=False)) for mode in modes if mode != "off"]
    runs += [("sweep", "fast", k, replace(base, mode="fast", tau=t, scale=s)) for t in TAUS for s in SCALES]
    runs = [(*r, 1, 0) for r in runs]  # one hypothesis, seed 0
    parts = [("off", replace(base, mode="off"))]
    parts += [(m, replace(base, mode=m, scale=0.0)) for m in ("fast",)]  # the rigid start alone
    parts += [(m, replace(base, mode=m, rigid=False)) for m in modes if m != "off"]  # the gradient step alone
    parts += [(m, replace(base, mode=m)) for m in modes if m != "off"]  # both
    runs += [("parts", cfg.mode, k, cfg, 1, seed) for _, cfg in parts if cfg.mode in modes for seed in seeds]
    runs += [("hypotheses", defaults.DAT_MODE, k, replace(base, mode=defaults.DAT_MODE), m, 0) for m in HYPOTHESES]
    results = []
    for kind, mode, k, cfg, m, seed in tqdm(runs, desc="ablate", disable=not progress):
        metrics = evaluate(data=data, steps=k, dat_config=cfg, limit=limit, model=model, hypotheses=m, seed=seed)
        row = {"kind": kind, "mode": mode, "steps": k, "tau": cfg.tau, "scale": cfg.scale, "rigid": cfg.rigid}
        results.append({**row, "hypotheses": m, "seed": seed, **metrics})
    if study is not None:
        yard["study"] = study_yardsticks(model, lifted and lifted[0], study, limit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(
        json.dumps({"checkpoint_step": meta.get("step"), "yardsticks": yard, "results": results}, indent=1) + "\n"
    )
    _write_markdown(out / "ablation.md", results, base, limit, yard)
    _plot(out / "ablation.png", results, modes)
    return {"out": str(out), "runs": len(results), "lifter": yard["lifter"] and yard["lifter"]["checkpoint"]}


def study_yardsticks(model, lifter: "Lifter | None", study: "str | Path", limit: int | None) -> Dict:
    """HMDiff (default steps; DAT off and the default mode), MediaPipe's U and the lifter on
    the first ``limit`` held-out samples MediaPipe detected in prior study ``study``."""
    from hmdiff_ros.data.study_reader import load_prior_study
    from hmdiff_ros.study.study_eval import evaluate_study

    loaded = load_prior_study(study)
    rows = {}
    for mode in dict.fromkeys(("off", defaults.DAT_MODE)):
        rows[mode] = evaluate_study(model, loaded, dat=DATConfig(mode=mode), lifter=lifter, limit=limit)
    return {"folder": str(study), **rows}


def _load_lifter(folder: "str | Path | None"):
    """(lifter, its config, its folder) of ``folder``, or of the shipped checkpoint when
    ``folder`` is None; None when that one is absent (said in one line)."""
    if folder is None and not (DEFAULT_LIFTER / WEIGHTS).is_file():
        log.warning(
            "no lifter checkpoint at %s: the yardsticks leave the lifter out "
            "(train one with 'hmdiff train-lifter --out DIR' and give it with --lifter DIR)",
            DEFAULT_LIFTER,
        )
        return None
    folder = Path(folder) if folder is not None else DEFAULT_LIFTER
    try:
        model, meta = load_lifter(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"--lifter: {exc}") from None
    return model, meta, folder


def yardsticks(model, lifter: "Lifter | None", data: "str | Path | None", limit: int | None) -> Dict:
    """The figures (mm) every ablation table sits beside, on the first ``limit`` samples of
    split ``data`` (default: the fixed test split): ``prior`` (U alone, on the 24 joints U
    has), ``lifter`` (None without one) and ``hmdiff`` (``model`` at the default steps and DAT
    mode). Each has ``mpjpe_mm``/``pa_mpjpe_mm`` on our 25 joints (None for the prior),
    ``mpjpe_mm_on_prior_joints``/``pa_mpjpe_mm_on_prior_joints`` and ``num_samples``."""
    hmdiff = evaluate(data=data, steps=defaults.STEPS, dat=defaults.DAT_MODE, limit=limit, model=model, yardsticks=True)
    prior = {
        "mpjpe_mm": None,
        "pa_mpjpe_mm": None,
        "mpjpe_mm_on_prior_joints": hmdiff.pop("prior_mpjpe_mm"),
        "pa_mpjpe_mm_on_prior_joints": hmdiff.pop("prior_pa_mpjpe_mm"),
        "num_samples": hmdiff["num_samples"],
    }
    lifted = None
    if lifter is not None:
        reader = SplitReader(data if data is not None else default_test_split())
        if reader.proxy_cfg.crop_size != lifter.cfg.crop_size:
            raise ValueError(
                f"split '{reader.folder}' has {reader.proxy_cfg.crop_size}-pixel crops but the lifter reads "
                f"keypoints in {lifter.cfg.crop_size}-pixel crops"
            )
        lifted = evaluate_lifter(lifter, reader.batches(64, limit))
    return {"prior": prior, "lifter": lifted, "hmdiff": {"steps": defaults.STEPS, "dat": defaults.DAT_MODE, **hmdiff}}


def _yardstick_lines(yard: Dict) -> list:
    def mm(value) -> str:
        return "–" if value is None else f"{value:.1f}"

    def trained(row: Dict) -> str:
        n = row.get("training_samples")
        return f"; {n:,} training samples" if n else ""

    h = yard["hmdiff"]
    rows = [("simulated prior alone (U)", yard["prior"])]
    if yard["lifter"] is not None:
        rows.append((f"lifter (MLP{trained(yard['lifter'])})", yard["lifter"]))
    rows.append((f"HMDiff ({h['steps']} steps, DAT {h['dat']}{trained(h)})", h))
    lines = [
        "## Yardsticks",
        "",
        f"The same {h['num_samples']} samples. The prior alone: its root-relative 3D joints U (what DAT aligns to);"
        " the lifter: an MLP from the same keypoints, visibilities and U to our 25 joints, trained on the same"
        ' synthetic stream (`hmdiff train-lifter`); HMDiff at its defaults. "prior\'s 24": the 24 joints U has.',
        "",
        "| method | MPJPE | PA-MPJPE | MPJPE, prior's 24 | PA-MPJPE, prior's 24 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {mm(r['mpjpe_mm'])} | {mm(r['pa_mpjpe_mm'])} | {mm(r['mpjpe_mm_on_prior_joints'])} "
            f"| {mm(r['pa_mpjpe_mm_on_prior_joints'])} |"
        )
    if yard["lifter"] is None:
        lines += ["", "No lifter checkpoint was given or shipped: the lifter is left out."]
    study = yard.get("study")
    if study:
        first = study[defaults.DAT_MODE]
        lines += [
            "",
            f"On MediaPipe's own outputs: the {first['num_samples']} first held-out samples it detected in the prior"
            f" study `{Path(study['folder']).name}` (`hmdiff eval-study`; the prior's 24 joints, mid-hip aligned).",
            "",
            "| method | MPJPE | PA-MPJPE |",
            "| --- | ---: | ---: |",
            f"| MediaPipe alone (U) | {first['prior_mpjpe_mm']:.1f} | {first['prior_pa_mpjpe_mm']:.1f} |",
        ]
        if "lifter_mpjpe_mm" in first:
            lines.append(f"| lifter | {first['lifter_mpjpe_mm']:.1f} | {first['lifter_pa_mpjpe_mm']:.1f} |")
        for mode in dict.fromkeys(("off", defaults.DAT_MODE)):
            r = study[mode]
            lines.append(f"| HMDiff ({h['steps']} steps, DAT {mode}) | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} |")
    return lines + [""]


def _parts_lines(results) -> list:
    """The DAT-parts table: mean and spread (standard deviation) over the sampling seeds."""
    import numpy as np

    rows: Dict[tuple, list] = {}
    for r in results:
        if r["kind"] == "parts":
            rigid = r["mode"] != "off" and r["rigid"]
            gradient = r["mode"] != "off" and r["scale"] > 0
            rows.setdefault((r["mode"], rigid, gradient), []).append(r)
    if not rows:
        return []
    seeds = len(next(iter(rows.values())))
    lines = [
        f"## DAT's parts ({defaults.STEPS} steps, mean ± sd over {seeds} sampling seeds)",
        "",
        "| DAT | rigid start | gradient step | MPJPE | PA-MPJPE | MPVPE |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]

    def cell(rs: list, key: str) -> str:
        return f"{np.mean([r[key] for r in rs]):.1f} ± {np.std([r[key] for r in rs]):.1f}"

    for (mode, rigid, gradient), rs in rows.items():
        on = {True: "on", False: "off"}
        lines.append(
            f"| {mode} | {on[rigid]} | {on[gradient]} | {cell(rs, 'mpjpe_mm')} | {cell(rs, 'pa_mpjpe_mm')} "
            f"| {cell(rs, 'mpvpe_mm')} |"
        )
    hyp = [r for r in results if r["kind"] == "hypotheses"]
    if hyp:
        lines += [
            "",
            f"## Hypotheses ({defaults.STEPS} steps, DAT {defaults.DAT_MODE}; averaged)",
            "",
            "| hypotheses | MPJPE | PA-MPJPE | MPVPE |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['hypotheses']} | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} | {r['mpvpe_mm']:.1f} |" for r in hyp
        ]
    return lines + [""]


def _write_markdown(path: Path, results, base: DATConfig, limit, yard: Dict) -> None:
    lines = [
        "# HMDiff ablation",
        "",
        f"Synthetic test split ({results[0]['num_samples']} samples), made by `hmdiff ablate --limit {limit}`.",
        f"DAT defaults: tau={base.tau}, lambda={base.scale}, max_fraction={base.max_fraction}, rigid={base.rigid}."
        " Errors in mm (root-relative; PA: after Procrustes alignment).",
        "",
        *_yardstick_lines(yard),
        "## DAT mode x DDIM steps",
        "",
        "| DAT | steps | MPJPE | PA-MPJPE | MPVPE | PA-MPVPE |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r["kind"] == "steps":
            lines.append(
                f"| {r['mode']} | {r['steps']} | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} | {r['mpvpe_mm']:.1f} | {r['pa_mpvpe_mm']:.1f} |"
            )
    lines += [
        "",
        f"## Rigid start ({defaults.STEPS} steps)",
        "",
        "| DAT | rigid | MPJPE | PA-MPJPE | MPVPE | PA-MPVPE |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r["steps"] == defaults.STEPS and r["mode"] != "off" and r["kind"] in ("steps", "rigid"):
            lines.append(
                f"| {r['mode']} | {'on' if r['rigid'] else 'off'} | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} | {r['mpvpe_mm']:.1f} | {r['pa_mpvpe_mm']:.1f} |"
            )
    lines += ["", *_parts_lines(results)]
    lines += [
        f"## tau / lambda sweep (fast DAT, {defaults.STEPS} steps)",
        "",
        "| tau | lambda | MPJPE | PA-MPJPE |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r["kind"] == "sweep":
            lines.append(f"| {r['tau']} | {r['scale']} | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def _plot(path: Path, results, modes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    for mode in modes:
        rows = [r for r in results if r["kind"] == "steps" and r["mode"] == mode]
        for a, key in zip(ax, ("pa_mpjpe_mm", "mpjpe_mm"), strict=True):
            a.plot([r["steps"] for r in rows], [r[key] for r in rows], marker="o", label=f"DAT {mode}")
    for a, title in zip(ax, ("PA-MPJPE (mm)", "MPJPE (mm)"), strict=True):
        a.set_xscale("log")
        a.set_xlabel("DDIM steps")
        a.set_title(title)
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
