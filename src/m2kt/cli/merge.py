"""Merge knowledge packets of several teachers into one packet a student ingests at once.

The teachers' spaces are aligned on the probe texts they share (closed-form least squares);
concepts are compared there: same name and same meaning (duplicate), different names and the
same meaning (alias), same name and a distant meaning (conflict). Duplicates and aliases become
one concept, the survivor chosen by --policy; a conflict keeps both concepts (the loser renamed
after its teacher) or, with --conflicts winner, only the winner. Each concept keeps its source,
the merged manifest lists its parents, and a JSON record with every finding is written beside it.

Policies: confidence (higher extraction confidence), recency (newer packet), priority (the
order given by --priority, default the command line's).

Example:
  m2kt merge topics-e1.m2kt topics-l1.m2kt --out topics.m2kt --key keys/a.pub --key keys/b.pub
"""

from __future__ import annotations

import argparse
import time

from m2kt.cli._common import (
    add_limit_arguments,
    add_trust_arguments,
    console,
    error_console,
    limits_from,
    output_file,
    private_key,
    shown,
)
from m2kt.errors import UsageError
from m2kt.merge import POLICIES, MergeSettings, merge_packets
from m2kt.packet import load_packet
from m2kt.report.records import write_packet_record

NAME = "merge"
SUMMARY = "merge packets of several teachers into one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packets", nargs="+", metavar="PACKET")
    parser.add_argument("--out", required=True, type=output_file, metavar="PACKET")
    parser.add_argument("--policy", choices=POLICIES, default="confidence")
    parser.add_argument(
        "--priority",
        metavar="LIST",
        help="packet positions, most trusted first, e.g. 1,0 (default: command-line order)",
    )
    parser.add_argument("--conflicts", choices=("keep-both", "winner"), default="keep-both")
    parser.add_argument(
        "--sign", type=private_key, metavar="KEY", help="sign the merged packet with this key"
    )
    parser.add_argument("--created-at", metavar="ISO", help="creation time to record")
    add_trust_arguments(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    packets = [
        load_packet(
            p, trusted_keys=args.key, allow_unsigned=args.allow_unsigned, limits=limits_from(args)
        )
        for p in args.packets
    ]
    priority = None
    if args.priority:
        try:
            priority = tuple(int(x) for x in args.priority.split(","))
        except ValueError:
            raise UsageError(f"--priority {args.priority!r} is not a list of positions") from None
    settings = MergeSettings(
        policy=args.policy, priority=priority, conflicts=args.conflicts, created_at=args.created_at
    )
    merge = merge_packets(packets, settings)
    packet = merge.packet.signed(args.sign) if args.sign else merge.packet
    path = packet.save(args.out)
    record = write_packet_record(path, "merge", packet, time.perf_counter() - started)
    for note in merge.notes:
        error_console.print(f"note: {shown(note)}")
    for f in merge.findings:
        first, second = (
            f"{args.packets[r[0]]}:{shown((packets[r[0]].manifest.concepts or [])[r[1]].name)}"
            for r in (f.first, f.second)
        )
        console.print(
            f"{f.kind:<9} {first} ~ {second} (cos {f.similarity}): {f.reason}", markup=False
        )
    for a in merge.alignments:
        i, j = a["pair"]
        console.print(
            f"aligned {args.packets[j]} → {args.packets[i]} on {a['anchors']} shared "
            f"texts, probes and anchors (fit cosine {a['fit_cosine']})",
            markup=False,
        )
    console.print(
        f"wrote {path} {packet.digest} ({'signed' if args.sign else 'unsigned'}): "
        f"{len(packet.manifest.concepts or [])} concepts from {len(packets)} parents; "
        f"record: {record}"
    )
    return 0
