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
                                       seeds 0, 1, 2 (--regime latent|new-computation: one only;
                                       --auditor MODEL: a latent row screened with that auditor;
                                       --pairs tweets:e1:e2: these latent settings only)
  m2kt bench safety --mode quick|full  the safety auditor on packets with injected unsafe
                                       concepts from the frozen test set (--set test2,
                                       test3, test4, test5, test6: the second to sixth
                                       frozen sets, written blind; --set dev: the
                                       development set),
                                       teacher e1, student e2, 2 or 10 seeds
                                       (--no-screen-texts: packets without part S)
  m2kt bench broker --mode quick|full  16 or 32 clients against one and two `m2kt serve`
                                       processes, SQLite and PostgreSQL, 1,000 or 10,000
                                       operations a run, loopback only (docs/broker.md)
  m2kt bench load                      concurrent publishes and verified pulls on a temporary
                                       in-process broker (--publishers, --packets, --pulls)
  m2kt bench extract --mode quick|full concept accuracy beside a linear probe on held-out texts:
                                       e1 (quick, seed 0) or e1, e2, l1, e3 when installed (full,
                                       seeds 0-2), shipped specs and the frozen family; --model,
                                       --concepts, --method narrow it (docs/concept-spec.md)
  m2kt bench merge                     a student ingests teacher A's packet, B's, and their
                                       merge (--teachers A,B --student S --spec SPEC)

Embeddings are cached (with the seconds they took) under --cache, so a rerun costs little.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from m2kt.atomic import atomic_write_bytes
from m2kt.cli._common import (
    add_cache_argument,
    concept_spec,
    console,
    embedding_cache,
    model_reference,
    output_directory,
    progress_bars,
)

NAME = "bench"
SUMMARY = "run a benchmark and write its tables and plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=list(SUITES), help="which benchmark: " + ", ".join(SUITES))
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument(
        "--regime",
        choices=["both", "latent", "new-computation"],
        default="both",
        help="efficiency only: run one regime's settings",
    )
    parser.add_argument(
        "--pairs",
        type=_pairs,
        metavar="TASK:TEACHER:STUDENT,...",
        help="efficiency, latent only: these settings in place of the mode's "
        "(tasks bbc, tweets; e.g. tweets:e1:e2)",
    )
    parser.add_argument(
        "--adapter",
        choices=["memory", "blocks", "both"],
        default="memory",
        help="efficiency, new computation: the concept memory's rows, the rows with LoRA "
        "inside the student's blocks (every method through the same adapter), or both",
    )
    parser.add_argument(
        "--budgets",
        type=_fractions,
        metavar="F,F",
        help="efficiency only: shares of the training pool to run (default 0.005 … 1)",
    )
    parser.add_argument(
        "--seeds", type=_seeds, metavar="S,S", help="efficiency only: seeds (default the plan's)"
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
        "--fit-length",
        action="append",
        type=int,
        metavar="TOKENS",
        help="patch only: also transfer with the models reading its inputs truncated to this "
        "many tokens (repeatable; as patch transfer --fit-length)",
    )
    parser.add_argument(
        "--kills",
        type=int,
        default=0,
        metavar="N",
        help="broker only: then SIGKILL and restart a server N times under writes",
    )
    safety = parser.add_argument_group("safety only")
    safety.add_argument(
        "--set",
        choices=["test", "test2", "test3", "test4", "test5", "test6", "dev"],
        default="test",
        help="the frozen test set (default), the second one frozen before round 3 (test2), "
        "the third one frozen before round 4 (test3), the fourth one frozen before round 5 "
        "(test4), the fifth one frozen before round 6 (test5), the sixth one frozen for round 7 "
        "(test6), or the development set to tune on",
    )
    safety.add_argument(
        "--seed-count", type=int, metavar="N", help="seeds 0 … N-1 in place of the mode's"
    )
    safety.add_argument("--teacher", default="e1", type=model_reference, metavar="MODEL")
    safety.add_argument(
        "--auditor",
        type=model_reference,
        metavar="MODEL",
        help="judge the packets' probes in this model's space: safety, on both sides, as `m2kt "
        "extract --auditor` and `m2kt ingest --auditor` do; efficiency (latent), adds the row "
        "of each packet ingested with it, screen on",
    )
    safety.add_argument(
        "--no-screen-texts",
        action="store_true",
        help="packets without part S (the teacher's states of the screen's texts), as before "
        "round 6 of the auditor or as `m2kt extract --no-safety-screen` writes them",
    )
    merge = parser.add_argument_group("merge only")
    merge.add_argument("--teachers", default="e1,l1", type=model_pair, metavar="A,B")
    merge.add_argument(
        "--student", default="e2", type=model_reference, metavar="MODEL", help="merge, safety"
    )
    merge.add_argument("--spec", default="topics", type=concept_spec, metavar="SPEC")
    merge.add_argument("--overlap", type=int, default=2, metavar="N", help="shared concepts")
    merge.add_argument("--heldout", type=int, default=2, metavar="N", help="probes per concept")
    merge.add_argument("--seed", type=int, default=0)
    extract = parser.add_argument_group("extract only")
    extract.add_argument(
        "--model",
        action="append",
        type=model_reference,
        metavar="TEACHER",
        help="run this teacher (repeatable) in place of the mode's",
    )
    extract.add_argument(
        "--concepts",
        action="append",
        choices=["topics", "arithmetic", "emotions", "sciences", "sports", "cooking"],
        help="run this spec (repeatable) in place of all six",
    )
    extract.add_argument(
        "--method",
        action="append",
        choices=["bottleneck", "attribution", "clustering"],
        help="run this extraction method (repeatable) in place of the mode's",
    )
    load = parser.add_argument_group("load only")
    load.add_argument("--publishers", type=int, default=4, metavar="N")
    load.add_argument("--packets", type=int, default=10, metavar="N", help="per publisher")
    load.add_argument("--pulls", type=int, default=4, metavar="N", help="per packet")
    add_cache_argument(parser)


