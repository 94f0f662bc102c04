"""Both kinds of store a user talks to, with one interface: a broker URL or a local directory.

`pull` never trusts the store: it asks for the entry of the digest that one of the caller's keys
signed (a digest can be held by several signers), writes the received file beside its
destination, opens it with the packet loader, verifies its signature against the caller's keys,
compares its digest with the one asked for, and only then renames it into place.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from m2kt.broker.errors import (
    AuthenticationError,
    BrokerError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RefusedPacketError,
    ScopeError,
    TooLargeError,
)
from m2kt.broker.extra import require
from m2kt.broker.index import Entry, Query
from m2kt.broker.registry import Registry, normalize_digest
from m2kt.errors import UntrustedKeyError, UsageError, VerificationError
from m2kt.packet import DEFAULT_LIMITS, Limits, Packet, fingerprint_of_public_key, load_packet
from m2kt.packet.canonical import strict_loads

_BY_STATUS: dict[int, type[BrokerError] | type[RefusedPacketError]] = {
    401: AuthenticationError,
    403: ScopeError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
}


class Store(Protocol):
    def publish(self, path: Path, tags: Sequence[str] = ()) -> Entry: ...

    def search(self, query: Query) -> list[Entry]: ...

    def download(
        self, digest: str, handle: BinaryIO, max_bytes: int, signers: Sequence[str] = ()
    ) -> None:
        """The file of the oldest entry signed by one of `signers` (fingerprint prefixes)."""

    def delete(self, digest: str, signer: str | None = None) -> Entry: ...


class BrokerClient:
    """A broker reached over HTTP; `token` is sent as a bearer token when given."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0) -> None:
        require("httpx")
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def publish(self, path: Path, tags: Sequence[str] = ()) -> Entry:
        size = Path(path).stat().st_size
        with open(path, "rb") as body:
            response = self._call(
                "POST",
                "/v1/packets",
                params={"tag": list(tags)},
                content=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
        return entry_from_body(response.content)

    def search(self, query: Query) -> list[Entry]:
        params = {k: v for k, v in vars(query).items() if v is not None}
        return entries_from_body(self._call("GET", "/v1/packets", params=params).content)

    def download(
        self, digest: str, handle: BinaryIO, max_bytes: int, signers: Sequence[str] = ()
    ) -> None:
        import httpx

        params = {"signer": list(signers)}
        try:
            with self._http.stream("GET", f"/v1/packets/{digest}", params=params) as response:
                if response.status_code != 200:
                    response.read()
                    _raise_for(response)
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > max_bytes:
                        raise TooLargeError(
                            f"{digest} is over the limit of {max_bytes} bytes",
                            "raise --max-packet-bytes if you trust this store",
                        )
                    handle.write(chunk)
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None

    def delete(self, digest: str, signer: str | None = None) -> Entry:
        params = {"signer": signer} if signer else {}
        return entry_from_body(self._call("DELETE", f"/v1/packets/{digest}", params=params).content)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **options: object):  # type: ignore[no-untyped-def]
        import httpx

        try:
            response = self._http.request(method, path, **options)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        if response.status_code >= 400:
            _raise_for(response)
        return response


class DirectoryStore:
    """A store in a local directory: the broker's own registry, used without HTTP.

    Publishing applies the broker's checks; the publisher is a name you choose and `keys` the
    public keys whose signatures you accept into the store.
    """

    def __init__(self, directory: str | Path, publisher: str, keys: Sequence[Path]) -> None:
        self.registry = Registry.open(directory)
        self.publisher, self.keys = publisher, list(keys)

    def publish(self, path: Path, tags: Sequence[str] = ()) -> Entry:
        return self.registry.publish_file(path, self.publisher, self.keys, tags)[0]

    def search(self, query: Query) -> list[Entry]:
        return self.registry.search(query)

    def download(
        self, digest: str, handle: BinaryIO, max_bytes: int, signers: Sequence[str] = ()
    ) -> None:
        entry, source = self.registry.open_file(digest, signers)
        with source:
            if entry.size > max_bytes:
                raise TooLargeError(f"{digest} is over the limit of {max_bytes} bytes")
            shutil.copyfileobj(source, handle)

    def delete(self, digest: str, signer: str | None = None) -> Entry:
        return self.registry.delete(digest, self.publisher, self.keys, signer)


