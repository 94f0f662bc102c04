"""Publish signed packets to a store: a broker URL or a local directory.

The store checks each packet before keeping it: container and schema, the signature against the
publisher's registered keys (a broker) or against --key (a local directory), and the safety
screen. Publishing the same file again changes nothing.

Examples:
  M2KT_TOKEN=… m2kt publish topics.m2kt --store http://127.0.0.1:8000 --tag news
  m2kt publish topics.m2kt --store ./packets --key keys/m2kt.pub
"""

from __future__ import annotations

import argparse
from pathlib import Path

from m2kt.cli._common import console, shown
from m2kt.cli._store import add_store_arguments, store_from

NAME = "publish"
SUMMARY = "publish packets to a broker or a local store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packets", nargs="+", metavar="PACKET")
    add_store_arguments(parser, writes=True)
    parser.add_argument("--tag", action="append", default=[], metavar="TAG", help="repeatable")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PUB",
        help="for a local store: public keys whose signatures it accepts (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from m2kt.errors import UsageError

    missing = [path for path in args.packets if not Path(path).is_file()]
    if missing:
        raise UsageError(f"no such packet file: {', '.join(missing)}", "check the path")
    store = store_from(args, args.key)
    for path in args.packets:
        entry = store.publish(Path(path), args.tag)
        console.print(
            f"published {entry.digest} ({entry.size:,} bytes, {len(entry.concepts)} concepts, "
            f"signer {shown(entry.signer[:16])}, publisher {shown(entry.publisher)})"
        )
    return 0
