"""``hmdiff eval``: accuracy of a checkpoint on a synthetic split written by ``hmdiff data make``.

Without ``--data`` it uses the fixed default test split (``DEFAULT_TEST_SPLIT``: 512 samples,
seed 20000, held out from training: bodies of the test bank, poses and cameras of the held-out
stream), generated once and cached in ``~/.cache/hmdiff_ros``. Training validates with the
same loop, :func:`evaluate_batches`.

With ``yardsticks`` (``hmdiff eval`` asks for them) the figures come with the simulated
prior's own (``prior_mpjpe_mm``, ``prior_pa_mpjpe_mm``): its root-relative 3D joints U
(``prior_xyz`` of the split, the input DAT aligns to) against the ground truth on the 24
joints the prior has (``PRIOR_JOINT_INDICES``), and with the model's figures on the same
24 joints (``mpjpe_mm_on_prior_joints``, ``pa_mpjpe_mm_on_prior_joints``), aligned the same
way (root-relative as given; PA: a similarity Procrustes fit on those 24 joints).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from hmdiff_ros import defaults
from hmdiff_ros.body.joints import PRIOR_JOINT_INDICES
from hmdiff_ros.data.shapes import cache_dir
from hmdiff_ros.data.store import META_FILE, SplitReader
from hmdiff_ros.model.checkpoint import load_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.hmdiff import HMDiff
from hmdiff_ros.model.metrics import mpjpe_mm, pa_mpjpe_mm

log = logging.getLogger(__name__)
DEFAULT_TEST_SPLIT = {"split": "test", "num": 512, "seed": 20_000}  # held out (TEST_BANK, held-out stream)


def default_test_split() -> Path:
    """The fixed synthetic test split, held out from training (see the module docstring), made
    on first use. Its folder's name says "held_out": the split cached before it was held out
    (``test_split_512_20000``) is never reused."""
    folder = cache_dir() / f"test_split_held_out_{DEFAULT_TEST_SPLIT['num']}_{DEFAULT_TEST_SPLIT['seed']}"
    if (folder / META_FILE).is_file():
        try:
            if not SplitReader(folder).held_out:
                raise ValueError(f"'{folder}' is not held out from training")
        except (ValueError, FileNotFoundError) as exc:  # a damaged cache is made again, never a dead end
            log.warning("the cached test split cannot be used (%s): making it again", exc)
            (folder / META_FILE).unlink()
    if not (folder / META_FILE).is_file():
        from hmdiff_ros.data.engine import SyntheticConfig, SyntheticEngine
        from hmdiff_ros.data.shapes import TEST_BANK
        from hmdiff_ros.data.store import write_split

        engine = SyntheticEngine(SyntheticConfig(bank=TEST_BANK))
        write_split(engine, folder, DEFAULT_TEST_SPLIT["num"], DEFAULT_TEST_SPLIT["seed"], "test", force=True)
    return folder


def evaluate(
    checkpoint: "str | Path | None" = None,
    data: "str | Path | SplitReader | None" = None,
    steps: int = defaults.STEPS,
    dat: str = "fast",
    hypotheses: int = 1,
    limit: int | None = None,
    dat_config: DATConfig | None = None,
    model=None,
    yardsticks: bool = False,
    seed: int = 0,
    per_sample: bool = False,
) -> Dict:
    """``{"mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm", "num_samples"}`` (joints:
    our 25; vertices: the coarse mesh; root-relative, camera frame); ``yardsticks``: also the
    prior's figures and the model's on the prior's joints (see the module docstring);
    ``seed``: of the sampling noise; ``per_sample``: also ``"per_sample"``, each figure's
    per-sample errors (arrays, for intervals). ``data``: a split folder or one already read;
    it is read (and checked) before the model loads."""
    reader = data if isinstance(data, SplitReader) else SplitReader(data if data is not None else default_test_split())
    if model is None:
        model, _ = load_checkpoint(checkpoint)
    _check_fit(reader, model)
    cfg = dat_config if dat_config is not None else DATConfig(mode=dat)
    torch.manual_seed(seed)
    return evaluate_batches(
        model,
        reader.batches(64, limit),
        steps=steps,
        dat=cfg,
        hypotheses=hypotheses,
        yardsticks=yardsticks,
        seed=seed,
        per_sample=per_sample,
    )


def prior_errors_mm(prior_xyz: np.ndarray, joints_rel: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-sample ``prior_mpjpe_mm`` and ``prior_pa_mpjpe_mm`` of the prior's root-relative
    joints ``(B, 24, 3)`` (``PRIOR_JOINT_NAMES`` order) against root-relative ground truth
    ``(B, 25, 3)`` (our joints), on the prior's joints."""
    gt = joints_rel[:, list(PRIOR_JOINT_INDICES)]
    return {"prior_mpjpe_mm": mpjpe_mm(prior_xyz, gt), "prior_pa_mpjpe_mm": pa_mpjpe_mm(prior_xyz, gt)}


