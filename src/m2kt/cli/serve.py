"""Run a knowledge broker: publish, search and fetch signed packets over HTTP.

Packets are kept as files in --store, indexed in SQLite inside it, or in the PostgreSQL database
of --index postgresql://…, which several `m2kt serve` processes over one --store can share. At
start the store is settled after a crash (staging files, files without their index row).
Publishers are listed in a token file (only token hashes are stored); add one with
--add-publisher, which prints the new token once. The OpenAPI spec is at /openapi.json,
interactive docs at /docs.

Examples:
  m2kt serve --tokens broker/tokens.json --add-publisher alice --key keys/alice.pub
  m2kt serve --store broker/store --tokens broker/tokens.json --port 8000 --public-read
  m2kt serve --store /srv/store --tokens t.json --index postgresql://broker@/m2kt --port 8001
  m2kt serve --load-test            # concurrent publishes and pulls on a temporary broker
"""

from __future__ import annotations

import argparse
import json
import tempfile

from m2kt.broker.extra import require
from m2kt.broker.tokens import SCOPES, add_publisher
from m2kt.cli._common import console, error_console, progress_bars
from m2kt.errors import UsageError

NAME = "serve"
SUMMARY = "run a knowledge broker (HTTP) over a packet store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR", help="the store directory (created if missing)")
    parser.add_argument("--tokens", metavar="FILE", help="the publishers' token file (JSON)")
    parser.add_argument(
        "--index",
        metavar="URL",
        help="postgresql://… to share the index between processes (default: SQLite in --store)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--public-read", action="store_true", help="list and fetch without a token")
    parser.add_argument(
        "--max-upload-bytes", type=int, default=256 << 20, metavar="N", help="refuse larger uploads"
    )
    admin = parser.add_argument_group("publishers")
    admin.add_argument("--add-publisher", metavar="NAME", help="add a publisher, print its token")
    admin.add_argument(
        "--key", action="append", default=[], metavar="PUB", help="the publisher's signing key"
    )
    admin.add_argument(
        "--scopes",
        default="read,publish,delete",
        metavar="LIST",
        help=f"comma-separated, of {', '.join(SCOPES)} (default read,publish,delete)",
    )
    load = parser.add_argument_group("load test")
    load.add_argument("--load-test", action="store_true", help="load a temporary broker and exit")
    load.add_argument("--publishers", type=int, default=4, metavar="N")
    load.add_argument("--packets", type=int, default=10, metavar="N", help="per publisher")
    load.add_argument("--pulls", type=int, default=4, metavar="N", help="per packet")


def run(args: argparse.Namespace) -> int:
    if args.add_publisher:
        if not args.tokens:
            raise UsageError("--add-publisher needs --tokens FILE")
        token = add_publisher(args.tokens, args.add_publisher, args.scopes.split(","), args.key)
        error_console.print(
            f"publisher {args.add_publisher} added to {args.tokens}; token (shown once, on stdout):"
        )
        console.print(token, markup=False)
        return 0
    require("fastapi", "uvicorn", "httpx")
    if args.load_test:
        return _load_test(args)
    if not (args.store and args.tokens):
        raise UsageError("serve needs --store DIR and --tokens FILE")
    import uvicorn

    from m2kt.broker.registry import Registry
    from m2kt.broker.service import create_app
    from m2kt.broker.tokens import TokenTable

    registry = Registry.open(args.store, args.index)
    recovered = registry.recover()
    error_console.print(
        f"store settled at start: {json.dumps(dict(sorted(recovered.items())))}", markup=False
    )
    app = create_app(
        registry,
        TokenTable.load(args.tokens),
        public_read=args.public_read,
        max_upload_bytes=args.max_upload_bytes,
    )
    error_console.print(f"m2kt broker on http://{args.host}:{args.port} (store {args.store})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _load_test(args: argparse.Namespace) -> int:
    from m2kt.broker.loadtest import load_test

    with tempfile.TemporaryDirectory(prefix="m2kt-load-") as tmp, progress_bars() as bars:
        report = load_test(
            tmp,
            publishers=args.publishers,
            packets_each=args.packets,
            pulls_each=args.pulls,
            progress=lambda d, t: bars("requests", d, t),
        )
    console.print(json.dumps(report.as_dict(), indent=1), markup=False)
    c = report.consistency
    console.print(
        f"{report.publishes} publishes and {report.pulls} verified pulls by {report.publishers} "
        f"publishers in {report.seconds:.1f} s: {report.requests_per_second:.1f} requests/s "
        f"(median publish {report.publish_p50_ms:.0f} ms, pull {report.pull_p50_ms:.0f} ms); "
        f"failures {report.failures}; index {c.entries} entries, {c.files} files, "
        f"{'consistent' if c.ok else 'INCONSISTENT'}"
    )
    return 0 if c.ok and report.failures == 0 else 1
