"""Run a benchmark and write results.json, results.md (tables) and results.png (plot).

  m2kt bench patch --mode quick        E2 → E1 on BBC News and tweets, 200 inputs a split, 1 seed
  m2kt bench patch --mode full         E2 → E1, E1 → E3, E2 → E3, full splits, seeds 0, 1, 2,
                                       and a sweep of the logit width K (128, 512)
  m2kt bench patch --task FILE.csv     the same on your own task (text,label columns);
                                       --pair WEAK,STRONG and --logit-dim K narrow or change it;
                                       --full-finetune weak|both adds encoders tuned end to end
  m2kt bench efficiency --mode quick   knowledge packet vs logit KD vs supervised tuning at
                                       budgets 0.5–100%: BBC e1 → e2 (400 inputs a split) and
                                       (a+b+c) mod 11 with tiny transformers, 1 seed
  m2kt bench efficiency --mode full    BBC and tweets e1 → e2, (a+b+c) mod 17 (3,000 inputs),
                                       seeds 0, 1, 2 (--regime latent|new-computation: one only)
  m2kt bench safety --mode quick|full  the safety auditor on packets with injected unsafe
                                       concepts from the frozen test set (--set dev: the
                                       development set), teacher e1, student e2, 2 or 10 seeds
  m2kt bench broker --mode quick|full  16 or 32 clients against one and two `m2kt serve`
                                       processes, SQLite and PostgreSQL, 1,000 or 10,000
                                       operations a run, loopback only (docs/broker.md)

Embeddings are cached (with the seconds they took) under --cache, so a rerun costs little.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from m2kt.cli._common import (
    add_cache_argument,
    console,
    embedding_cache,
    model_reference,
    output_directory,
)

NAME = "bench"
SUMMARY = "run a benchmark and write its tables and plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "suite", choices=["patch", "efficiency", "safety", "broker"], help="which benchmark"
    )
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument(
        "--regime",
        choices=["both", "latent", "new-computation"],
        default="both",
        help="efficiency only: run one regime's settings",
    )
    parser.add_argument("--out", default="out/bench", type=output_directory, metavar="DIR")
    parser.add_argument("--task", help="patch only: bbc, tweets or your CSV, in place of both")
    parser.add_argument(
        "--pair",
        action="append",
        type=model_pair,
        metavar="WEAK,STRONG",
        help="patch only: run this pair (repeatable) in place of the mode's",
    )
    parser.add_argument(
        "--logit-dim", type=int, metavar="K", help="patch only: the patch's width K (default 256)"
    )
    parser.add_argument(
        "--no-sweep", action="store_true", help="patch only: skip the full plan's K sweep"
    )
    parser.add_argument(
        "--full-finetune",
        choices=["weak", "both"],
        help="patch only: also fine-tune the weak (or both) encoders end to end, every weight, "
        "and learn the patch from the weak one (slow on a CPU; kept in OUT/finetuned, reused)",
    )
    parser.add_argument(
        "--kills",
        type=int,
        default=0,
        metavar="N",
        help="broker only: then SIGKILL and restart a server N times under writes",
    )
    parser.add_argument(
        "--set",
        choices=["test", "dev"],
        default="test",
        help="safety only: the frozen test set (default) or the development set to tune on",
    )
    parser.add_argument(
        "--seeds", type=int, metavar="N", help="safety only: in place of the mode's"
    )
    parser.add_argument("--teacher", type=model_reference, metavar="MODEL", help="safety only")
    parser.add_argument("--student", type=model_reference, metavar="MODEL", help="safety only")
    add_cache_argument(parser)


def model_pair(text: str) -> tuple[str, str]:
    """`WEAK,STRONG`: two model references."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not WEAK,STRONG (e.g. e2,e1)")
    weak, strong = (model_reference(p.strip()) for p in parts)
    return weak, strong


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.suite == "broker":
        from m2kt.broker.bench import PLANS as BROKER
        from m2kt.broker.bench import run_broker_bench, run_crash_soak

        broker_plan = BROKER[args.mode]
        result = run_broker_bench(broker_plan, out, log=lambda m: console.log(m))
        console.print((out / "results.md").read_text(), soft_wrap=True, markup=False)
        runs = result["runs"]
        if args.kills > 0:
            soak = run_crash_soak(args.kills, broker_plan.clients, out, lambda m: console.log(m))
            runs.append(soak)
            console.print(json.dumps(runs[-1], indent=1), markup=False)
        bad = sum(r["wrong_answers"] + r["index_file_disagreements"] for r in runs)
        return 0 if bad == 0 else 1
    cache = embedding_cache(args)
    if args.suite == "safety":
        from m2kt.bench.safety_run import PLANS as SAFETY
        from m2kt.bench.safety_run import run_safety

        safety_plan = replace(
            SAFETY[args.mode],
            concept_set=args.set,
            seeds=args.seeds or SAFETY[args.mode].seeds,
            teacher=args.teacher or SAFETY[args.mode].teacher,
            student=args.student or SAFETY[args.mode].student,
        )
        result = run_safety(safety_plan, out, log=lambda m: console.log(m))
    elif args.suite == "efficiency":
        from m2kt.bench.run_efficiency import PLANS as EFFICIENCY
        from m2kt.bench.run_efficiency import only_regime, run_efficiency

        plan = only_regime(EFFICIENCY[args.mode], args.regime)
        result = run_efficiency(plan, out, cache, log=lambda m: console.log(m))
    else:
        from m2kt.bench.run_patch import PLANS, run_benchmark
        from m2kt.patch.config import PatchConfig
        from m2kt.tasks import load_task

        patch_plan = PLANS[args.mode]
        if args.task:
            patch_plan = replace(patch_plan, tasks=(args.task,))
        if args.pair:
            patch_plan = replace(patch_plan, pairs=tuple(args.pair))
        if args.full_finetune:
            patch_plan = replace(patch_plan, full_finetune=args.full_finetune)
        config = PatchConfig() if args.logit_dim is None else PatchConfig(logit_dim=args.logit_dim)
        sweep = () if args.no_sweep else patch_plan.logit_dims
        patch_plan = replace(
            patch_plan, logit_dims=tuple(k for k in sweep if k != config.logit_dim)
        )
        load_task(patch_plan.tasks[0])  # a bad task is refused before any model loads
        result = run_benchmark(patch_plan, out, cache, config, log=lambda m: console.log(m))
    console.print((out / "results.md").read_text(), soft_wrap=True)
    console.print(
        f"{result['wall_clock_seconds']:.0f} s; wrote {out}/results.json, results.md, results.png"
    )
    return 0
