"""Run the main job on the embedded default models and print the results table.

A model patch learned on the weak model E2 (without labels) is signed, verified, moved to the
stronger E1 with one closed-form step and scored on BBC News beside the fine-tuned weak model
(the teacher), E1 untouched, E1 fine-tuned, and the logit-arithmetic and ensemble baselines.
Takes a few minutes on 2 CPU cores the first time, seconds after (embeddings are cached).

Example:
  m2kt demo --out out/demo
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import add_cache_argument, console, embedding_cache, progress_bars

NAME = "demo"
SUMMARY = "run the main job on the embedded default models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="where to write results")
    parser.add_argument("--seed", type=int, default=0)
    add_cache_argument(parser)


def run(args: argparse.Namespace) -> int:
    from m2kt.bench.report import markdown_table
    from m2kt.demo import run_demo

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
