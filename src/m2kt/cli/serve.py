"""Run a knowledge broker: publish, search and fetch signed packets over HTTP.

Packets are kept as files in --store, indexed in SQLite inside it, or in the PostgreSQL database
of --index postgresql://…, which several `m2kt serve` processes over one --store can share. At
start the store is settled after a crash (staging files, files without their index row).
Publishers are listed in a token file (only token hashes are stored); add one with
--add-publisher, which prints the new token once. The OpenAPI spec is at /openapi.json,
interactive docs at /docs.

The upload screen reads words only (m2kt.broker.screening): it refuses a concept whose name and
probes contain at least 60% of the content words (4+ letters) of one line of the unsafe-concept
list. It does not catch, because the broker runs no model:
  - a harmful vector under a benign name and benign probes (a trojan), or blended into one;
  - harmful probes worded unlike every list line (synonyms, paraphrase, another language,
    misspellings), and any harm the list does not name (stalking, kidnapping, sabotage, ...);
  - harm in reasoning traces, attention or anchor states: only concept names and probes are read;
  - a forged part S (the teacher's states of the screen's texts): the broker does not fit the
    screen from it; `m2kt ingest` does, beside the student's own reading.
The meaning screen runs where a model is: at `m2kt extract` (teacher) and `m2kt ingest`
(student), which drop what it flags; pulling a packet from a broker is no substitute.

Examples:
  m2kt serve --tokens broker/tokens.json --add-publisher alice --key keys/alice.pub
  m2kt serve --store broker/store --tokens broker/tokens.json --port 8000 --public-read
  m2kt serve --store /srv/store --tokens t.json --index postgresql://broker@/m2kt --port 8001
  m2kt serve --tokens broker/tokens.json --revoke alice     # her token stops working at once
  m2kt serve --store s --tokens t.json --certfile cert.pem --keyfile key.pem --rate-limit 20
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime, timedelta

from m2kt.broker.extra import require
from m2kt.broker.tokens import SCOPES, add_publisher, revoke_publisher
from m2kt.cli._common import (
    broker_index,
    console,
    error_console,
    output_directory,
    pem_file,
    renamed,
)
from m2kt.errors import UsageError

NAME = "serve"
SUMMARY = "run a knowledge broker (HTTP) over a packet store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=output_directory,
        metavar="DIR",
        help="the store directory (created if missing)",
    )
    parser.add_argument("--tokens", metavar="FILE", help="the publishers' token file (JSON)")
    parser.add_argument(
        "--index",
        type=broker_index,
        metavar="URL",
        help="postgresql://… to share the index between processes (default: SQLite in --store)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--public-read", action="store_true", help="list and fetch without a token")
    parser.add_argument(
        "--max-upload-bytes", type=int, default=256 << 20, metavar="N", help="refuse larger uploads"
    )
    parser.add_argument(
        "--certfile", type=pem_file, metavar="PEM", help="serve HTTPS with this certificate"
    )
    parser.add_argument(
        "--keyfile", type=pem_file, metavar="PEM", help="the certificate's private key"
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        metavar="N",
        help="requests per second per token, per process (429 with Retry-After beyond)",
    )
    admin = parser.add_argument_group("publishers")
    admin.add_argument("--add-publisher", metavar="NAME", help="add a publisher, print its token")
    admin.add_argument(
        "--expires-in", type=float, metavar="DAYS", help="with --add-publisher: the token's life"
    )
    admin.add_argument("--revoke", metavar="NAME", help="end a publisher's token now")
    admin.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PUB",
        help="the publisher's public key, trusted for its uploads (repeatable)",
    )
    admin.add_argument(
        "--scopes",
        default="read,publish,delete",
        metavar="LIST",
        help=f"comma-separated, of {', '.join(SCOPES)} (default read,publish,delete)",
    )
    parser.add_argument("--load-test", action=renamed("m2kt bench load"), help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.revoke:
        if not args.tokens:
            raise UsageError("--revoke needs --tokens FILE")
        revoke_publisher(args.tokens, args.revoke)
        error_console.print(f"publisher {args.revoke}'s token revoked in {args.tokens}")
        return 0
    if args.add_publisher:
        if not args.tokens:
            raise UsageError("--add-publisher needs --tokens FILE")
        expires = None
        if args.expires_in is not None:
            if not 0 < args.expires_in <= 36_500:
                raise UsageError("--expires-in must be a number of days in (0, 36500]")
            expires = datetime.now(UTC) + timedelta(days=args.expires_in)
        scopes = args.scopes.split(",")
        token = add_publisher(args.tokens, args.add_publisher, scopes, args.key, expires)
        error_console.print(
            f"publisher {args.add_publisher} added to {args.tokens}; token (shown once, on stdout):"
        )
        console.print(token, markup=False)
        return 0
    require("fastapi", "uvicorn", "httpx")
    if not (args.store and args.tokens):
        raise UsageError("serve needs --store DIR and --tokens FILE")
    if bool(args.certfile) != bool(args.keyfile):
        raise UsageError("--certfile and --keyfile go together")
    if args.rate_limit is not None and not args.rate_limit > 0:
        raise UsageError("--rate-limit must be a positive number of requests per second")
    if args.certfile:
        _check_certificate(args.certfile, args.keyfile)
    import uvicorn

    from m2kt.broker.registry import Registry
    from m2kt.broker.service import create_app
    from m2kt.broker.tokens import TokenTable

    tokens = TokenTable.load(args.tokens)  # refused before the store is touched
    registry = Registry.open(args.store, args.index)
    recovered = registry.recover()
    error_console.print(
        f"store settled at start: {json.dumps(dict(sorted(recovered.items())))}", markup=False
    )
    app = create_app(
        registry,
        tokens,
        public_read=args.public_read,
        max_upload_bytes=args.max_upload_bytes,
        rate_limit=args.rate_limit,
    )
    access = logging.getLogger("m2kt.broker.access")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    scheme = "https" if args.certfile else "http"
    error_console.print(f"m2kt broker on {scheme}://{args.host}:{args.port} (store {args.store})")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,  # m2kt.broker.access logs each request as one JSON line
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
    )
    return 0


def _check_certificate(certfile: str, keyfile: str) -> None:
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(
            f"cannot use {certfile} with {keyfile} for HTTPS: {exc}",
            "pass a PEM certificate and its matching private key",
        ) from None
