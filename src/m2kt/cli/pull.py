"""Fetch a packet by digest from a store and verify it before writing it.

The received file must open as a packet, carry a signature by one of your --key files (unless
--allow-unsigned) and have exactly the digest asked for; otherwise nothing is written and the
command exits 1.

Example:
  m2kt pull sha256:3be4… --store http://127.0.0.1:8000 --key keys/alice.pub --out topics.m2kt
"""

from __future__ import annotations

import argparse

from m2kt.broker.client import pull
from m2kt.cli._common import (
    add_limit_arguments,
    add_trust_arguments,
    console,
    limits_from,
    output_file,
)
from m2kt.cli._store import add_store_arguments, store_from

NAME = "pull"
SUMMARY = "fetch a packet by digest, verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("digest", metavar="DIGEST", help="sha256:<hex> (or the bare hex)")
    parser.add_argument("--out", required=True, type=output_file, metavar="PACKET")
    add_store_arguments(parser)
    add_trust_arguments(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    packet = pull(
        store_from(args),
        args.digest,
        args.out,
        trusted_keys=args.key,
        allow_unsigned=args.allow_unsigned,
        limits=limits_from(args),
    )
    signer = packet.signer.fingerprint[:16] if packet.signer else "nobody (unsigned)"
    console.print(f"wrote {args.out} {packet.digest}, verified, signed by {signer}")
    return 0