def model_pair(text: str) -> tuple[str, str]:
    """`A,B`: two model references."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not two models A,B (e.g. e2,e1)")
    weak, strong = (model_reference(p.strip()) for p in parts)
    return weak, strong


def run(args: argparse.Namespace) -> int:
    return SUITES[args.suite](args, Path(args.out))


def _broker(args: argparse.Namespace, out: Path) -> int:
    from m2kt.bench.broker.run import PLANS as BROKER
    from m2kt.bench.broker.run import run_broker_bench, run_crash_soak

    plan = BROKER[args.mode]
    result = run_broker_bench(plan, out, log=lambda m: console.log(m))
    console.print((out / "results.md").read_text(), soft_wrap=True, markup=False)
    runs = result["runs"]
    if args.kills > 0:
        runs.append(run_crash_soak(args.kills, plan.clients, out, lambda m: console.log(m)))
        console.print(json.dumps(runs[-1], indent=1), markup=False)
    bad = sum(r["wrong_answers"] + r["index_file_disagreements"] for r in runs)
    return 0 if bad == 0 else 1


def _load(args: argparse.Namespace, out: Path) -> int:
    from m2kt.bench.broker.load import load_test

    with tempfile.TemporaryDirectory(prefix="m2kt-load-") as tmp, progress_bars() as bars:
        report = load_test(
            tmp,
            publishers=args.publishers,
            packets_each=args.packets,
            pulls_each=args.pulls,
            progress=lambda d, t: bars("requests", d, t),
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(report.as_dict(), indent=1).encode())
    console.print(report.summary(), markup=False)
    return 0 if report.consistency.ok and report.failures == 0 else 1


def _merge(args: argparse.Namespace, out: Path) -> int:
    from m2kt.bench.merge.run import MergePlan, markdown, run_merge_benchmark

    plan = MergePlan(args.teachers, args.student, args.spec, args.overlap, args.heldout, args.seed)
    result = run_merge_benchmark(plan, out, log=lambda m: console.log(m))
    console.print(markdown(result), markup=False)
    console.print(f"wrote {out}/merge-results.json and merge-results.md")
    return 0


def _extract(args: argparse.Namespace, out: Path) -> int:
    from m2kt.bench.extract.run import PLANS as EXTRACT
    from m2kt.bench.extract.run import run_extract_bench

    plan = EXTRACT[args.mode]
    if args.model:
        plan = replace(plan, teachers=tuple(args.model))
    if args.method:
        plan = replace(plan, methods=tuple(args.method))
    if args.concepts:
        plan = replace(plan, specs=tuple(args.concepts))
    result = run_extract_bench(plan, out, log=lambda m: console.log(m))
    console.print((out / "results.md").read_text(), soft_wrap=True, markup=False)
    console.print(f"{result['wall_clock_seconds']:.0f} s; wrote {out}/results.json, results.md")
    return 0


def _safety(args: argparse.Namespace, out: Path) -> int:
    from m2kt.bench.safety.run import PLANS as SAFETY
    from m2kt.bench.safety.run import run_safety

    plan = replace(
        SAFETY[args.mode],
        concept_set=args.set,
        seeds=args.seed_count or SAFETY[args.mode].seeds,
        teacher=args.teacher,
        student=args.student,
        auditor=args.auditor,
        screen_texts=not args.no_screen_texts,
    )
    return _printed(run_safety(plan, out, log=lambda m: console.log(m)), out)


def _efficiency(args: argparse.Namespace, out: Path) -> int:
    from m2kt.bench.efficiency.run import PLANS as EFFICIENCY
    from m2kt.bench.efficiency.run import only_regime, run_efficiency

    plan = only_regime(EFFICIENCY[args.mode], args.regime)
    adapters = ("memory", "blocks") if args.adapter == "both" else (args.adapter,)
    plan = replace(plan, adapters=adapters)
    if args.budgets:
        plan = replace(plan, budgets=args.budgets)
    if args.seeds:
        plan = replace(plan, seeds=args.seeds)
    if args.auditor:
        plan = replace(plan, auditor=args.auditor)
    if args.pairs and plan.latent:
        plan = replace(plan, latent=args.pairs)
    return _printed(run_efficiency(plan, out, embedding_cache(args), log=console.log), out)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each share must be in (0, 1]")
    return values


def _pairs(text: str) -> tuple[tuple[str, str, str], ...]:
    """`task:teacher:student` settings of the latent regime, comma-separated, checked before
    anything loads."""
    from m2kt.bench.patch.run import MAX_LENGTH

    found = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in MAX_LENGTH:
            raise argparse.ArgumentTypeError(
                f"{item[:40]!r} is not task:teacher:student with a task of "
                f"{', '.join(MAX_LENGTH)} (e.g. tweets:e1:e2)"
            )
        found.append((parts[0], model_reference(parts[1]), model_reference(parts[2])))
    return tuple(found)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds are whole numbers ≥ 0")
    return values


def _patch(args: argparse.Namespace, out: Path) -> int:
    from m2kt.bench.patch.run import PLANS, run_benchmark
    from m2kt.patch.config import PatchConfig
    from m2kt.tasks import load_task

    plan = PLANS[args.mode]
    if args.task:
        plan = replace(plan, tasks=(args.task,))
    if args.pair:
        plan = replace(plan, pairs=tuple(args.pair))
    if args.full_finetune:
        plan = replace(plan, full_finetune=args.full_finetune)
    if args.fit_length:
        plan = replace(plan, fit_lengths=tuple(args.fit_length))
    config = PatchConfig() if args.logit_dim is None else PatchConfig(logit_dim=args.logit_dim)
    sweep = () if args.no_sweep else plan.logit_dims
    plan = replace(plan, logit_dims=tuple(k for k in sweep if k != config.logit_dim))
    load_task(plan.tasks[0])  # a bad task is refused before any model loads
    cache = embedding_cache(args)
    return _printed(run_benchmark(plan, out, cache, config, log=lambda m: console.log(m)), out)


def _printed(result: dict[str, Any], out: Path) -> int:
    console.print((out / "results.md").read_text(), soft_wrap=True)
    console.print(
        f"{result['wall_clock_seconds']:.0f} s; wrote {out}/results.json, results.md, results.png"
    )
    return 0


SUITES: dict[str, Callable[[argparse.Namespace, Path], int]] = {
    "patch": _patch,
    "efficiency": _efficiency,
    "safety": _safety,
    "extract": _extract,
    "merge": _merge,
    "broker": _broker,
    "load": _load,
}
