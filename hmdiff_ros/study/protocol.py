"""``hmdiff eval-protocol``: the model's accuracy on sets kept apart for choosing and for testing.

Three disjoint kinds of data (``docs/model_card.md``, "Protocol"):

- the **training stream** (``hmdiff train``: seeds below 10,000, training bodies);
- the **selection sets**, on which every choice is made (checkpoints, steps, DAT settings):
  ``synthetic-val`` (training bodies, the validation seed 10,000: the stream the trainer
  validates on) and ``study-val`` (the first half of the prior study's held-out part:
  MediaPipe's own outputs on rendered held-out bodies);
- the **test sets**, on which no choice is made: ``synthetic-test`` (held-out bodies and the
  held-out stream, seed 30,000: a seed no earlier figure or choice used), ``study-test`` (the
  second half of the study's held-out part) and ``real`` (``hmdiff eval-real``'s frames).

Every figure is the mean over the samples of the mean over ``seeds`` sampling seeds, with a
95 % bootstrap interval over samples (of those per-sample means) and the spread (standard
deviation) of the per-seed means; beside the model, on the same samples: the prior alone
(``prior_*``) and the lifter (``lifter_*``), and the paired difference model - prior with its
interval (``delta_*``: below 0 means the model is better).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np

from hmdiff_ros.model.dat import DATConfig

SETS = {"selection": ("synthetic-val", "study-val"), "test": ("synthetic-test", "study-test", "real")}
SYNTHETIC = {  # name: (split, seed, held-out bodies)
    "synthetic-val": ("val", 10_000, False),
    "synthetic-test": ("test", 30_000, True),
}
SEEDS = (0, 1, 2)
SPLIT_SIZE = 512
BOOTSTRAP = 2000
ON_PRIOR = "_on_prior_joints"


def bootstrap_ci(
    values: np.ndarray, draws: int = BOOTSTRAP, seed: int = 0, weights: np.ndarray | None = None
) -> List[float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` ``(N,)`` (with ``weights``:
    of ``sum(values) / sum(weights)``, a ratio such as PCK), resampling the N samples."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(len(values), size=(draws, len(values)))
    stats = values[idx].mean(1) if weights is None else values[idx].sum(1) / np.maximum(weights[idx].sum(1), 1e-12)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [round(float(lo), 2), round(float(hi), 2)]


def summarize(per_seed: Sequence[Dict[str, np.ndarray]], ratios: Dict[str, str] | None = None) -> Dict:
    """Figures from per-sample errors of several sampling seeds (one dict per seed, the same
    keys and samples): ``{name: {"mean", "ci95", "seed_sd"}}``, plus ``delta_<figure>`` (model
    minus prior, paired per sample) for each ``<figure>`` with a ``prior_<figure>`` on the same
    joints (``<figure>_on_prior_joints`` where the model has more joints than the prior). ``ratios``: ``{name: (hits key, count key)}``
    figures that are a ratio of sums over samples (PCK)."""
    ratios = ratios or {}
    names = [k for k in per_seed[0] if k not in {v for pair in ratios.values() for v in pair}]
    out: Dict[str, Dict] = {}
    for name in names:
        stack = np.stack([np.asarray(s[name], np.float64) for s in per_seed])  # (seeds, N)
        mean = stack.mean(0)
        out[name] = {
            "mean": round(float(mean.mean()), 2),
            "ci95": bootstrap_ci(mean),
            "seed_sd": round(float(stack.mean(1).std()), 2),
        }
        # the prior's figure on the same joints: a synthetic split scores the model on its 25
        # joints and, beside the prior, on the prior's 24 (``*_on_prior_joints``)
        base = name[: -len(ON_PRIOR)] if name.endswith(ON_PRIOR) else name
        paired = f"prior_{base}" in per_seed[0] and (name.endswith(ON_PRIOR) or f"{name}{ON_PRIOR}" not in per_seed[0])
        if paired:
            prior = np.stack([np.asarray(s[f"prior_{base}"], np.float64) for s in per_seed]).mean(0)
            out[f"delta_{name}"] = {"mean": round(float((mean - prior).mean()), 2), "ci95": bootstrap_ci(mean - prior)}
    for name, (hits, count) in ratios.items():
        h = np.stack([np.asarray(s[hits], np.float64) for s in per_seed])
        n = np.asarray(per_seed[0][count], np.float64)
        out[name] = {
            "mean": round(float(h.mean(0).sum() / max(n.sum(), 1)), 3),
            "ci95": [round(v / 100, 3) for v in bootstrap_ci(100 * h.mean(0), weights=n)],
            "seed_sd": round(float((h.sum(1) / max(n.sum(), 1)).std()), 4),
        }
    return out


def synthetic_split(name: str, num: int = SPLIT_SIZE) -> Path:
    """The cached synthetic split ``name`` of :data:`SYNTHETIC` (made on first use)."""
    from hmdiff_ros.data.engine import SyntheticConfig, SyntheticEngine
    from hmdiff_ros.data.shapes import TEST_BANK, cache_dir
    from hmdiff_ros.data.store import META_FILE, write_split

    split, seed, held_out = SYNTHETIC[name]
    folder = cache_dir() / f"protocol_{name}_{num}_{seed}"
    if not (folder / META_FILE).is_file():
        engine = SyntheticEngine(SyntheticConfig(bank=TEST_BANK) if held_out else SyntheticConfig())
        write_split(engine, folder, num, seed, split, progress=False, force=True)
    return folder


def _synthetic(model, name: str, seeds, sampling: Dict, lifter, limit: int | None) -> List[Dict[str, np.ndarray]]:
    from hmdiff_ros.data.store import SplitReader
    from hmdiff_ros.model.evaluate import evaluate_batches

    reader = SplitReader(synthetic_split(name))
    runs = []
    for seed in seeds:
        r = evaluate_batches(
            model, reader.batches(64, limit), yardsticks=True, seed=seed, per_sample=True, lifter=lifter, **sampling
        )
        runs.append(r["per_sample"])
    return runs


def _study(model, study: Dict, part: str, seeds, sampling: Dict, lifter, limit: int | None):
    from hmdiff_ros.study.study_eval import NEARLY_RIGHT_MM, evaluate_study

    runs = [
        evaluate_study(model, study, part=part, seed=s, lifter=lifter, limit=limit, per_sample=True, **sampling)[
            "per_sample"
        ]
        for s in seeds
    ]
    good = runs[0]["prior_pa_mpjpe_mm"] <= NEARLY_RIGHT_MM
    strata = {
        name: [{k: v[sel] for k, v in r.items()} for r in runs]
        for name, sel in (("prior_nearly_right", good), ("prior_wrong", ~good))
        if sel.any()
    }
    return runs, strata


def _real(pipe_cfg, checkpoint, root, seeds, lifter):
    from hmdiff_ros.pipeline.pipeline import build_pipeline
    from hmdiff_ros.study.eval_real import evaluate_real

    runs = []
    for seed in seeds:
        pipe = build_pipeline(replace(pipe_cfg, seed=seed), checkpoint)
        try:
            per = evaluate_real(pipe, root, progress=False, lifter=lifter, per_sample=True)["per_sample"]
        finally:
            pipe.prior.close()
        runs.append(per)
    return runs


def run_protocol(
    model,
    which: str,
    study: "str | Path | None" = None,
    real: "str | Path | None" = None,
    seeds: Iterable[int] = SEEDS,
    steps: int | None = None,
    dat: DATConfig | None = None,
    hypotheses: int | None = None,
    lifter=None,
    checkpoint: "str | Path | None" = None,
    limit: int | None = None,
) -> Dict:
    """The figures of the ``which`` sets (``"selection"`` or ``"test"``, :data:`SETS`); a set
    whose data is not given (``study``, ``real``) is left out and listed under ``"left_out"``.
    ``study`` and ``real``: folders, or what ``load_prior_study(..., held_out_only=True)`` and
    ``read_real`` gave for them (both are read and checked before any set runs).
    Sampling settings default to the pipeline's."""
    from hmdiff_ros import defaults
    from hmdiff_ros.pipeline.config import PipelineConfig

    if which not in SETS:
        raise ValueError(f"sets must be one of {', '.join(SETS)}, got {which!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: give at least one sampling seed")
    steps = defaults.STEPS if steps is None else steps
    hypotheses = defaults.HYPOTHESES if hypotheses is None else hypotheses
    dat = DATConfig() if dat is None else dat
    sampling = {"steps": steps, "dat": dat, "hypotheses": hypotheses}
    result: Dict = {"sets": {}, "left_out": [], "seeds": seeds, "steps": steps, "hypotheses": hypotheses}
    result["dat"] = {
        "mode": dat.mode,
        "tau": dat.tau,
        "scale": dat.scale,
        "max_fraction": dat.max_fraction,
        "rigid": dat.rigid,
    }
    # the data of the study and real sets is read and checked first: a bad file is named at
    # once, not after minutes of the synthetic sets
    names = SETS[which]
    loaded = None
    if study is not None and any(n.startswith("study") for n in names):
        from hmdiff_ros.data.study_reader import load_prior_study

        loaded = study if isinstance(study, dict) else load_prior_study(study, held_out_only=True)
    if real is not None and any(not n.startswith(("synthetic", "study")) for n in names):
        from hmdiff_ros.study.real_data import RealData, read_real

        real = real if isinstance(real, RealData) else read_real(real)
    for name in names:
        if name.startswith("synthetic"):
            runs = _synthetic(model, name, seeds, sampling, lifter, limit)
            result["sets"][name] = {"num_samples": len(runs[0]["mpjpe_mm"]), "figures": summarize(runs)}
        elif name.startswith("study"):
            if study is None:
                result["left_out"].append(f"{name} (no --study)")
                continue
            runs, strata = _study(model, loaded, name.split("-")[1], seeds, sampling, lifter, limit)
            result["sets"][name] = {
                "num_samples": len(runs[0]["mpjpe_mm"]),
                "figures": summarize(runs),
                "strata": {
                    k: {"num_samples": len(v[0]["mpjpe_mm"]), "figures": summarize(v)} for k, v in strata.items()
                },
            }
        else:
            if real is None:
                result["left_out"].append(f"{name} (no --real)")
                continue
            # PyTorch runs the exact sampler asked for (the exported graphs agree within 0.001 mm)
            cfg = PipelineConfig(steps=steps, dat=dat, hypotheses=hypotheses, full_mesh=False, backend="torch")
            runs = _real(cfg, checkpoint, real, seeds, lifter)
            pck = {"pck_at_0.1": ("pck_hits", "pck_joints"), "prior_pck_at_0.1": ("pck_prior_hits", "pck_joints")}
            result["sets"][name] = {"num_frames_3d": len(runs[0]["mpjpe_mm"]), "figures": summarize(runs, pck)}
    return result


