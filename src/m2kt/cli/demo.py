"""Run the main job on the embedded default models and print the results table.

Default (--kind packet): a knowledge packet end to end. The teacher E1 reads the shipped topics
spec into a packet, signs it; the packet is verified and ingested by the frozen student E2
through a Concept Alignment Layer; the student is verified (held-out concept probes, its own
held-in skill, safety) and would be rolled back on failure. About a minute on 2 CPU cores.

--kind patch: a model patch learned on the weak model E2 (without labels) is signed,
verified, moved to the stronger E1 with one closed-form step and scored on BBC News beside
the fine-tuned weak model (the teacher), E1 untouched, E1 fine-tuned, and the
logit-arithmetic and ensemble baselines.
Takes a few minutes on 2 CPU cores the first time, seconds after (embeddings are cached).

Examples:
  m2kt demo --out out/demo
  m2kt demo --kind patch --out out/demo-patch
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import (
    add_cache_argument,
    console,
    embedding_cache,
    output_directory,
    progress_bars,
)

NAME = "demo"
SUMMARY = "run the main job on the embedded default models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=["packet", "patch"], default="packet")
    parser.add_argument(
        "--out",
        default="out/demo",
        type=output_directory,
        metavar="DIR",
        help="where to write results",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_cache_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.kind == "packet":
        return _packet(args)
    return _patch(args)


def _packet(args: argparse.Namespace) -> int:
    from m2kt.recipes.knowledge_demo import run_knowledge_demo

    with progress_bars() as progress:
        demo = run_knowledge_demo(args.out, progress=progress, log=console.print)
    console.print("\n| | figure | inputs |\n|---|---|---|")
    for row, figure, inputs in demo.table():
        console.print(f"| {row} | {figure} | {inputs} |")
    for check in demo.ingestion.verdict.checks:
        console.print(f"{'ok  ' if check.passed else 'FAIL'} {check.name:<9} {check.reason}")
    console.print(
        f"\nsigned packet: {demo.packet} (verify with --key {demo.public_key}); "
        f"adapter: {demo.adapter or 'not written (rolled back)'}"
    )
    console.print("data-efficiency curves against logit KD: m2kt bench efficiency --mode quick")
    return 0 if demo.ingestion.accepted else 1


def _patch(args: argparse.Namespace) -> int:
    from m2kt.bench.patch.tables import markdown_table
    from m2kt.recipes.patch_demo import run_demo

    cache = embedding_cache(args)
    with progress_bars() as progress:
        result = run_demo(args.out, cache, seed=args.seed, progress=progress, log=console.print)
    run = next(iter(result.benchmark["runs"].values()))
    console.print()
    console.print(markdown_table(f"BBC News, e2 → e1, seed {args.seed}", run["summary"]))
    console.print(
        "teacher = weak fine-tuned (e2 with the adaptation to carry); student = e1; "
        "baselines = logit arithmetic, ensemble; reference = e1 fine-tuned"
    )
    console.print(f"\ninputs: {run['inputs']} (train inputs are used without labels by the patch)")
    for step, seen in result.inputs_seen.items():
        console.print(f"inputs seen, {step}: {seen}")
    console.print(
        f"\nsigned patches: {result.weak_patch}, {result.strong_patch} "
        f"(verify with --key {result.public_key})"
    )
    console.print(
        f"patched e1 from the verified packet: {100 * result.patched_accuracy:.1f}% on test"
    )
    return 0
