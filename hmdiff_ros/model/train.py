"""``hmdiff train``: train HMDiff on the streaming synthetic data engine.

The loop (:func:`train`): the losses of :mod:`~hmdiff_ros.model.losses`; AdamW with linear
warm-up and cosine decay, gradient clipping and an EMA of the weights (what is saved and
evaluated; :mod:`~hmdiff_ros.model.optim`); bf16 autocast on CUDA; periodic validation on
fixed synthetic batches; checkpoints (safetensors + JSON) and resume from the output folder
(:mod:`~hmdiff_ros.model.resume`); Ctrl-C or SIGTERM saves the run
(:mod:`~hmdiff_ros.model.interrupts`). Under ``torchrun`` (``WORLD_SIZE`` > 1) each process
trains on its own batches of the stream with ``DistributedDataParallel``
(:mod:`~hmdiff_ros.model.distributed`); process 0 validates and writes the run. The config
and its YAML file: :mod:`~hmdiff_ros.model.train_config`.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict

import numpy as np
import torch
import torch.distributed as dist

from hmdiff_ros import defaults
from hmdiff_ros.body.topology import Topology
from hmdiff_ros.data.engine import SyntheticEngine, stream_config
from hmdiff_ros.data.study_reader import TRAINING_KEYS, study_training_set
from hmdiff_ros.model.batches import training_loader, validation_batches
from hmdiff_ros.model.checkpoint import CONFIG, save_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.model.distributed import Ranks, launch_ranks, process_group, training_device
from hmdiff_ros.model.evaluate import evaluate_batches
from hmdiff_ros.model.hmdiff import HMDiff
from hmdiff_ros.model.interrupts import interruptible
from hmdiff_ros.model.losses import Objective, coarse_edges
from hmdiff_ros.model.optim import learning_rate, optimiser_step
from hmdiff_ros.model.resume import RunFolder, jsonable, load_init, load_resume_state, resumable, save_resume_state
from hmdiff_ros.model.train_config import TrainConfig
from hmdiff_ros.observation import make_proxy

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, progress: bool = True) -> Dict:
    """Train (or resume the run in ``cfg.out``); returns the last validation metrics.

    Everything is checked and loaded before ``cfg.out`` is created or touched: a run that
    fails to start leaves no folder behind. Ctrl-C (``KeyboardInterrupt``) after at least one
    new step saves the training state at that step, so that the same command resumes it, and
    is raised again. So does a data-loader worker killed by a signal (a process-group SIGTERM,
    as systemd, docker or Slurm stop jobs), raised as ``KeyboardInterrupt(signal)``; a second
    signal while the state is saved is ignored.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on its own batches of the
    stream (``cfg.batch_size`` each; the learning rate is not scaled) with
    ``DistributedDataParallel`` (NCCL on ``cuda:LOCAL_RANK``, Gloo on the CPU); process 0
    validates, writes the run and, when interrupted, saves it; every process returns its
    metrics."""
    ranks = launch_ranks()
    device = training_device(cfg.device)
    if ranks.world_size == 1:
        return _train(cfg, progress, ranks, device)
    with process_group(ranks, device) as device:
        metrics = [_train(cfg, progress, ranks, device)]
        dist.broadcast_object_list(metrics, src=0)  # process 0's: the others validate nothing
        return metrics[0]


def _train(cfg: TrainConfig, progress: bool, ranks: Ranks, device: torch.device) -> Dict:
    """:func:`train` in this process of ``ranks``, on ``device`` (its process group, if
    several, started)."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    several, lead = ranks.world_size > 1, ranks.rank == 0
    out = Path(cfg.out)
    resume = _resumable(out, cfg)
    topology = Topology.load()
    model = HMDiff(cfg.model, topology).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = init_samples = 0
    if resume:
        start = load_resume_state(out, model, opt, device)
        init_samples = int(json.loads((out / CONFIG).read_text()).get("init_samples", 0))
        if cfg.init:
            log.warning("--init %s is ignored: the run in %s is resumed from step %d", cfg.init, out, start)
        log.info("resuming %s from step %d", out, start)
    elif cfg.init:
        init_samples = load_init(cfg.init, model)
    ema = copy.deepcopy(model).eval()
    if start and (out / "model.safetensors").is_file():
        from safetensors import SafetensorError

        try:
            ema.load_state_dict(load_file(str(out / "model.safetensors"), device=str(device)))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ValueError(
                f"--out '{out}': its model.safetensors is truncated or corrupt ({' '.join(str(exc).split())[:200]}); "
                "use --force to train afresh there or choose another --out"
            ) from None
    for p in ema.parameters():
        p.requires_grad_(False)
    if several:  # the same weights everywhere, but each process its own noise and timesteps
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, ranks.rank]).generate_state(1)[0]))

    data_cfg = stream_config(cfg.prior, cfg.families, cfg.model.encoder.input_size)
    if several and not lead:
        dist.barrier()  # process 0 builds the shape bank (once), the others then load it
    engine = SyntheticEngine(data_cfg)  # builds/loads the shape bank before workers start
    if several and lead:
        dist.barrier()
    val = validation_batches(engine, cfg.val_samples) if lead else []
    pool, study_count = None, round(cfg.study_fraction * cfg.batch_size)
    if study_count > 0:
        pool = study_training_set(cfg.study, cfg.model.encoder.input_size)
        if lead:
            log.info(
                "%d of each batch of %d from the prior study %s (%d people MediaPipe detected)",
                study_count,
                cfg.batch_size,
                cfg.study,
                len(pool["uv"]),
            )
    loader = training_loader(
        data_cfg,
        cfg.batch_size,
        seed=cfg.seed,
        workers=cfg.workers,
        skip=start,  # steps already taken
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    edges = torch.as_tensor(coarse_edges(topology.coarse_faces), device=device)
    net = Objective(model, cfg, edges)
    if several:  # averages the gradients in backward; the EMA, validation and saves use ``model``
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    shared_minutes = 0.0  # several processes: process 0's time at the last step, so that all agree

    def minutes() -> float:
        return shared_minutes if several else (time.time() - t0) / 60

    folder = RunFolder(out, resume)
    t0, last, seen = time.time(), time.time(), 0
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress or not lead)
    metrics: Dict = {}
    step = saved = start  # saved: the step of the state on disk
    loss = terms = None

    def save_interrupted() -> None:
        """The state at the step reached, by process 0 (the others just stop); no validation
        (it would take long): the state and the last training loss only."""
        bar.close()
        if step > saved and lead:
            state = {"step": step, "minutes": round((time.time() - t0) / 60, 1), "interrupted": True}
            if loss is not None:
                state["loss"] = round(loss.item(), 5)
            _save_state(folder.ready(), model, ema, opt, step, cfg, state, ranks.world_size, init_samples)
            log.warning(
                "interrupted at step %d of %d: training state saved to %s; run the same command again to resume",
                step,
                cfg.steps,
                out,
            )

    try:
        with interruptible(loader, save_interrupted) as batches:
            for batch in batches:
                if step >= cfg.steps:
                    break
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                if pool is not None:  # the draw depends on the step only, so a resumed run draws the same
                    batch = mix_study(batch, pool, study_count, np.random.default_rng([cfg.seed, ranks.rank, step]))
                proxy = make_proxy(batch["uv"], batch["vis"], batch["mask"], batch["valid"], data_cfg.proxy)
                lr = learning_rate(cfg, step, minutes())
                model.train()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss, terms = net(batch, proxy)
                optimiser_step(loss, model, ema, opt, step, lr=lr, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay)
                step += 1
                seen += len(proxy)
                bar.update(1)
                if step % 20 == 0:
                    rate = seen / (time.time() - last)
                    bar.set_postfix(
                        loss=f"{loss.item():.4f}", x0_mm=f"{terms['x0_l1'].item() * 1000:.1f}", samples_s=f"{rate:.0f}"
                    )
                    last, seen = time.time(), 0
                if several and cfg.max_minutes > 0:  # process 0's clock decides, so that all stop together
                    shared = torch.tensor([(time.time() - t0) / 60], dtype=torch.float64, device=device)
                    dist.broadcast(shared, src=0)
                    shared_minutes = float(shared.item())
                timeout = cfg.max_minutes > 0 and minutes() > cfg.max_minutes
                if step % cfg.val_every == 0 or step == cfg.steps or timeout:
                    if lead:
                        metrics = {
                            "step": step,
                            "minutes": round((time.time() - t0) / 60, 1),
                            "loss": round(loss.item(), 5),
                            **{k: round(v.item(), 5) for k, v in terms.items()},
                            "val_dat_off": evaluate_batches(ema, val, steps=defaults.STEPS, dat=DATConfig(mode="off")),
                            "val_dat_fast": evaluate_batches(
                                ema, val, steps=defaults.STEPS, dat=DATConfig(mode="fast")
                            ),
                        }
                        folder.add_metrics(metrics)
                        _save_state(folder.path, model, ema, opt, step, cfg, metrics, ranks.world_size, init_samples)
                        tqdm.write(json.dumps(metrics), file=sys.stderr)  # progress; stdout is the caller's
                    saved = step
                    if several:
                        dist.barrier()  # the others wait here, not in the next step's gradient all-reduce
                if timeout:
                    if lead:
                        log.info("time budget of %.1f min reached at step %d", cfg.max_minutes, step)
                    break
    finally:
        bar.close()
        if lead:
            folder.close()  # a run that wrote nothing leaves no empty folders
    return metrics


