"""List and search the packets of a store, by concept name, teacher, signer, tag or publisher.

Examples:
  m2kt search --store http://127.0.0.1:8000 --concept sport
  m2kt search --store ./packets --teacher e1 --json
"""

from __future__ import annotations

import argparse
import json

from m2kt.broker.index import Query
from m2kt.cli._common import console, shown
from m2kt.cli._store import add_store_arguments, store_from

NAME = "search"
SUMMARY = "list and search a store's packets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("--concept", metavar="TEXT", help="part of a concept name")
    parser.add_argument("--teacher", metavar="ID", help="a teacher model id, e.g. e1")
    parser.add_argument("--signer", metavar="HEX", help="start of the signer key's fingerprint")
    parser.add_argument("--tag", metavar="TAG")
    parser.add_argument("--by", dest="by_publisher", metavar="NAME", help="publisher name")
    parser.add_argument("--limit", type=int, default=100, metavar="N")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON")


def run(args: argparse.Namespace) -> int:
    query = Query(args.concept, args.teacher, args.signer, args.tag, args.by_publisher, args.limit)
    entries = store_from(args).search(query)
    if args.json:
        console.print(json.dumps([e.as_dict() for e in entries], indent=1), markup=False)
        return 0
    for e in entries:
        concepts = ", ".join(e.concepts[:6]) + (" …" if len(e.concepts) > 6 else "")
        teachers = ",".join(e.teachers) or "-"
        console.print(
            f"{shown(e.digest)}  {shown(e.kind):<9} {shown(teachers):<8} "
            f"signer {shown(e.signer[:12])}  by {shown(e.publisher)}  "
            f"[{shown(', '.join(e.tags))}]  {shown(concepts)}"
        )
    console.print(f"{len(entries)} packet(s)")
    return 0
