"""The prior study's report: markdown and JSON, beside its figures (``hmdiff data prior-study-report``).

The numbers come from :func:`hmdiff_ros.study.prior_analysis.analyse_prior_study`; the figures
are drawn from those numbers only (:mod:`hmdiff_ros.study.prior_figures`), and the markdown
quotes them with the commands that made the study and the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import numpy as np

from hmdiff_ros.data.study_reader import load_prior_study, read_study_meta
from hmdiff_ros.files import made_folder
from hmdiff_ros.study.prior_analysis import GOOD_2D, GROSS_2D, PRIORS, analyse_prior_study
from hmdiff_ros.study.prior_figures import FIGURES, MIN_BIN, fmt_num, pct, plot_prior_study, values
from hmdiff_ros.study.study_config import CHUNK

REPORT_JSON = "prior_study.json"


def report_paths(out: "str | Path") -> List[Path]:
    """Every file :func:`write_prior_study_report` writes for markdown ``out``: ``out`` itself,
    then the JSON and the figures in the folder of the same name beside it."""
    out = Path(out)
    if out.suffix.lower() != ".md":
        raise ValueError(f"--out '{out}' must end in .md (the figures go to the folder '{out.with_suffix('')}')")
    folder = out.with_suffix("")
    return [out, folder / REPORT_JSON, *(folder / f for f in FIGURES)]


# -- the report ---------------------------------------------------------------------------


def study_command(meta: Dict, folder: "str | Path") -> str:
    """The ``hmdiff data prior-study`` command that makes the study of ``meta`` in ``folder``
    (worker count aside: it does not change the samples)."""
    cmd = f"hmdiff data prior-study --num {meta['num']}"
    if meta.get("seed"):
        cmd += f" --seed {meta['seed']}"
    if meta.get("chunk", CHUNK) != CHUNK:
        cmd += f" --chunk {meta['chunk']}"
    return f"{cmd} --out {folder}"


def _extremes(a: Dict, name: str, key: str) -> tuple:
    """(lowest bin label, value, highest bin label, value) of ``key`` over condition ``name``."""
    bins = [b for b in a["conditions"][name]["bins"] if b["samples"] >= MIN_BIN and b[key] is not None]
    if not bins:
        return ("–", None, "–", None)
    lo, hi = min(bins, key=lambda b: b[key]), max(bins, key=lambda b: b[key])
    return lo["label"], lo[key], hi["label"], hi[key]


def _bin(a: Dict, name: str, index: int, key: str):
    bins = a["conditions"][name]["bins"]
    return bins[index][key] if bins[index]["samples"] >= MIN_BIN else None


def report_markdown(
    a: Dict, meta: Dict, commands: Dict[str, str], figures: str, sheet: "str | None", sheet_arg: str = ""
) -> str:
    """The report: headline table, one paragraph per finding, the figures (``figures``: their
    folder relative to the markdown; ``sheet``: the contact sheet's path relative to it, made with
    ``--sheet sheet_arg``)."""
    h, ax, v, bias = a["headline"], a["axes"], a["visibility"], a["bias"]
    mp, sim, yard, sim_all = h["mp"], h["sim"], h["yardstick"], h["sim_all"]
    partial = h["num"] < meta["num"]
    names = a["per_joint"]["names"]
    lines = [
        "# How MediaPipe fails on synthetic people, beside the simulated prior",
        "",
        f"MediaPipe BlazePose (the pipeline's pose prior, `{meta['prior']['class'].rsplit('.', 1)[-1]}`, "
        f"mediapipe {meta.get('versions', {}).get('mediapipe')}, still-image mode) on **{h['num']:,} rendered synthetic "
        f"people** (held-out bodies, robot and desk cameras, occluders; seed {meta['seed']}), measured against the "
        "ground truth beside the data engine's simulated prior **on the same samples** (the "
        f"{h['detected']:,} in which MediaPipe found the person) and a trivial yardstick (every joint at the centre "
        "of the person's box in 2D; one mean pose for everybody in 3D).",
        "",
    ]
    if partial:
        lines += [f"**Partial study**: {h['num']:,} of the {meta['num']:,} samples asked for were there.", ""]
    lines += [
        "Made by:",
        "",
        "```",
        commands["study"],
        commands["report"],
        "```",
        "",
        "2D errors are in % of the diagonal of the box around the true projected joints. 3D errors are root-relative "
        "in the camera frame over the 24 prior joints, **each pose centred at the mean of its own two hips**: "
        "MediaPipe's origin lies between its hip landmarks and our root is the pelvis, the mean of our hips, so the "
        "mid-hip is the fair common root (it also re-centres the simulated prior, whose pelvis is noisy).",
        "",
        f"| on {h['detected']:,} samples | MediaPipe | simulated prior | yardstick |",
        "|---|---|---|---|",
        f"| detected (of all {h['num']:,} samples) | {pct(mp['detected_share'], 1)} | 100 % (by construction) | – |",
        f"| 2D error, median / mean (% diag) | {fmt_num(mp['e2_median_pct'], 1)} / {fmt_num(mp['e2_mean_pct'], 1)} | "
        f"{fmt_num(sim['e2_median_pct'], 1)} / {fmt_num(sim['e2_mean_pct'], 1)} | {fmt_num(yard['e2_median_pct'], 1)} / "
        f"{fmt_num(yard['e2_mean_pct'], 1)} (box centre) |",
        f"| samples with mean 2D error > {GROSS_2D:g} % | {pct(mp['gross_2d_share'], 1)} | "
        f"{pct(sim['gross_2d_share'], 1)} | {pct(yard['gross_2d_share'], 1)} |",
        f"| MPJPE / PA-MPJPE (mm) | {fmt_num(mp['mpjpe_mm'])} / {fmt_num(mp['pa_mpjpe_mm'])} | {fmt_num(sim['mpjpe_mm'])} / "
        f"{fmt_num(sim['pa_mpjpe_mm'])} | {fmt_num(yard['mpjpe_mm'])} / {fmt_num(yard['pa_mpjpe_mm'])} (mean pose) |",
        "| RMS error x / y / z (mm) | "
        + " | ".join(" / ".join(fmt_num(r) for r in ax[k]["rms_mm"]) for k in (*PRIORS, "yardstick"))
        + " |",
        "| extent x / y / z (slope, 1 = right) | "
        + " | ".join(" / ".join(fmt_num(ax[k].get(f"scale_{c}"), 2) for c in "xyz") for k in PRIORS)
        + " | – |",
        f"| left/right flipped samples / samples with a swapped pair | {pct(mp['flipped_share'], 1)} / "
        f"{pct(mp['any_swap_share'], 1)} | {pct(sim['flipped_share'], 1)} / {pct(sim['any_swap_share'], 1)} | – |",
        f"| visibility AUC: truly visible / error < {GOOD_2D:g} % | {fmt_num(v['mp']['auc_truly_visible'], 2)} / "
        f"{fmt_num(v['mp']['auc_good_2d'], 2)} | {fmt_num(v['sim']['auc_truly_visible'], 2)} / {fmt_num(v['sim']['auc_good_2d'], 2)} | "
        "0.50 (chance) |",
        "| share of the squared 3D error that is per-joint bias: body frame / camera frame / camera frame per view | "
        + " | ".join(
            " / ".join(
                pct(bias.get(k, {}).get(f, {}).get("bias_share"), 1) for f in ("body", "camera", "camera_by_yaw")
            )
            for k in PRIORS
        )
        + " | – |",
        f"| mask IoU with the visible silhouette, median | {fmt_num(mp['mask_iou_median'], 2)} | "
        f"{fmt_num(sim['mask_iou_median'], 2)} | – |",
        "",
        f"On all {sim_all['samples']:,} samples the simulated prior scores {fmt_num(sim_all['e2_median_pct'], 1)} % median "
        f"2D error, MPJPE {fmt_num(sim_all['mpjpe_mm'])} mm, PA-MPJPE {fmt_num(sim_all['pa_mpjpe_mm'])} mm and flips "
        f"{pct(sim_all['flipped_share'], 1)} of the samples (its injected flips: {pct(sim_all['injected_swap_share'], 1)}; "
        "a flip counts where the arms and the legs are in the image and clearly swapped: `hmdiff_ros/study/swaps.py`).",
        "",
        "## Findings, and what a prior simulator must reproduce",
        "",
    ]

    # detection
    def at(name: str, index: int, key: str, fmt) -> str:
        """A bin's value with its label, e.g. '8 % at >= 6 m'."""
        unit = {"distance": " m", "yaw": "°", "visible_px": " visible pixels", "outside": " joints outside"}.get(
            name, ""
        )
        return f"{fmt(_bin(a, name, index, key))} at {a['conditions'][name]['bins'][index]['label']}{unit}"

    def mm(x) -> str:
        return fmt_num(x, 0, " mm")

    d_px = _extremes(a, "visible_px", "mp_detected_share")
    d_fam = _extremes(a, "family", "mp_detected_share")
    lines += [
        f"**Detection.** MediaPipe finds the person in {pct(mp['detected_share'])} of the samples: from "
        f"{pct(d_px[1])} at {d_px[0]} visible body pixels to {pct(d_px[3])} at {d_px[2]}; "
        f"{at('distance', 0, 'mp_detected_share', pct)} and {at('distance', -1, 'mp_detected_share', pct)}; "
        f"{at('outside', 0, 'mp_detected_share', pct)}, {at('outside', -1, 'mp_detected_share', pct)}; "
        f"{pct(_bin(a, 'occluder', 1, 'mp_detected_share'))} with an occluder and "
        f"{pct(_bin(a, 'occluder', 0, 'mp_detected_share'))} without; by pose family from {pct(d_fam[1])} "
        f"({d_fam[0]}) to {pct(d_fam[3])} ({d_fam[2]}). The simulated prior never fails (the engine draws again "
        "the samples in which it sees too few joints). *A simulator must drop the person with a probability that "
        "depends on the person's size in pixels, distance and truncation*, or the model never learns to do "
        "without a prior.",
        "",
    ]
    # 2D
    worst = np.argsort(-values(a["per_joint"]["mp"]["e2_median_pct"]))[:3]
    ratio = (mp["e2_median_pct"] or 0) / max(sim["e2_median_pct"] or 1e-9, 1e-9)
    lines += [
        f"**2D: heavy tails.** The median joint error of MediaPipe ({fmt_num(mp['e2_median_pct'], 1)} %) and of the "
        f"simulation ({fmt_num(sim['e2_median_pct'], 1)} %) {'are alike' if 0.8 <= ratio <= 1.25 else 'differ'}; their "
        f"means are {fmt_num(mp['e2_mean_pct'], 1)} % and {fmt_num(sim['e2_mean_pct'], 1)} %: {pct(mp['gross_2d_share'], 1)} "
        f"of MediaPipe's samples are off by more than {GROSS_2D:g} % of the diagonal on average (the simulation's: "
        f"{pct(sim['gross_2d_share'], 1)}). Its worst joints are "
        + ", ".join(f"{names[j]} ({fmt_num(a['per_joint']['mp']['e2_median_pct'][j], 1)} %)" for j in worst)
        + ". Median per-sample error by truncation: MediaPipe "
        f"{at('outside', 0, 'mp_e2_median_pct', lambda x: fmt_num(x, 1, ' %'))} to "
        f"{at('outside', -1, 'mp_e2_median_pct', lambda x: fmt_num(x, 1, ' %'))}, the simulation "
        f"{fmt_num(_bin(a, 'outside', 0, 'sim_e2_median_pct'), 1)} % to {fmt_num(_bin(a, 'outside', -1, 'sim_e2_median_pct'), 1)} %. "
        "*A simulator needs a mixture: its Gaussian noise for most samples plus whole-sample failures (a wrong or "
        "collapsed pose) whose rate grows with truncation and occlusion, and per-joint noise levels.*",
        "",
    ]
    # 3D and depth
    mx, my, mz = ax["mp"]["rms_mm"]
    sz, sx, sy = (ax["mp"].get(f"scale_{c}") for c in "zxy")
    title = "3D: depth squashed" if sz is not None and sz < 0.9 else "3D"
    lines += [
        f"**{title}.** MediaPipe's MPJPE is {mm(mp['mpjpe_mm'])} (PA-MPJPE {mm(mp['pa_mpjpe_mm'])}), the "
        f"simulation's {mm(sim['mpjpe_mm'])} ({mm(sim['pa_mpjpe_mm'])}), one mean pose's {mm(yard['mpjpe_mm'])} "
        f"({mm(yard['pa_mpjpe_mm'])}). MediaPipe's RMS error is {fmt_num(mx)} / {fmt_num(my)} mm laterally (x / y) and "
        f"{mm(mz)} in depth (the simulation: {' / '.join(fmt_num(r) for r in ax['sim']['rms_mm'])} mm). Its poses "
        f"have {fmt_num(sz, 2)} of their true extent in depth and {fmt_num(sx, 2)} / {fmt_num(sy, 2)} across (median per-sample "
        f"slope of predicted on true coordinates), the simulation's {fmt_num(ax['sim'].get('scale_z'), 2)} / "
        f"{fmt_num(ax['sim'].get('scale_x'), 2)} / {fmt_num(ax['sim'].get('scale_y'), 2)}: its depth noise is independent per "
        "joint around the right extent. *Depth error should be correlated within a sample (a per-sample depth "
        "scale, fitted to this slope, plus noise), not only independent noise with a larger depth sigma.*",
        "",
    ]
    # bias
    if "mp" in bias:
        b = bias["mp"]["body"]
        top = np.argsort(-values(b["bias_mm"]))[:4]
        lines += [
            f"**Bias against noise.** In the body frame (x to the subject's left, y up, z forward) one fixed "
            f"offset per joint explains {pct(b['bias_share'], 1)} of MediaPipe's squared 3D error (the "
            f"simulation's: {pct(bias['sim']['body']['bias_share'], 1)}); in the camera frame "
            f"{pct(bias['mp']['camera']['bias_share'], 1)}, {pct(bias['mp']['camera_by_yaw']['bias_share'], 1)} "
            "with one offset per joint and view (yaw bins of 30°). The largest offsets (body frame x, y, z): "
            + ", ".join(
                f"{names[j]} {mm(b['bias_mm'][j])} ({', '.join(fmt_num(c) for c in b['bias'][j])})" for j in top
            )
            + f", against a spread of {mm(np.nanmedian(values(b['spread_mm'])))} (median over joints) around them. "
            "*A simulator should add a fixed body-frame offset per joint (MediaPipe's landmarks are not our joints) "
            "on top of its noise; most of the error remains noise, failures and correlated depth.*",
            "",
        ]
    # conditions
    sim_pa = [
        r["sim_pa_mpjpe_median_mm"]
        for name in ("yaw", "distance", "outside", "occluder", "age")
        for r in a["conditions"][name]["bins"]
        if r["samples"] >= MIN_BIN and r["sim_pa_mpjpe_median_mm"] is not None
    ]

    def mm_at(name: str, index: int) -> str:
        return at(name, index, "mp_pa_mpjpe_median_mm", mm)

    lines += [
        f"**Conditions.** MediaPipe's median PA-MPJPE: {mm_at('yaw', 0)} against {mm_at('yaw', -1)} of yaw "
        f"(0° = facing the camera); {mm_at('distance', 0)}, {mm_at('distance', -1)}; {mm_at('outside', 0)}, "
        f"{mm_at('outside', -1)}; {mm(_bin(a, 'occluder', 0, 'mp_pa_mpjpe_median_mm'))} without an occluder, "
        f"{mm(_bin(a, 'occluder', 1, 'mp_pa_mpjpe_median_mm'))} with one; children "
        f"{mm(_bin(a, 'age', 1, 'mp_pa_mpjpe_median_mm'))} against adults "
        f"{mm(_bin(a, 'age', 0, 'mp_pa_mpjpe_median_mm'))} (median MPJPE "
        f"{mm(_bin(a, 'age', 1, 'mp_mpjpe_median_mm'))} against {mm(_bin(a, 'age', 0, 'mp_mpjpe_median_mm'))}: "
        "MPJPE keeps the scale error PA-MPJPE removes). The simulation's median PA-MPJPE stays between "
        f"{mm(min(sim_pa, default=None))} and {mm(max(sim_pa, default=None))} over all these bins. *Noise and "
        "failure rates must depend on the view, distance, truncation and occlusion.*",
        "",
    ]
    # visibility
    hi_mp = v["mp"]["truly_visible_share"][9]
    share_hi = v["mp"]["joints"][9] / max(sum(v["mp"]["joints"]), 1)
    lines += [
        f"**Visibility.** MediaPipe's visibility ranks its errors (Spearman {fmt_num(v['mp']['spearman_vs_e2'], 2)} with "
        f"the 2D error, the simulation's {fmt_num(v['sim']['spearman_vs_e2'], 2)}; AUC {fmt_num(v['mp']['auc_good_2d'], 2)} "
        f"for an error below {GOOD_2D:g} %, the simulation's {fmt_num(v['sim']['auc_good_2d'], 2)}) and separates truly "
        f"visible joints with AUC {fmt_num(v['mp']['auc_truly_visible'], 2)} (the simulation: "
        f"{fmt_num(v['sim']['auc_truly_visible'], 2)}). {pct(share_hi)} of its joints report 0.9 or more, and "
        f"{pct(hi_mp)} of those are truly visible. Its error falls smoothly as its visibility rises, whereas the "
        "simulation's visibility is drawn from fixed bands per case and its noise is multiplied below 0.5 (a "
        "step in the figure). *A simulator should tie the error to the visibility continuously, and give hidden "
        "joints high visibility as often as MediaPipe does.*",
        "",
    ]
    # swaps
    lines += [
        f"**Left/right swaps.** MediaPipe flips the whole body in {pct(mp['flipped_share'], 1)} of the samples and "
        f"swaps at least one pair in {pct(mp['any_swap_share'], 1)} (the simulation: {pct(sim['flipped_share'], 1)} "
        f"and {pct(sim['any_swap_share'], 1)}); its flips: {at('distance', -1, 'mp_flipped_share', pct)}, "
        f"{at('outside', -1, 'mp_flipped_share', pct)}. *The simulated flip rate should follow MediaPipe's, "
        "depend on size and truncation, and single-pair swaps should join the whole-body flips.*",
        "",
        f"**Masks.** MediaPipe's person mask matches the visible silhouette with median IoU "
        f"{fmt_num(mp['mask_iou_median'], 2)} (in the crop); the simulated mask (blurred coarse silhouette) "
        f"{fmt_num(sim['mask_iou_median'], 2)}.",
        "",
        "Caveats: the people are rendered, not photographed, so part of MediaPipe's failure is the renderer's "
        "domain gap (see the contact sheet below); the mean pose is the mean of this study's poses; the yaw is "
        "measured about the body's own up axis (lying people included).",
        "",
        "## Figures",
        "",
    ]
    captions = (
        "Per joint: 2D error (median, log scale) and 3D error (mean), MediaPipe, the simulated prior and the yardsticks.",
        "By condition (body yaw, distance, truncation, occluder, age): detection, 2D error, MPJPE and flips.",
        "Lateral against depth error per camera axis, the extent of the predicted pose per axis, and per-joint bias "
        "(body frame) against spread.",
        "Visibility calibration: error and true visibility per reported-visibility bin, and how visibilities spread.",
        "Failures: detection against visible pixels and pose family; left/right swaps per pair.",
    )
    for name, caption in zip(FIGURES, captions, strict=True):
        lines += [f"![{caption}]({figures}/{name})", "", f"*{caption}*", ""]
    if sheet is not None:
        lines += [
            f"![The study's first samples as MediaPipe saw them]({sheet})",
            "",
            "*The study's first 12 samples as MediaPipe saw them (white: truth; green/orange: MediaPipe's "
            "keypoints with visibility above/below 0.5), made by the study's command with `--sheet "
            f"{sheet_arg}` added (its chunks already there are skipped).*",
            "",
        ]
    lines += [f"All numbers: [`{figures}/{REPORT_JSON}`]({figures}/{REPORT_JSON}).", ""]
    return "\n".join(lines)


