"""Show what a packet holds: parts, concepts, tensors, provenance, signer and digest.

Reading checks the whole file (schema, sizes, shapes, finite values) but not whom to trust;
pass --key to verify the signature as well.

Example:
  m2kt inspect concepts.m2kt
  m2kt inspect concepts.m2kt --json | jq .provenance
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from m2kt.cli._common import add_limit_arguments, console, limits_from, shown
from m2kt.packet import load_packet, read_packet
from m2kt.packet.summary import summarize

NAME = "inspect"
SUMMARY = "show what a packet holds"
_SHOWN_CONCEPTS = 25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packet", metavar="PACKET")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument(
        "--key", action="append", metavar="PUB", help="also verify against this key"
    )
    parser.add_argument("--all", action="store_true", help="list every concept, not the first 25")
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    limits = limits_from(args)
    if args.key:
        packet = load_packet(args.packet, trusted_keys=args.key, limits=limits)
    else:
        packet = read_packet(args.packet, limits)
    summary = summarize(packet)
    if args.json:
        console.print_json(json.dumps(summary))
        return 0
    _render(summary, show_all=args.all)
    return 0


def _render(s: dict[str, Any], show_all: bool) -> None:
    sig = s["signature"]
    if sig["verified"]:
        signed = f"verified, key {sig['key'][:16]} ({shown(sig['key_file'])})"
    elif sig["signed"]:
        claimed = shown((sig["claimed_key"] or "?")[:16])
        signed = f"signed, claims key {claimed}; not verified (pass --key)"
    else:
        signed = "not signed"
    head = Table(show_header=False, box=None, title=f"packet {s['digest']}", title_justify="left")
    for key, value in (
        ("kind", shown(s["kind"])),
        ("format", f"version {s['format_version']}, {s['body_bytes']:,} bytes"),
        ("signature", signed),
    ):
        head.add_row(key, value)
    console.print(head)

    parts = Table(title="parts", title_justify="left")
    parts.add_column("part")
    parts.add_column("content")
    for name, value in s["parts"].items():
        parts.add_row(shown(name), "—" if value is None else json.dumps(value)[:120])
    console.print(parts)

    if s["concepts"]:
        concepts = Table(title=f"concepts ({len(s['concepts'])})", title_justify="left")
        for column in ("id", "name", "probes", "verification", "layer", "method", "confidence"):
            concepts.add_column(column)
        rows = s["concepts"] if show_all else s["concepts"][:_SHOWN_CONCEPTS]
        for c in rows:
            concepts.add_row(
                *(shown(c[k]) for k in ("id", "name", "probes", "verification", "layer", "method")),
                f"{c['confidence']:.3f}",
            )
        console.print(concepts)
        if len(rows) < len(s["concepts"]):
            console.print(f"… {len(s['concepts']) - len(rows)} more (use --all)")

    tensors = Table(title="tensors", title_justify="left")
    for column in ("name", "dtype", "shape"):
        tensors.add_column(column)
    for name, spec in s["tensors"].items():
        tensors.add_row(shown(name), shown(spec["dtype"]), "×".join(map(str, spec["shape"])))
    console.print(tensors)

    provenance = Table(show_header=False, title="provenance", title_justify="left")
    for key, value in s["provenance"].items():
        text = shown(value) if isinstance(value, str) else json.dumps(value)
        provenance.add_row(shown(key), text)
    console.print(provenance)
    for line in s["worth"]:
        console.print(shown(line))
