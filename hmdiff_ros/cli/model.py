"""``hmdiff train``, ``hmdiff eval``, ``hmdiff ablate`` and ``hmdiff train-lifter``: the model on synthetic data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hmdiff_ros import defaults
from hmdiff_ros.cli.common import (
    HYPOTHESES,
    POSITIVE,
    STEPS,
    UsageError,
    check_model_paths,
    lifter_from,
    number,
    refuse_existing,
)


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train HMDiff on streamed synthetic data (resumes from --out)")
    p.add_argument(
        "--config", default=None, help="YAML training config (default: hmdiff_ros/model/configs/default.yaml)"
    )
    p.add_argument("--out", default=None, help="run folder (checkpoint, metrics.jsonl); a run there is resumed")
    p.add_argument(
        "--force",
        action="store_true",
        help="train afresh in an --out that holds anything but a resumable run (replaces its checkpoint)",
    )
    p.add_argument("--steps", **POSITIVE, default=None)
    p.add_argument("--batch-size", **POSITIVE, default=None)
    p.add_argument("--max-minutes", **number(float, 0), default=None, help="stop and checkpoint after this wall time")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--workers", **number(int, 0, 64), default=None, help="data-loader processes")
    p.add_argument("--val-every", **POSITIVE, default=None)
    p.add_argument("--lr", **number(float, 0, 1, exclusive=True), default=None, help="peak learning rate")
    p.add_argument("--warmup-steps", **number(int, 0), default=None)
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--seed", **number(int, 0), default=None, help="seed of the training stream")
    p.add_argument(
        "--study",
        default=None,
        help="a prior study of training bodies (hmdiff data prior-study --bodies train): MediaPipe's own outputs "
        "to train on beside the stream",
    )
    p.add_argument(
        "--study-fraction",
        **number(float, 0, 1),
        default=None,
        help="share of each batch drawn from --study (default 0: none)",
    )
    _add_stream_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="accuracy on a synthetic split (default: the fixed test split)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    p.add_argument("--data", default=None, help="folder written by 'hmdiff data make'")
    p.add_argument("--steps", **STEPS, default=defaults.STEPS, help="DDIM steps")
    p.add_argument("--dat", choices=defaults.DAT_MODES, default=defaults.DAT_MODE, help="DAT gradient mode")
    p.add_argument("--hypotheses", **HYPOTHESES, default=1, help="samples per input, averaged")
    p.add_argument(
        "--lifter", default=None, help="lifter checkpoint for the learned yardstick (default: the shipped one, if any)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "eval-study", help="accuracy on MediaPipe's own outputs in a prior study (held-out part), beside MediaPipe's"
    )
    p.add_argument("--study", required=True, help="folder written by 'hmdiff data prior-study'")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    p.add_argument("--steps", **STEPS, default=defaults.STEPS, help="DDIM steps")
    p.add_argument("--dat", choices=defaults.DAT_MODES, default=defaults.DAT_MODE, help="DAT gradient mode")
    p.add_argument("--hypotheses", **HYPOTHESES, default=1, help="samples per input, averaged")
    p.add_argument("--limit", **number(int, 0), default=0, help="first held-out samples to use (0: all)")
    p.add_argument(
        "--part",
        choices=("held-out", "val", "test"),
        default="held-out",
        help="the held-out part, or its first half (val: the selection set) or second half (test: never chosen on)",
    )
    p.add_argument("--seed", **number(int, 0), default=0, help="seed of the sampling noise")
    p.add_argument(
        "--lifter", default=None, help="lifter checkpoint for the learned yardstick (default: the shipped one, if any)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_eval_study)

    p = sub.add_parser(
        "eval-protocol",
        help="accuracy on the selection sets (every choice is made there) or the test sets (none is), "
        "with 95%% intervals, the spread over sampling seeds and the yardsticks",
    )
    p.add_argument("--sets", choices=("selection", "test"), required=True, help="which sets (docs/model_card.md)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    p.add_argument("--study", default=None, help="prior study folder (its val or test part); left out without it")
    p.add_argument("--real", default=None, help="eval-real data folder (test sets only); left out without it")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated sampling seeds")
    p.add_argument("--steps", **STEPS, default=defaults.STEPS, help="DDIM steps")
    p.add_argument("--dat", choices=defaults.DAT_MODES, default=defaults.DAT_MODE, help="DAT gradient mode")
    p.add_argument("--tau", **number(float, *defaults.DAT_TAU_RANGE), default=defaults.DAT_TAU, help="DAT threshold")
    p.add_argument(
        "--lambda",
        dest="dat_lambda",
        **number(float, *defaults.DAT_LAMBDA_RANGE),
        default=defaults.DAT_LAMBDA,
        help="DAT gradient step (0: the rigid start only)",
    )
    p.add_argument(
        "--max-fraction",
        **number(float, 0, 1),
        default=defaults.DAT_MAX_FRACTION,
        help="DAT acts in this first fraction of the steps (at least one)",
    )
    p.add_argument("--no-rigid", action="store_true", help="DAT without its rigid start (the gradient step only)")
    p.add_argument("--hypotheses", **HYPOTHESES, default=defaults.HYPOTHESES, help="samples per input, averaged")
    p.add_argument("--limit", **number(int, 0), default=0, help="first samples of each synthetic/study set (0: all)")
    p.add_argument(
        "--lifter", default=None, help="lifter checkpoint for the learned yardstick (default: the shipped one, if any)"
    )
    p.add_argument("--json", action="store_true", help="print JSON (default: a markdown table)")
    p.add_argument("--report", default=None, help="also write the markdown table to this file")
    p.add_argument("--force", action="store_true", help="replace an existing --report file")
    p.set_defaults(func=_cmd_eval_protocol)

    p = sub.add_parser("ablate", help="DAT off/fast/full x DDIM steps and a tau/lambda sweep -> markdown + PNG")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--out", default="docs/ablation")
    p.add_argument("--force", action="store_true", help="replace the ablation files in --out")
    p.add_argument("--limit", **number(int, 0), default=256, help="samples of the split to use (0: all)")
    p.add_argument(
        "--lifter", default=None, help="lifter checkpoint for the yardsticks (default: the shipped one, if any)"
    )
    p.add_argument("--study", default=None, help="prior study folder: also the yardsticks on MediaPipe's outputs there")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("train-lifter", help="train the MLP lifter (a yardstick) on the same synthetic stream")
    p.add_argument("--out", required=True, help="run folder (checkpoint, metrics.jsonl); a lifter run there is resumed")
    p.add_argument("--force", action="store_true", help="train afresh in an --out that holds anything but a lifter run")
    p.add_argument("--samples", **POSITIVE, default=None, help="training samples (default: the shipped HMDiff's)")
    p.add_argument("--batch-size", **POSITIVE, default=None)
    p.add_argument("--max-minutes", **number(float, 0), default=None, help="stop and checkpoint after this wall time")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--workers", **number(int, 0, 64), default=None, help="data-loader processes")
    p.add_argument("--val-every", **POSITIVE, default=None, help="steps between validations and checkpoints")
    p.add_argument("--lr", **number(float, 0, 1, exclusive=True), default=None, help="peak learning rate")
    p.add_argument("--seed", **number(int, 0), default=None, help="seed of the training stream")
    _add_stream_options(p)
    p.set_defaults(func=_cmd_train_lifter)


def _add_stream_options(p) -> None:
    from hmdiff_ros.data.engine import FAMILY_SETS
    from hmdiff_ros.data.observe import PRIOR_KINDS

    p.add_argument(
        "--prior",
        choices=PRIOR_KINDS,
        default=None,
        help="prior simulator of the training stream: hand-set, fitted to MediaPipe, mixed (each person one of the "
        "two), chain (3D errors along the kinematic chain) or graded (any of the three, errors scaled from nearly "
        "right to full; docs/data.md); default: the config's",
    )
    p.add_argument(
        "--families",
        choices=tuple(FAMILY_SETS),
        default=None,
        help="pose-family weights: default, robot (adds picking up, kneeling, floor sitting, desk reaching) or "
        "mocap (robot with 30%% retargeted CMU motion capture)",
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from hmdiff_ros.model.distributed import launch_ranks
    from hmdiff_ros.model.train import train
    from hmdiff_ros.model.train_config import load_train_config

    overrides = {
        k: v
        for k, v in {
            "out": args.out,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "max_minutes": args.max_minutes,
            "device": args.device,
            "workers": args.workers,
            "val_every": args.val_every,
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "init": args.init,
            "seed": args.seed,
            "prior": args.prior,
            "families": args.families,
            "study": args.study,
            "study_fraction": args.study_fraction,
            "force": args.force or None,
        }.items()
        if v is not None
    }
    config = args.config
    if config is None:
        config = Path(__file__).resolve().parents[1] / "model" / "configs" / "default.yaml"
    metrics = train(load_train_config(config, overrides))
    if launch_ranks().rank == 0:  # under torchrun every process returns process 0's metrics
        print(json.dumps(metrics))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from hmdiff_ros.data.store import SplitReader
    from hmdiff_ros.model.evaluate import default_test_split, evaluate
    from hmdiff_ros.model.lifter import evaluate_lifter

    check_model_paths(args)
    # the data is read and checked before any model loads: a bad split is named in a second
    split = SplitReader(args.data if args.data is not None else default_test_split())
    lifter = lifter_from(args)
    result = evaluate(
        args.checkpoint, split, steps=args.steps, dat=args.dat, hypotheses=args.hypotheses, yardsticks=True
    )
    result["lifter_mpjpe_mm"] = result["lifter_pa_mpjpe_mm"] = None
    if lifter is not None:  # the same samples, our 25 joints, root-relative like the model's figures
        lifted = evaluate_lifter(lifter, split.batches(64))
        result.update(lifter_mpjpe_mm=lifted["mpjpe_mm"], lifter_pa_mpjpe_mm=lifted["pa_mpjpe_mm"])
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['num_samples']} samples, {args.steps} steps, DAT {args.dat}: MPJPE {result['mpjpe_mm']:.1f} mm, "
            f"PA-MPJPE {result['pa_mpjpe_mm']:.1f} mm, MPVPE {result['mpvpe_mm']:.1f} mm, PA-MPVPE {result['pa_mpvpe_mm']:.1f} mm"
        )
        print(
            f"on the prior's 24 joints: MPJPE {result['mpjpe_mm_on_prior_joints']:.1f} mm "
            f"(prior {result['prior_mpjpe_mm']:.1f}), PA-MPJPE {result['pa_mpjpe_mm_on_prior_joints']:.1f} mm "
            f"(prior {result['prior_pa_mpjpe_mm']:.1f})"
        )
        if lifter is not None:
            print(
                f"lifter (learned yardstick), same samples: MPJPE {result['lifter_mpjpe_mm']:.1f} mm, "
                f"PA-MPJPE {result['lifter_pa_mpjpe_mm']:.1f} mm"
            )
    return 0


def _cmd_eval_study(args: argparse.Namespace) -> int:
    from hmdiff_ros.model.checkpoint import load_checkpoint
    from hmdiff_ros.model.dat import DATConfig
    from hmdiff_ros.study.study_eval import evaluate_study

    model = load_checkpoint(args.checkpoint)[0]
    lifter = lifter_from(args)
    r = evaluate_study(
        model,
        args.study,
        steps=args.steps,
        dat=DATConfig(mode=args.dat),
        hypotheses=args.hypotheses,
        lifter=lifter,
        limit=args.limit or None,
        part=args.part,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"{r['num_samples']} held-out samples MediaPipe detected, {args.steps} steps, DAT {args.dat}, "
        f"the prior's 24 joints: MPJPE {r['mpjpe_mm']:.1f} mm (MediaPipe {r['prior_mpjpe_mm']:.1f}), "
        f"PA-MPJPE {r['pa_mpjpe_mm']:.1f} mm (MediaPipe {r['prior_pa_mpjpe_mm']:.1f})"
    )
    if lifter is not None:
        print(f"lifter, same samples: MPJPE {r['lifter_mpjpe_mm']:.1f} mm, PA-MPJPE {r['lifter_pa_mpjpe_mm']:.1f} mm")
    return 0


def _cmd_eval_protocol(args: argparse.Namespace) -> int:
    from hmdiff_ros.model.checkpoint import load_checkpoint
    from hmdiff_ros.model.dat import DATConfig
    from hmdiff_ros.study.protocol import protocol_table, run_protocol

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if args.real is not None and args.sets != "test":
        raise UsageError("--real is a test set: use it with --sets test")
    if args.report:
        refuse_existing([Path(args.report)], "--report", args.force)
    study, real = args.study, args.real
    if study is not None:  # the data first: a bad file is named before the model loads
        from hmdiff_ros.data.study_reader import load_prior_study

        study = load_prior_study(study, held_out_only=True)
    if real is not None:
        from hmdiff_ros.study.real_data import read_real

        real = read_real(real)
    model = load_checkpoint(args.checkpoint)[0]
    lifter = lifter_from(args)
    r = run_protocol(
        model,
        args.sets,
        study=study,
        real=real,
        seeds=seeds,
        steps=args.steps,
        dat=DATConfig(
            mode=args.dat,
            tau=args.tau,
            scale=args.dat_lambda,
            max_fraction=args.max_fraction,
            rigid=not args.no_rigid,
        ),
        hypotheses=args.hypotheses,
        lifter=lifter,
        checkpoint=args.checkpoint,
        limit=args.limit or None,
    )
    table = protocol_table(r)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(table + "\n")
    print(json.dumps(r) if args.json else table)
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from hmdiff_ros.study.ablate import ablate

    refuse_existing([Path(args.out) / f"ablation.{ext}" for ext in ("md", "png", "json")], "--out", args.force)
    summary = ablate(
        args.checkpoint, args.data, out=args.out, limit=args.limit or None, lifter=args.lifter, study=args.study
    )
    print(json.dumps(summary))
    return 0


def _cmd_train_lifter(args: argparse.Namespace) -> int:
    from hmdiff_ros.model.lifter import LifterTrainConfig, train_lifter

    options = ("out", "samples", "batch_size", "max_minutes", "device", "workers", "val_every", "lr", "seed", "force")
    options += ("prior", "families")
    given = {k: getattr(args, k) for k in options if getattr(args, k) is not None and getattr(args, k) is not False}
    print(json.dumps(train_lifter(LifterTrainConfig(**given))))
    return 0