def write_prior_study_report(
    study: "str | Path",
    out: "str | Path",
    partial: bool = False,
    report_command: "str | None" = None,
    sheet: "str | Path | None" = None,
) -> Dict:
    """Analyse the study in folder ``study`` and write markdown ``out``, with the JSON of the
    numbers and the figures in the folder of the same name beside it (:func:`report_paths`;
    files there are replaced). ``partial``: report on the chunks there of an unfinished study.
    ``sheet``: an existing contact sheet to show (linked relative to ``out``). Returns a summary."""
    out = Path(out)
    report_paths(out)  # checks the name
    meta = read_study_meta(study)
    s = load_prior_study(study, partial=partial)
    a = analyse_prior_study(s)
    a["study"] = {
        "folder": str(study),
        "num_asked": meta["num"],
        "num_read": int(len(s["index"])),
        "seed": meta["seed"],
    }
    commands = {
        "study": study_command(meta, study),
        "report": report_command or f"hmdiff data prior-study-report --study {study} --out {out}",
    }
    a["commands"] = commands
    folder = out.with_suffix("")
    link = None
    if sheet is not None and Path(sheet).is_file():
        link = os.path.relpath(Path(sheet).resolve(), out.resolve().parent)
    with made_folder(folder):
        figures = plot_prior_study(a, folder)
        _write_text(folder / REPORT_JSON, json.dumps(a, indent=1) + "\n")
        _write_text(out, report_markdown(a, meta, commands, folder.name, link, str(sheet)))
    return {
        "report": str(out),
        "json": str(folder / REPORT_JSON),
        "figures": [str(p) for p in figures],
        "num": a["headline"]["num"],
        "num_asked": meta["num"],
        "detected_share": a["headline"]["mp"]["detected_share"],
    }


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