def _cell(f: Dict | None, digits: int = 1) -> str:
    if f is None:
        return "–"
    lo, hi = f["ci95"]
    sd = f" ±{f['seed_sd']:.{digits}f}" if "seed_sd" in f and f["seed_sd"] else ""
    return f"{f['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{sd}"


def protocol_table(result: Dict) -> str:
    """A markdown table of :func:`run_protocol`'s result: each figure as mean [95 % interval]
    ±seed spread (omitted where the seeds agree), the model beside the prior and the lifter."""
    head = (
        "| set | n | HMDiff MPJPE | HMDiff PA-MPJPE | prior MPJPE | prior PA-MPJPE | lifter MPJPE | lifter PA-MPJPE "
        "| HMDiff - prior, PA-MPJPE |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]

    def row(name: str, n: int, f: Dict) -> None:
        pa_delta = f.get(f"delta_pa_mpjpe_mm{ON_PRIOR}") or f.get("delta_pa_mpjpe_mm")
        cells = [f.get(k) for k in ("mpjpe_mm", "pa_mpjpe_mm", "prior_mpjpe_mm", "prior_pa_mpjpe_mm")]
        cells += [f.get("lifter_mpjpe_mm"), f.get("lifter_pa_mpjpe_mm"), pa_delta]
        rows.append(f"| {name} | {n} | " + " | ".join(_cell(c) for c in cells) + " |")

    for name, s in result["sets"].items():
        row(name, s.get("num_samples", s.get("num_frames_3d", 0)), s["figures"])
        for stratum, part in s.get("strata", {}).items():
            row(f"{name}, {stratum.replace('_', ' ')}", part["num_samples"], part["figures"])
        if "pck_at_0.1" in s["figures"]:
            f = s["figures"]
            rows.append(
                f"| {name}, PCK@0.1 (2D) | | {_cell(f['pck_at_0.1'], 3)} | | {_cell(f['prior_pck_at_0.1'], 3)} | | | | |"
            )
    dat = result["dat"]
    notes = (
        f"\n\n{result['steps']} DDIM steps, {result['hypotheses']} hypotheses, DAT {dat['mode']} "
        f"(tau {dat['tau']}, lambda {dat['scale']}, steps aligned up to a fraction {dat['max_fraction']}, "
        f"rigid start {'on' if dat['rigid'] else 'off'}); sampling seeds {result['seeds']}. "
        "Joints: synthetic, our 25 (the prior's column and the difference: the prior's 24); study, the prior's 24; "
        "real, the 12 limb joints."
    )
    if result["left_out"]:
        notes += f" Left out: {', '.join(result['left_out'])}."
    return "\n".join(rows) + notes
