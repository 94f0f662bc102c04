"""Run the main job end to end on embedded defaults and print what happened.

Today: build a knowledge packet from a tiny model, sign it with a fresh key, verify it and show
it as `m2kt inspect` would.

Example:
  m2kt demo --out out/demo
"""

from __future__ import annotations

import argparse

from m2kt.cli import inspect
from m2kt.cli._common import console

NAME = "demo"
SUMMARY = "run the main job on the embedded default models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="where to write results")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from m2kt.demo import run_demo

    result = run_demo(args.out, seed=args.seed)
    console.print(f"wrote and verified {result.packet_path} (public key {result.public_key})\n")
    return inspect.run(
        argparse.Namespace(
            packet=str(result.packet_path),
            json=False,
            key=[str(result.public_key)],
            all=False,
            max_packet_bytes=1 << 32,
        )
    )
