"""Prove that a packet is exactly what a trusted key signed. Exit 0 if so, 1 if not.

Example:
  m2kt verify concepts.m2kt --key alice.pub --key bob.pub
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import add_limit_arguments, console, limits_from
from m2kt.packet import verify_packet

NAME = "verify"
SUMMARY = "check a packet's signature against trusted public keys"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packet", metavar="PACKET")
    parser.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="PUB",
        help="trusted public key (repeatable)",
    )
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    packet = verify_packet(args.packet, args.key, limits_from(args))
    assert packet.signer is not None
    console.print(
        f"OK {packet.digest} signed by {packet.signer.fingerprint[:16]} ({packet.signer.key_path})"
    )
    return 0