def _resumable(out: Path, cfg: TrainConfig) -> bool:
    """Whether ``out`` holds a run of this model to resume: a run of another model
    configuration, or one already at ``cfg.steps``, is refused (unless ``cfg.force``)."""
    model = jsonable(cfg.model.to_dict())
    return resumable(
        out,
        force=cfg.force,
        run="training run",
        differs=lambda meta: None if meta["model"] == model else "another model configuration",
        steps=cfg.steps,
        budget=f"--steps {cfg.steps}",
        option="--steps",
    )


def _save_state(
    folder: Path,
    model: HMDiff,
    ema: HMDiff,
    opt: torch.optim.Optimizer,
    step: int,
    cfg: TrainConfig,
    metrics: Dict,
    world_size: int = 1,
    init_samples: int = 0,
) -> None:
    """EMA weights as the checkpoint; raw weights + optimiser moments beside it, for resume.
    ``world_size``: the processes that trained it (``cfg.batch_size`` is per process);
    ``init_samples``: the training samples of the ``--init`` checkpoint, counted in ``samples``."""
    extra = {
        "train": jsonable(asdict(cfg)),
        "step": step,
        "metrics": metrics,
        "world_size": world_size,
        "samples": init_samples + step * cfg.batch_size * world_size,
        "init_samples": init_samples,
    }
    save_checkpoint(folder, ema, extra)
    save_resume_state(folder, model, opt)


def mix_study(batch: Dict[str, torch.Tensor], pool: Dict[str, np.ndarray], count: int, rng) -> Dict[str, torch.Tensor]:
    """``batch`` with its last ``count`` samples replaced by samples drawn (with ``rng``) from
    ``pool`` (:func:`~hmdiff_ros.data.study_reader.study_training_set`), for the keys training
    reads (:data:`~hmdiff_ros.data.study_reader.TRAINING_KEYS`); other keys are dropped. The
    pool must hold each key in the batch's own type (a uint8 mask is 0..255, a float one 0..1:
    a cast between them would change what the model sees), else ``ValueError``."""
    size = len(batch["uv"])
    count = min(count, size)
    pick = rng.integers(0, len(pool["uv"]), count)
    out = {}
    for k in TRAINING_KEYS:
        ours, theirs = batch[k], torch.as_tensor(pool[k][pick])
        if theirs.dtype != ours.dtype:
            raise ValueError(f"study sample '{k}' is {theirs.dtype}, the stream's is {ours.dtype}: expected the same")
        out[k] = torch.cat([ours[: size - count], theirs.to(ours.device)])
    return out
