"""Who may do what on a broker: publishers, their tokens and scopes, in one JSON file.

    {"publishers": {"alice": {"token_sha256": "<hex>", "scopes": ["read", "publish", "delete"],
                              "keys": ["keys/alice.pub"],
                              "expires_at": "2027-01-01T00:00:00+00:00"}}}

Only a token's SHA-256 is stored, so the file can be read by the service without holding
secrets. `keys` are the public keys whose signatures this publisher may upload (paths relative
to the file): a publisher cannot publish what someone else signed. Scopes:

  read     list, search and fetch (needed only when the broker is not started with public reads)
  publish  upload packets
  delete   delete packets this publisher uploaded
  admin    delete any packet

`expires_at` (optional, ISO 8601 with a time zone) ends a token; `revoke_publisher` removes a
publisher's token hash. A running broker rereads the file when it changes (it is replaced
atomically), so a revocation takes effect at the next request on every process that serves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from m2kt.atomic import atomic_write_bytes
from m2kt.errors import UsageError
from m2kt.inputs import read_bounded
from m2kt.packet.canonical import strict_loads

SCOPES = ("read", "publish", "delete", "admin")
MAX_TOKEN_FILE_BYTES = 16 << 20
_HINT = "create it with `m2kt serve --add-publisher`"


@dataclass(frozen=True)
class Publisher:
    name: str
    scopes: frozenset[str]
    keys: tuple[Path, ...]
    expires_at: datetime | None = None


class TokenTable:
    """Publishers by the SHA-256 of their token; reread when the file given to `load` changes."""

    def __init__(self, publishers: dict[str, Publisher], path: Path | None = None) -> None:
        self._by_hash, self._path = publishers, path
        self._stamp = _stamp(path) if path else None

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        path = Path(path)
        return cls(_parse(path), path)

    def authenticate(self, token: str) -> Publisher | None:
        """The token's publisher; None when unknown, revoked or expired."""
        if self._path is not None and _stamp(self._path) != self._stamp:
            self._stamp = _stamp(self._path)
            self._by_hash = _parse(self._path)
        publisher = self._by_hash.get(token_hash(token))
        if publisher and publisher.expires_at and publisher.expires_at <= datetime.now(UTC):
            return None
        return publisher


def _parse(path: Path) -> dict[str, Publisher]:
    raw = _read(path)
    table = {}
    for name, entry in raw.get("publishers", {}).items():
        if not _is_entry(entry):
            raise UsageError(
                f"{path}: publisher {name!r} needs token_sha256 (64 hex digits, or empty when "
                "revoked), scopes and keys (lists of strings), and expires_at, if given, as an "
                "ISO 8601 time with a time zone",
                "create entries with `m2kt serve --add-publisher`",
            )
        scopes = frozenset(entry["scopes"])
        unknown = scopes - set(SCOPES)
        if unknown:
            raise UsageError(f"{path}: publisher {name!r} has unknown scopes {sorted(unknown)}")
        keys = tuple(path.parent / k for k in entry.get("keys", []))
        expires = entry.get("expires_at")
        expires_at = datetime.fromisoformat(expires) if expires is not None else None
        if entry["token_sha256"]:
            table[entry["token_sha256"]] = Publisher(name, scopes, keys, expires_at)
    return table


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_ino


def _is_entry(entry: object) -> bool:
    def strings(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) and v for v in value)

    return (
        isinstance(entry, dict)
        and isinstance(entry.get("token_sha256"), str)
        and re.fullmatch(r"([0-9a-f]{64})?", entry["token_sha256"]) is not None
        and strings(entry.get("scopes"))
        and strings(entry.get("keys", []))
        and _is_time(entry.get("expires_at"))
        and _is_time(entry.get("revoked_at"))
    )


def _is_time(value: object) -> bool:
    """Absent, or an ISO 8601 time with a time zone (a naive one would be read in the server's
    zone)."""
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_publisher(
    path: str | Path,
    name: str,
    scopes: list[str],
    keys: list[str | Path],
    expires_at: datetime | None = None,
) -> str:
    """Add (or replace) a publisher in the token file and return its fresh token.

    The token is shown once; only its hash is written. Key paths are stored relative to the
    file so that the file and its keys can move together.
    """
    path = Path(path)
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise UsageError(f"scopes must be some of {', '.join(SCOPES)}; got {scopes}")
    raw = _read(path) if path.exists() else {"publishers": {}}
    token = secrets.token_urlsafe(32)
    for key in keys:
        if not Path(key).is_file():
            raise UsageError(f"no such public key file: {key}", "create one with `m2kt keygen`")
    relative = [os.path.relpath(Path(k).resolve(), path.parent.resolve()) for k in keys]
    raw.setdefault("publishers", {})[name] = {
        "token_sha256": token_hash(token),
        "scopes": sorted(set(scopes)),
        "keys": relative,
    }
    if expires_at is not None:
        raw["publishers"][name]["expires_at"] = expires_at.isoformat(timespec="seconds")
    _write(path, raw)
    return token


def revoke_publisher(path: str | Path, name: str) -> None:
    """End a publisher's token at once; the entry stays, without a token, for the record."""
    path = Path(path)
    raw = _read(path)
    entry = raw.get("publishers", {}).get(name)
    if not isinstance(entry, dict):
        raise UsageError(f"{path} has no publisher {name!r}", "list them in the token file")
    entry["token_sha256"] = ""
    entry["revoked_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write(path, raw)


def _write(path: Path, raw: dict) -> None:
    atomic_write_bytes(path, (json.dumps(raw, indent=1, sort_keys=True) + "\n").encode())


def _read(path: Path) -> dict:
    data = read_bounded(path, "token file", MAX_TOKEN_FILE_BYTES, _HINT)
    try:
        raw = strict_loads(data)
    except ValueError as exc:
        raise UsageError(f"cannot read token file {path}: {exc}", _HINT) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("publishers", {}), dict):
        raise UsageError(f"{path} is not a token file (expected {{'publishers': {{…}}}})")
    return raw
