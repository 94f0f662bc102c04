"""Create a signing key pair: KEY (private, keep it secret) and PUB (share it with users).

Example:
  m2kt keygen --out keys/            # writes keys/m2kt.key and keys/m2kt.pub
"""

from __future__ import annotations

import argparse
import re

from m2kt.cli._common import console, output_directory
from m2kt.errors import UsageError
from m2kt.packet import fingerprint_of_public_key, generate_keypair

NAME = "keygen"
SUMMARY = "create a signing key pair"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default=".", type=output_directory, metavar="DIR", help="directory for the keys"
    )
    parser.add_argument(
        "--name", default="m2kt", type=_stem, help="file stem of the keys (default m2kt)"
    )


def _stem(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", text):
        raise UsageError(
            f"key name {text!r} is not a plain file stem", "use letters, digits, _ . and -"
        )
    return text


def run(args: argparse.Namespace) -> int:
    private, public = generate_keypair(args.out, args.name)
    console.print(f"private key: {private}  (keep it secret)")
    console.print(f"public key:  {public}  (give it to whoever verifies your packets)")
    console.print(f"fingerprint: {fingerprint_of_public_key(public)}")
    return 0