@torch.no_grad()
def evaluate_batches(
    model: HMDiff,
    batches,
    steps: int,
    dat: DATConfig,
    hypotheses: int = 1,
    seed: int = 0,
    yardsticks: bool = False,
    per_sample: bool = False,
    lifter=None,
) -> Dict:
    """Metrics (mm) over engine-style batches (numpy, with ``proxy``); ``yardsticks``: also
    the prior's and the model's on the prior's joints (see the module docstring);
    ``lifter``: also its ``lifter_mpjpe_mm`` and ``lifter_pa_mpjpe_mm`` (our 25 joints);
    ``per_sample``: also ``"per_sample"``, each figure's per-sample errors."""
    gen = torch.Generator().manual_seed(seed)
    errs: Dict[str, list] = {"mpjpe_mm": [], "pa_mpjpe_mm": [], "mpvpe_mm": [], "pa_mpvpe_mm": []}
    q = list(PRIOR_JOINT_INDICES)
    device = next(model.parameters()).device
    for b in batches:
        out = model.sample(
            torch.as_tensor(b["proxy"], device=device),
            torch.as_tensor(b["prior_xyz"], device=device),
            torch.as_tensor(b["vis"], device=device),
            steps=steps,
            dat=dat,
            hypotheses=hypotheses,
            generator=gen if device.type == "cpu" else None,
        )
        pred = out.points.cpu().numpy().astype(np.float64)
        verts, joints = pred[:, : model.num_coarse], pred[:, model.num_coarse :]
        gj, gv = b["joints_rel"].astype(np.float64), b["coarse_rel"].astype(np.float64)
        errs["mpjpe_mm"].append(mpjpe_mm(joints, gj))
        errs["pa_mpjpe_mm"].append(pa_mpjpe_mm(joints, gj))
        errs["mpvpe_mm"].append(mpjpe_mm(verts, gv))
        errs["pa_mpvpe_mm"].append(pa_mpjpe_mm(verts, gv))
        if yardsticks:
            for k, v in prior_errors_mm(b["prior_xyz"].astype(np.float64), gj).items():
                errs.setdefault(k, []).append(v)
            errs.setdefault("mpjpe_mm_on_prior_joints", []).append(mpjpe_mm(joints[:, q], gj[:, q]))
            errs.setdefault("pa_mpjpe_mm_on_prior_joints", []).append(pa_mpjpe_mm(joints[:, q], gj[:, q]))
        if lifter is not None:
            lj = np.asarray(lifter.predict(b["uv"], b["vis"], b["prior_xyz"]), np.float64)
            errs.setdefault("lifter_mpjpe_mm", []).append(mpjpe_mm(lj, gj))
            errs.setdefault("lifter_pa_mpjpe_mm", []).append(pa_mpjpe_mm(lj, gj))
    per = {k: np.concatenate(v) for k, v in errs.items()}
    out = {k: round(float(v.mean()), 2) for k, v in per.items()}
    out["num_samples"] = int(len(per["mpjpe_mm"]))
    if per_sample:
        out["per_sample"] = per
    return out


def _check_fit(reader: SplitReader, model) -> None:
    """A split made for another body topology or crop size than the model's is refused by name
    (rather than failing on array shapes inside the model)."""
    coarse = reader.arrays["coarse"].shape[1] if reader.arrays["coarse"].ndim == 3 else None
    if getattr(model, "num_coarse", coarse) != coarse:
        raise ValueError(
            f"split '{reader.folder}' has {coarse} coarse vertices per body but the model has {model.num_coarse}; "
            "write a split for this model's topology with 'hmdiff data make'"
        )
    size = getattr(getattr(getattr(model, "cfg", None), "encoder", None), "input_size", None)
    if size is not None and reader.proxy_cfg.crop_size != size:
        raise ValueError(
            f"split '{reader.folder}' has {reader.proxy_cfg.crop_size}-pixel crops but the model's encoder takes "
            f"{size}; write a split for this model with 'hmdiff data make'"
        )
