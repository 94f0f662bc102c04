"""The broker's HTTP API (FastAPI; the OpenAPI spec is served at /openapi.json).

  POST   /v1/packets?tag=T       upload one packet file as the raw body (scope publish)
  GET    /v1/packets?concept=…   list and search (teacher, signer, tag, publisher, digest, …)
  GET    /v1/packets/{digest}?signer=F&signer=G   the file of the oldest entry signed by one of
                                 those keys (fingerprint prefixes; any signer if none), streamed
  GET    /v1/packets/{digest}/entry?signer=F      what the index knows of that entry
  DELETE /v1/packets/{digest}?signer=F   remove your entry (scope delete; admin: any)
  GET    /v1/health      the process answers
  GET    /healthz        the process, its index and its store answer (503 when one does not)

A digest can be held by several signers, one entry each (see m2kt.broker.registry).

Tokens travel as `Authorization: Bearer <token>`. Reads need scope read unless the broker was
started with public reads. Uploads stream to a staging file and are refused with 413 as soon as
they pass the size limit, before anything is parsed. With `rate_limit` each token may make that
many requests a second (bursts of as many), else 429 with Retry-After; the limit is per
process. Every request is logged as one JSON line on the `m2kt.broker.access` logger.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at
# run time, and those of the nested dependencies name local objects.

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from m2kt import __version__
from m2kt.broker.blobs import read_chunks
from m2kt.broker.errors import AuthenticationError, RateLimitedError, ScopeError, TooLargeError
from m2kt.broker.index import Entry
from m2kt.broker.index import Query as SearchQuery
from m2kt.broker.registry import Registry, normalize_digest
from m2kt.broker.tokens import Publisher, TokenTable
from m2kt.errors import M2KTError

DEFAULT_MAX_UPLOAD = 256 << 20
ACCESS_LOG = logging.getLogger("m2kt.broker.access")
_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def create_app(
    registry: Registry,
    tokens: TokenTable,
    *,
    public_read: bool = False,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    rate_limit: float | None = None,
) -> FastAPI:
    app = FastAPI(
        title="m2kt knowledge broker",
        version=__version__,
        description="Publish, search and fetch signed m2kt knowledge packets by digest.",
    )
    bearer = HTTPBearer(auto_error=False, description="a publisher token")
    limiter = RateLimiter(rate_limit) if rate_limit else None

    def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Publisher | None:
        if credentials is None:
            return None
        publisher = tokens.authenticate(credentials.credentials)
        if publisher is None:
            raise AuthenticationError("the token is not known to this broker, or has expired")
        request.state.publisher = publisher.name
        if limiter is not None:
            limiter.take(publisher.name)
        return publisher

    @app.middleware("http")
    async def access_log(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        ACCESS_LOG.info(
            json.dumps(
                {
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "ms": round(1000 * (time.perf_counter() - started), 1),
                    "publisher": getattr(request.state, "publisher", None),
                    "client": request.client.host if request.client else None,
                }
            )
        )
        return response

    def needs(scope: str) -> Callable[[Publisher | None], Publisher | None]:
        def check(who: Annotated[Publisher | None, Depends(caller)]) -> Publisher | None:
            if scope == "read" and public_read:
                return who
            if who is None:
                raise AuthenticationError(f"this request needs a token with scope {scope}")
            if scope not in who.scopes and "admin" not in who.scopes:
                raise ScopeError(f"publisher {who.name} has no scope {scope}")
            return who

        return check

    @app.exception_handler(M2KTError)
    def _error(request: Request, exc: M2KTError) -> JSONResponse:
        status = getattr(exc, "status", 400)  # broker errors carry theirs; others are bad input
        body = {"error": exc.message, "hint": exc.hint, "type": type(exc).__name__}
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitedError) else {}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        checks = {}
        for name, probe in (("index", registry.index.keys), ("store", registry.blobs.writable)):
            try:
                probe()
                checks[name] = "ok"
            except Exception as exc:  # any failure is the answer: this is a health check
                checks[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ok else "failing", "version": __version__, **checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.post("/v1/packets", status_code=201, openapi_extra=_BINARY_BODY)
    async def publish(
        request: Request,
        who: Annotated[Publisher, Depends(needs("publish"))],
        tag: Annotated[list[str], Query(max_length=64)] = [],  # noqa: B006 (FastAPI's idiom)
    ) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
            raise TooLargeError(f"upload of {declared} bytes is over {max_upload_bytes}")
        with registry.staged() as (handle, path):
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_upload_bytes:
                    raise TooLargeError(f"upload is over the limit of {max_upload_bytes} bytes")
                handle.write(chunk)
            handle.close()
            entry, new = await run_in_threadpool(registry.publish, path, who.name, who.keys, tag)
        return JSONResponse(entry.as_dict(), status_code=201 if new else 200)

    @app.get("/v1/packets")
    def search(
        who: Annotated[Publisher | None, Depends(needs("read"))],
        concept: str | None = None,
        teacher: str | None = None,
        signer: str | None = None,
        tag: str | None = None,
        publisher: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        digest: str | None = None,
    ) -> list[Entry]:
        wanted = normalize_digest(digest) if digest else None
        query = SearchQuery(concept, teacher, signer, tag, publisher, limit, offset, wanted)
        return registry.search(query)

    @app.get("/v1/packets/{digest}/entry")
    def entry(
        digest: str,
        who: Annotated[Publisher | None, Depends(needs("read"))],
        signer: Annotated[list[str], Query(max_length=16)] = [],  # noqa: B006
    ) -> Entry:
        return registry.get(digest, signer)

    @app.get(
        "/v1/packets/{digest}",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def fetch(
        digest: str,
        who: Annotated[Publisher | None, Depends(needs("read"))],
        signer: Annotated[list[str], Query(max_length=16)] = [],  # noqa: B006
    ) -> StreamingResponse:
        found, handle = registry.open_file(digest, signer)
        headers = {
            "Content-Length": str(found.size),
            "ETag": f'"{found.digest}/{found.signer}"',
            "X-M2KT-Digest": found.digest,
            "X-M2KT-Signer": found.signer,
            "X-M2KT-File-SHA256": found.file_sha256,
        }
        return StreamingResponse(
            read_chunks(handle), media_type="application/octet-stream", headers=headers
        )

    @app.delete("/v1/packets/{digest}")
    def delete(
        digest: str,
        who: Annotated[Publisher, Depends(needs("delete"))],
        signer: str | None = None,
    ) -> Entry:
        return registry.delete(digest, who.name, who.keys, signer, admin="admin" in who.scopes)

    return app


class RateLimiter:
    """A token bucket per publisher: `rate` requests a second, bursts of up to `rate`."""

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = rate, max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        with self._lock:
            now = time.monotonic()
            level, then = self._buckets.get(who, (self.burst, now))
            level = min(self.burst, level + (now - then) * self.rate)
            if level < 1:
                self._buckets[who] = (level, now)
                wait = math.ceil((1 - level) / self.rate)
                raise RateLimitedError(f"publisher {who} is over {self.rate:g} requests/s", wait)
            self._buckets[who] = (level - 1, now)


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread; yields its base URL.

    Port 0 lets the system pick a free port: the socket is bound here, so the URL is known
    before the server starts, and two test runs never race for a port.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the broker did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
