"""Helpers shared by the subcommands: consoles and the packet-reading options."""

from __future__ import annotations

import argparse

from rich.console import Console

from m2kt.packet import Limits

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    parser.add_argument(
        "--max-packet-bytes",
        type=int,
        default=defaults.max_file_bytes,
        metavar="N",
        help=f"refuse packet files larger than N bytes (default {defaults.max_file_bytes})",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(max_file_bytes=args.max_packet_bytes)
