"""The broker's index: what each stored packet is, searchable. SQLite by default.

`Index` is the interface; `SQLiteIndex` the embedded implementation. A PostgreSQL index would
implement the same five methods with the same tables. Every write is one transaction, and each
call opens its own connection, so threads and processes sharing one database file never see a
half-written entry (SQLite's WAL journal serialises the writers; readers are not blocked).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from m2kt.packet import Packet

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (
    digest TEXT PRIMARY KEY, file_sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    kind TEXT NOT NULL, publisher TEXT NOT NULL, signer TEXT NOT NULL,
    created_at TEXT NOT NULL, published_at TEXT NOT NULL, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS concepts (digest TEXT NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS teachers (digest TEXT NOT NULL, model TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (digest TEXT NOT NULL, tag TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS concepts_name ON concepts (name);
CREATE INDEX IF NOT EXISTS teachers_model ON teachers (model);
CREATE INDEX IF NOT EXISTS tags_tag ON tags (tag);
CREATE INDEX IF NOT EXISTS concepts_digest ON concepts (digest);
CREATE INDEX IF NOT EXISTS teachers_digest ON teachers (digest);
CREATE INDEX IF NOT EXISTS tags_digest ON tags (digest);
"""


@dataclass(frozen=True)
class Entry:
    """One stored packet as the index and the API describe it."""

    digest: str
    file_sha256: str
    size: int
    kind: str
    publisher: str
    signer: str
    created_at: str
    published_at: str
    teachers: list[str] = field(default_factory=list)
    concepts: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)

    @classmethod
    def describe(
        cls,
        packet: Packet,
        *,
        file_sha256: str,
        size: int,
        publisher: str,
        published_at: str,
        tags: list[str],
    ) -> Entry:
        m = packet.manifest
        return cls(
            digest=packet.digest,
            file_sha256=file_sha256,
            size=size,
            kind=m.kind,
            publisher=publisher,
            signer=packet.signer.fingerprint if packet.signer else "",
            created_at=m.provenance.created_at,
            published_at=published_at,
            teachers=[model.id for model in m.provenance.models],
            concepts=[c.name for c in m.concepts or []],
            tags=sorted(set(tags)),
            parents=list(m.provenance.parents),
        )

    @classmethod
    def from_json(cls, value: Any) -> Entry:
        """An entry from a decoded JSON object (a broker's answer: untrusted); fields of the
        wrong type are a ValueError, unknown fields are dropped (a newer broker may add some)."""
        if not isinstance(value, dict):
            raise ValueError(f"an entry is a JSON object, not {type(value).__name__}")
        fields: dict[str, Any] = {}
        for name, kind in cls.__annotations__.items():
            item = value.get(name)
            if kind == "int":
                ok = isinstance(item, int) and not isinstance(item, bool) and item >= 0
            elif kind == "str":
                ok = isinstance(item, str)
            else:
                item = [] if item is None else item
                ok = isinstance(item, list) and all(isinstance(v, str) for v in item)
            if not ok:
                raise ValueError(f"entry field {name!r} is missing or not a {kind}")
            fields[name] = item
        return cls(**fields)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    """Search filters, all optional and combined with AND.

    `concept` matches a substring of a concept name, case-insensitively; `signer` a prefix of
    the signer key's fingerprint; `teacher` a model id, or its part before a colon; the others
    match exactly.
    """

    concept: str | None = None
    teacher: str | None = None
    signer: str | None = None
    tag: str | None = None
    publisher: str | None = None
    limit: int = 100
    offset: int = 0


class Index(Protocol):
    def add(self, entry: Entry) -> bool:
        """Insert; False (and no change) when the digest is already indexed."""

    def get(self, digest: str) -> Entry | None: ...

    def search(self, query: Query) -> list[Entry]: ...

    def remove(self, digest: str) -> bool: ...

    def digests(self) -> list[str]: ...


class SQLiteIndex:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def add(self, entry: Entry) -> bool:
        with self._write() as db:
            if db.execute("SELECT 1 FROM packets WHERE digest = ?", (entry.digest,)).fetchone():
                return False
            db.execute(
                "INSERT INTO packets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.digest,
                    entry.file_sha256,
                    entry.size,
                    entry.kind,
                    entry.publisher,
                    entry.signer,
                    entry.created_at,
                    entry.published_at,
                    json.dumps(entry.as_dict(), sort_keys=True),
                ),
            )
            for table, column, values in (
                ("concepts", "name", entry.concepts),
                ("teachers", "model", entry.teachers),
                ("tags", "tag", entry.tags),
            ):
                db.executemany(
                    f"INSERT INTO {table} (digest, {column}) VALUES (?, ?)",
                    [(entry.digest, v) for v in values],
                )
            return True

    def get(self, digest: str) -> Entry | None:
        with self._connect() as db:
            row = db.execute("SELECT entry FROM packets WHERE digest = ?", (digest,)).fetchone()
        return Entry(**json.loads(row[0])) if row else None

    def search(self, query: Query) -> list[Entry]:
        like = "LIKE ? ESCAPE '\\'"
        filters: list[tuple[str | None, str, list[str | None]]] = [
            (
                query.concept,
                f"digest IN (SELECT digest FROM concepts WHERE name {like})",
                [f"%{_escape_like(query.concept or '')}%"],
            ),
            (  # `e1` finds the teacher recorded as `e1:all-MiniLM-L6-v2`
                query.teacher,
                f"digest IN (SELECT digest FROM teachers WHERE model = ? OR model {like})",
                [query.teacher, f"{_escape_like(query.teacher or '')}:%"],
            ),
            (query.tag, "digest IN (SELECT digest FROM tags WHERE tag = ?)", [query.tag]),
            (query.signer, f"signer {like}", [f"{_escape_like(query.signer or '')}%"]),
            (query.publisher, "publisher = ?", [query.publisher]),
        ]
        clauses = [clause for value, clause, _ in filters if value]
        params = [p for value, _, values in filters if value for p in values]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT entry FROM packets {where} ORDER BY published_at, digest LIMIT ? OFFSET ?"
        with self._connect() as db:
            rows = db.execute(sql, (*params, query.limit, query.offset)).fetchall()
        return [Entry(**json.loads(r[0])) for r in rows]

    def remove(self, digest: str) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM packets WHERE digest = ?", (digest,)).rowcount
            for table in ("concepts", "teachers", "tags"):
                db.execute(f"DELETE FROM {table} WHERE digest = ?", (digest,))
            return gone > 0

    def digests(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT digest FROM packets ORDER BY digest")]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout = 30000")
            yield db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction: the write lock is taken before the first read."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
