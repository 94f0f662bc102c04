"""Remove a packet you published from a store (a broker admin may remove any).

Example:
  m2kt unpublish sha256:3be4… --store http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import console, shown
from m2kt.cli._store import add_store_arguments, store_from

NAME = "unpublish"
SUMMARY = "remove a packet you published from a store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("digest", metavar="DIGEST")
    add_store_arguments(parser, writes=True)
    parser.add_argument(
        "--signer", metavar="HEX", help="which signer's entry, when you may delete several"
    )


def run(args: argparse.Namespace) -> int:
    entry = store_from(args).delete(args.digest, args.signer)
    console.print(
        f"removed {shown(entry.digest)} signed by {shown(entry.signer[:16])} "
        f"(published by {shown(entry.publisher)})"
    )
    return 0
