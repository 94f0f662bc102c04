"""Run a benchmark and write results.json, results.md (tables) and results.png (plot).

  m2kt bench patch --mode quick      E2 → E1 on BBC News and tweets, 200 inputs a split, 1 seed
  m2kt bench patch --mode full       E2 → E1, E1 → E3, E2 → E3, full splits, seeds 0, 1, 2

Embeddings are cached (with the seconds they took) under --cache, so a rerun costs little.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from m2kt.cli._common import add_cache_argument, console, embedding_cache

NAME = "bench"
SUMMARY = "run a benchmark and write its tables and plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=["patch"], help="which benchmark")
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--out", default="out/bench", metavar="DIR")
    add_cache_argument(parser)


def run(args: argparse.Namespace) -> int:
    from m2kt.bench.run_patch import PLANS, run_benchmark

    cache = embedding_cache(args)
    out = Path(args.out)
    result = run_benchmark(PLANS[args.mode], out, cache, log=lambda m: console.log(m))
    console.print((out / "results.md").read_text(), soft_wrap=True)
    console.print(
        f"{result['wall_clock_seconds']:.0f} s; wrote {out}/results.json, results.md, results.png"
    )
    return 0
