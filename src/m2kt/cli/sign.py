"""Sign a packet with a private key (from `m2kt keygen`); the manifest and tensors are covered.

Example:
  m2kt sign concepts.m2kt --sign keys/m2kt.key
  m2kt sign concepts.m2kt --sign keys/m2kt.key --out signed.m2kt

As in every command, --sign is your private signing key and --key a public key you trust.
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import (
    add_limit_arguments,
    console,
    limits_from,
    output_file,
    private_key,
    renamed,
)
from m2kt.packet import read_packet

NAME = "sign"
SUMMARY = "sign a packet with your private key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packet", metavar="PACKET")
    parser.add_argument(
        "--sign", required=True, type=private_key, metavar="KEY", help="private key (PEM)"
    )
    parser.add_argument("--key", action=renamed("--sign KEY"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=output_file, metavar="PATH", help="write here instead of in place"
    )
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    packet = read_packet(args.packet, limits_from(args)).signed(args.sign)
    path = packet.save(args.out or args.packet)
    console.print(f"signed {path}  {packet.digest}")
    return 0
