"""Options shared by the commands that talk to a packet store (publish, search, pull, unpublish)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from m2kt.broker.client import Store, open_store
from m2kt.errors import UsageError

TOKEN_ENV = "M2KT_TOKEN"
STORE_ENV = "M2KT_STORE"


def add_store_arguments(parser: argparse.ArgumentParser, *, writes: bool = False) -> None:
    """--store and --token-file; with `writes` (publish, unpublish) also --publisher, the name a
    local directory store records as owner (a broker knows you by your token)."""
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV),
        metavar="DIR|URL",
        help=f"a local store directory or a broker URL (default ${STORE_ENV})",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding the broker token (default: ${TOKEN_ENV}); none for public reads",
    )
    if writes:
        parser.add_argument(
            "--publisher",
            default="local",
            metavar="NAME",
            help="your name in a local directory store (a broker knows you by your token)",
        )


def store_from(args: argparse.Namespace, keys: list[str] | None = None) -> Store:
    if not args.store:
        raise UsageError("no store given", f"pass --store DIR|URL or set ${STORE_ENV}")
    token = os.environ.get(TOKEN_ENV)
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read token file {args.token_file}: {exc.strerror}") from None
    paths = [Path(k) for k in keys or []]
    publisher = getattr(args, "publisher", "local")
    return open_store(args.store, token=token, publisher=publisher, keys=paths)
