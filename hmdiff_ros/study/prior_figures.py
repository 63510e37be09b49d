"""The prior study's figures (``hmdiff data prior-study-report``), drawn from the numbers of
:func:`hmdiff_ros.study.prior_analysis.analyse_prior_study` only (matplotlib, Agg); the
markdown and JSON beside them: :mod:`hmdiff_ros.study.prior_report`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from hmdiff_ros.study.prior_analysis import GOOD_2D, PRIORS

LABELS = {"mp": "MediaPipe", "sim": "simulated prior", "yardstick": "yardstick"}
COLOURS = {"mp": "tab:blue", "sim": "tab:orange", "yardstick": "tab:gray"}
MIN_BIN = 20  # bins with fewer samples are left out of the figures and the text (still in the JSON)
FIGURES = ("per_joint.png", "conditions.png", "depth_bias.png", "visibility.png", "failures.png")


def values(xs) -> np.ndarray:
    """A JSON list as floats, None as NaN."""
    return np.array([np.nan if x is None else x for x in xs], np.float64)


def pct(x, digits: int = 0) -> str:
    """A share as a percentage, "–" for None."""
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def fmt_num(x, digits: int = 0, unit: str = "") -> str:
    """A number with thousands separators and ``unit``, "–" for None."""
    return "–" if x is None else f"{x:,.{digits}f}{unit}"


def _shown(bins: List[Dict]) -> List[Dict]:
    """The bins a figure shows: those with ``MIN_BIN`` samples or more (in a tiny study: the non-empty ones)."""
    return [b for b in bins if b["samples"] >= MIN_BIN] or [b for b in bins if b["samples"]]


def _joint_axis(ax, names: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("left_", "L ").replace("right_", "R ").replace("_", " ") for n in names], rotation=60)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.grid(alpha=0.3)


def plot_prior_study(a: Dict, folder: "str | Path") -> List[Path]:
    """The figures (``FIGURES``) of analysis ``a`` as PNGs in ``folder``, made from its numbers only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    def log_y(ax) -> None:
        ys = np.concatenate([np.asarray(line.get_ydata(), np.float64) for line in ax.get_lines()] or [np.zeros(0)])
        if not (ys > 0).any():  # nothing to put on a log scale (no error at all)
            return
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())

    folder = Path(folder)
    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7})
    h = a["headline"]
    n = f"{h['detected']:,} samples MediaPipe detected (of {h['num']:,})"
    made = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = folder / name
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
        try:
            fig.savefig(tmp, dpi=80)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        plt.close(fig)
        made.append(path)

    pj = a["per_joint"]
    fig, axs = plt.subplots(2, 1, figsize=(10, 6.5))
    x = np.arange(len(pj["names"]))
    yard = {"e2_median_pct": "yardstick: box centre", "mpjpe_mm": "yardstick: one mean pose"}
    for ax, key, title in (
        (axs[0], "e2_median_pct", "2D error per joint, median (% of the true skeleton box diagonal; log scale)"),
        (axs[1], "mpjpe_mm", "3D error per joint, mean (mm; both centred at their own mid-hip, camera frame)"),
    ):
        for k in (*PRIORS, "yardstick"):
            label = yard[key] if k == "yardstick" else LABELS[k]
            ax.plot(x, values(pj[k][key]), "o-" if k != "yardstick" else "s--", color=COLOURS[k], label=label, ms=4)
        ax.set_title(f"{title}; {n}")
        _joint_axis(ax, pj["names"])
        ax.legend(loc="upper left")
    log_y(axs[0])
    save(fig, FIGURES[0])

    cond = a["conditions"]
    cols = ("yaw", "distance", "outside", "occluder", "age")
    rows = (
        ("mp_detected_share", None, "detected (share of samples)"),
        ("mp_e2_median_pct", "sim_e2_median_pct", "2D error per sample, median (% diag)"),
        ("mp_mpjpe_median_mm", "sim_mpjpe_median_mm", "MPJPE, median (mm)"),
        ("mp_flipped_share", "sim_flipped_share", "left/right flipped (share)"),
    )
    fig, axs = plt.subplots(len(rows), len(cols), figsize=(15, 9.5), sharey="row")
    for c, name in enumerate(cols):
        bins = _shown(cond[name]["bins"])
        labels = [b["label"] for b in bins]
        for r, (mp_key, sim_key, ylabel) in enumerate(rows):
            ax = axs[r, c]
            xs = np.arange(len(bins))
            ax.plot(xs, values([b[mp_key] for b in bins]), "o-", color=COLOURS["mp"], label=LABELS["mp"])
            if sim_key is None:
                ax.plot(xs, np.ones(len(xs)), "o--", color=COLOURS["sim"], label="simulated prior (by construction)")
                ax.set_ylim(0, 1.05)
            else:
                ax.plot(xs, values([b[sim_key] for b in bins]), "o-", color=COLOURS["sim"], label=LABELS["sim"])
            ax.set_xticks(xs)
            ax.set_xlim(-0.5, len(xs) - 0.5)
            ax.set_xticklabels(labels if r == len(rows) - 1 else [], rotation=30)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(ylabel)
            if r == 0:
                ax.set_title(f"{cond[name]['title']}\n(samples per bin: {min(b['samples'] for b in bins):,}+)")
    axs[0, 0].legend(loc="lower left")
    axs[1, 0].legend(loc="upper left")
    fig.suptitle(f"Errors by condition, on the {n}; detection on all samples", fontsize=10)
    save(fig, FIGURES[1])

    fig = plt.figure(figsize=(11, 7))
    grid = fig.add_gridspec(2, 2)
    ax = fig.add_subplot(grid[0, 0])
    for i, k in enumerate((*PRIORS, "yardstick")):
        label = "yardstick: one mean pose" if k == "yardstick" else LABELS[k]
        ax.bar(np.arange(3) + (i - 1) * 0.27, values(a["axes"][k]["rms_mm"]), 0.27, color=COLOURS[k], label=label)
    ax.set_xticks(range(3))
    ax.set_xticklabels(["x (right)", "y (down)", "z (depth)"])
    ax.set_title("3D error per camera axis, RMS (mm)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    ax = fig.add_subplot(grid[0, 1])
    for i, k in enumerate(PRIORS):
        scale = values([a["axes"][k].get(f"scale_{axis}") for axis in "xyz"])
        ax.bar(np.arange(3) + (i - 0.5) * 0.35, scale, 0.35, color=COLOURS[k], label=LABELS[k])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(3))
    ax.set_xticklabels(["x", "y", "z (depth)"])
    ax.set_title("extent of the predicted pose per axis: median slope of predicted on true (1 = right)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    ax = fig.add_subplot(grid[1, :])
    names = pj["names"]
    for i, k in enumerate(PRIORS):
        if k not in a["bias"]:
            continue
        b = a["bias"][k]
        share = f"bias share {pct(b['body']['bias_share'])} body frame, {pct(b['camera']['bias_share'])} camera frame"
        ax.bar(
            x + (i - 0.5) * 0.38,
            values(b["body"]["bias_mm"]),
            0.38,
            color=COLOURS[k],
            alpha=0.8,
            label=f"{LABELS[k]}: |mean error| in the body frame ({share})",
        )
        ax.plot(
            x, values(b["body"]["spread_mm"]), "o--", color=COLOURS[k], ms=3, label=f"{LABELS[k]}: spread around it"
        )
    ax.set_title("bias against noise per joint (mm): systematic offset (bars) and RMS spread around it (lines)")
    _joint_axis(ax, names)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    ax.legend(loc="upper left", ncol=2)
    fig.suptitle(f"Depth and bias, on the {n}", fontsize=10)
    save(fig, FIGURES[2])

    v = a["visibility"]
    mid = (np.arange(10) + 0.5) / 10
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.8))
    for k in PRIORS:
        label = f"{LABELS[k]}: AUC {fmt_num(v[k]['auc_truly_visible'], 2)} / {fmt_num(v[k]['auc_good_2d'], 2)}"
        enough = np.array(v[k]["joints"]) >= MIN_BIN
        axs[0].plot(mid[enough], values(v[k]["e2_median_pct"])[enough], "o-", color=COLOURS[k], label=label)
        axs[1].plot(mid[enough], values(v[k]["truly_visible_share"])[enough], "o-", color=COLOURS[k], label=LABELS[k])
        total = max(sum(v[k]["joints"]), 1)
        axs[2].bar(
            mid + (0.025 if k == "sim" else -0.025),
            np.array(v[k]["joints"]) / total,
            0.05,
            color=COLOURS[k],
            label=LABELS[k],
        )
    axs[1].plot([0, 1], [0, 1], "k:", lw=0.8, label="calibrated")
    log_y(axs[0])
    titles = (
        f"2D error per joint, median (% diag)\nAUC of visibility for: truly visible / error < {GOOD_2D:g} %",
        "share of joints truly visible",
        "share of joints",
    )
    for ax, title, where in zip(axs, titles, ("upper right", "upper left", "upper left"), strict=True):
        ax.set_xlabel("reported visibility (bins of 0.1)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc=where)
    fig.suptitle(f"Visibility: does the reported visibility predict error and occlusion? ({n})", fontsize=10)
    save(fig, FIGURES[3])

    fig, axs = plt.subplots(1, 3, figsize=(14, 4))
    bins = _shown(cond["visible_px"]["bins"])
    axs[0].plot(range(len(bins)), values([b["mp_detected_share"] for b in bins]), "o-", color=COLOURS["mp"])
    axs[0].set_xticks(range(len(bins)))
    axs[0].set_xticklabels([b["label"] for b in bins], rotation=30)
    axs[0].set_title(f"MediaPipe: detected vs visible body pixels\n(all {h['num']:,} samples)")
    axs[0].set_ylim(0, 1.05)
    fam = cond["family"]["bins"]
    axs[1].barh(range(len(fam)), values([b["mp_detected_share"] for b in fam]), color=COLOURS["mp"])
    axs[1].set_yticks(range(len(fam)))
    axs[1].set_yticklabels([f"{b['label']} ({b['samples']:,})" for b in fam])
    axs[1].axvline(h["mp"]["detected_share"], color="k", lw=0.8, ls=":", label="all samples")
    axs[1].set_xlim(0, 1)
    axs[1].set_title("MediaPipe: detected by pose family\n(samples per family)")
    axs[1].legend()
    sw = a["swaps"]
    for i, k in enumerate(PRIORS):
        axs[2].bar(
            np.arange(len(sw["pairs"])) + (i - 0.5) * 0.38,
            values(sw[k]["pair_share"]),
            0.38,
            color=COLOURS[k],
            label=LABELS[k],
        )
    axs[2].set_xticks(range(len(sw["pairs"])))
    axs[2].set_xticklabels([p.replace("_", " ") for p in sw["pairs"]], rotation=30)
    axs[2].set_title(f"left/right pairs swapped (share of judged pairs)\n{n}")
    axs[2].legend()
    for ax in axs:
        ax.grid(alpha=0.3)
    save(fig, FIGURES[4])
    return made