def open_store(
    target: str, *, token: str | None = None, publisher: str = "local", keys: Sequence[Path] = ()
) -> Store:
    """A broker client for an http(s) URL, else the directory store at that path."""
    if target.startswith(("http://", "https://")):
        return BrokerClient(target, token)
    if Path(target).exists() and not Path(target).is_dir():
        raise UsageError(f"store {target} is a file", "pass a store directory or a broker URL")
    return DirectoryStore(target, publisher, keys)


def pull(
    store: Store,
    digest: str,
    out: str | Path,
    *,
    trusted_keys: Sequence[str | Path] = (),
    allow_unsigned: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> Packet:
    """Fetch a packet by digest into `out`, verified; nothing is written unless it verifies.

    The store is asked for the entry one of `trusted_keys` signed (any entry when there are
    none), so another signer holding the same digest cannot stand in for yours.
    """
    wanted = normalize_digest(digest)
    prints = [fingerprint_of_public_key(k) for k in trusted_keys]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    staged = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                store.download(wanted, handle, limits.max_file_bytes, prints)
            except NotFoundError:
                _explain_missing(store, wanted, prints)
                raise
        packet = load_packet(
            staged, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned, limits=limits
        )
        if packet.digest != wanted:
            raise VerificationError(f"the store sent {packet.digest} when {wanted} was asked for")
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    return packet


def _explain_missing(store: Store, digest: str, prints: Sequence[str]) -> None:
    """When the digest is there but signed only by keys the caller does not trust, say so."""
    if not prints:
        return
    others = [e.signer for e in store.search(Query(digest=digest))]
    if others:
        raise UntrustedKeyError(
            f"{digest} is in the store, but signed only by "
            f"{', '.join(s[:16] for s in others)}, which you do not trust",
            "pass the public key of the signer you expect with --key",
        )


def entry_from_body(body: bytes) -> Entry:
    """The entry a broker answered with; a malformed answer is a BrokerError, never a crash."""
    return _entries(body, many=False)[0]


def entries_from_body(body: bytes) -> list[Entry]:
    """The entries of a broker's search answer (a JSON array of entries)."""
    return _entries(body, many=True)


def _entries(body: bytes, *, many: bool) -> list[Entry]:
    try:
        value = strict_loads(body)
        if many and not isinstance(value, list):
            raise ValueError(f"expected a JSON array, got {type(value).__name__}")
        return [Entry.from_json(v) for v in (value if many else [value])]
    except ValueError as exc:
        raise BrokerError(
            f"the broker sent a malformed answer: {exc}",
            "check that --store names an m2kt broker of a compatible version",
        ) from None


def _raise_for(response) -> None:  # type: ignore[no-untyped-def]
    raise error_from_body(
        response.status_code, response.content, response.headers.get("Retry-After")
    )


def error_from_body(
    status: int, body: bytes, retry_after: str | None = None
) -> BrokerError | RefusedPacketError:
    """The error a broker's error answer stands for: `{"error", "hint", "type"}` when it is one
    of ours, else the status and the start of the body. Only strings are taken from it, and
    from a 429's `retry_after` (the Retry-After header) only a short count of seconds."""
    try:
        value = strict_loads(body)
    except ValueError:
        value = None
    fields = value if isinstance(value, dict) else {}
    message, hint, kind = (fields.get(k) for k in ("error", "hint", "type"))
    if not isinstance(message, str):
        message = f"HTTP {status}: {body[:200].decode('utf-8', errors='replace')}"
    hint = hint[:500] if isinstance(hint, str) else None
    # A 422 is a refused packet only when the service says so; FastAPI also answers 422 for a
    # query value out of range.
    if status == 422 and kind == "RefusedPacketError":
        return RefusedPacketError(f"broker: {message[:500]}", hint)
    if status == 429:
        wait = retry_after or ""
        seconds = int(wait) if re.fullmatch(r"[0-9]{1,6}", wait) else 1
        return RateLimitedError(f"broker: {message[:500]}", seconds)
    return _BY_STATUS.get(status, BrokerError)(f"broker: {message[:500]}", hint)


def _unreachable(url: str, exc: Exception) -> BrokerError:
    return BrokerError(
        f"cannot reach the broker at {url}: {exc}", "check the URL and that `m2kt serve` runs"
    )
