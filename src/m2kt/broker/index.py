"""The broker's index: what each stored packet is, searchable. SQLite by default, or PostgreSQL.

An entry is one signer's packet: the key is (digest, signer), because the digest leaves the
signature out and a second key can sign the same body. Nobody can take over another signer's
entry, so a publisher can always publish and delete what their own key signed.

`Index` is the interface; `SQLiteIndex` the embedded implementation and
`m2kt.broker.postgres.PostgresIndex` the shared one, both on the SQL of `SQLIndex`. Every change
of one key's row happens inside `locked(digest, signer)`: one transaction that holds that key's
lock (SQLite: the database's write lock; PostgreSQL: an advisory lock on the key) while the
registry moves the key's file, so the row and the file change together for every process that
shares the index. Concept, teacher and tag rows reference their packet row and are deleted with
it (a foreign key with ON DELETE CASCADE), so no orphaned row can exist.

The schema is versioned: `MIGRATIONS[n]` takes a database from version n-1 to n, applied in one
transaction under a lock when the index is opened, and recorded in `schema_version`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from m2kt.packet import Packet

_V1 = [  # the schema before signers shared digests: one row per digest
    """CREATE TABLE IF NOT EXISTS packets (
    digest TEXT PRIMARY KEY, file_sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    kind TEXT NOT NULL, publisher TEXT NOT NULL, signer TEXT NOT NULL,
    created_at TEXT NOT NULL, published_at TEXT NOT NULL, entry TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS concepts (digest TEXT NOT NULL, name TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS teachers (digest TEXT NOT NULL, model TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tags (digest TEXT NOT NULL, tag TEXT NOT NULL)",
]
_CHILDREN = (("concepts", "name"), ("teachers", "model"), ("tags", "tag"))
_V2 = [
    """CREATE TABLE packets_v2 (
    digest TEXT NOT NULL, signer TEXT NOT NULL, file_sha256 TEXT NOT NULL, size BIGINT NOT NULL,
    kind TEXT NOT NULL, publisher TEXT NOT NULL, created_at TEXT NOT NULL,
    published_at TEXT NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (digest, signer))""",
    """INSERT INTO packets_v2 SELECT digest, signer, file_sha256, size, kind, publisher,
    created_at, published_at, entry FROM packets""",
    *[
        sql
        for table, column in _CHILDREN
        for sql in (
            f"""CREATE TABLE {table}_v2 (digest TEXT NOT NULL, signer TEXT NOT NULL,
            {column} TEXT NOT NULL, FOREIGN KEY (digest, signer)
            REFERENCES packets_v2 (digest, signer) ON DELETE CASCADE)""",
            f"""INSERT INTO {table}_v2 SELECT c.digest, p.signer, c.{column}
            FROM {table} c JOIN packets p ON p.digest = c.digest""",
            f"DROP TABLE {table}",
        )
    ],
    "DROP TABLE packets",
    "ALTER TABLE packets_v2 RENAME TO packets",
    *[f"ALTER TABLE {table}_v2 RENAME TO {table}" for table, _ in _CHILDREN],
    *[f"CREATE INDEX {t}_{c} ON {t} ({c})" for t, c in _CHILDREN],
    *[f"CREATE INDEX {t}_key ON {t} (digest, signer)" for t, _ in _CHILDREN],
    "CREATE INDEX packets_published ON packets (published_at, digest, signer)",
]
MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2}


@dataclass(frozen=True)
class Entry:
    """One signer's stored packet as the index and the API describe it."""

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

    @property
    def key(self) -> tuple[str, str]:
        return self.digest, self.signer

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
    match exactly. Entries come oldest first.
    """

    concept: str | None = None
    teacher: str | None = None
    signer: str | None = None
    tag: str | None = None
    publisher: str | None = None
    limit: int = 100
    offset: int = 0
    digest: str | None = None


class KeyTransaction(Protocol):
    """The writes allowed while one key's lock is held; they commit together at the end."""

    def get(self, digest: str, signer: str) -> Entry | None: ...

    def add(self, entry: Entry) -> None: ...

    def remove(self, digest: str, signer: str) -> None: ...


class Index(Protocol):
    def locked(self, digest: str, signer: str) -> Any:
        """A context manager: one transaction holding the lock of (digest, signer)."""

    def get(self, digest: str, signer: str) -> Entry | None: ...

    def search(self, query: Query) -> list[Entry]: ...

    def keys(self) -> list[tuple[str, str]]: ...


class SQLIndex:
    """The SQL both backends share; a backend supplies connections and the key lock.

    Statements are written with `?` placeholders; `placeholder` is what the driver wants.
    """

    placeholder = "?"

    def get(self, digest: str, signer: str) -> Entry | None:
        with self._connect() as db:
            return _Writes(self, db).get(digest, signer)

    def search(self, query: Query) -> list[Entry]:
        like = "LIKE ? ESCAPE '\\'"
        same_key = "digest = packets.digest AND signer = packets.signer"
        filters: list[tuple[str | None, str, list[str | None]]] = [
            (
                query.concept,
                f"EXISTS (SELECT 1 FROM concepts WHERE {same_key} AND lower(name) {like})",
                [f"%{_escape_like((query.concept or '').lower())}%"],
            ),
            (  # `e1` finds the teacher recorded as `e1:all-MiniLM-L6-v2`
                query.teacher,
                f"EXISTS (SELECT 1 FROM teachers WHERE {same_key} AND (model = ? OR model {like}))",
                [query.teacher, f"{_escape_like(query.teacher or '')}:%"],
            ),
            (
                query.tag,
                f"EXISTS (SELECT 1 FROM tags WHERE {same_key} AND tag = ?)",
                [query.tag],
            ),
            (query.signer, f"signer {like}", [f"{_escape_like(query.signer or '')}%"]),
            (query.publisher, "publisher = ?", [query.publisher]),
            (query.digest, "digest = ?", [query.digest]),
        ]
        clauses = [clause for value, clause, _ in filters if value]
        params = [p for value, _, values in filters if value for p in values]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT entry FROM packets {where} "
            "ORDER BY published_at, digest, signer LIMIT ? OFFSET ?"
        )
        with self._connect() as db:
            rows = self._run(db, sql, (*params, query.limit, query.offset)).fetchall()
        return [Entry(**json.loads(r[0])) for r in rows]

    def keys(self) -> list[tuple[str, str]]:
        with self._connect() as db:
            rows = self._run(db, "SELECT digest, signer FROM packets ORDER BY digest, signer")
            return [(r[0], r[1]) for r in rows.fetchall()]

    def _run(self, db: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = db.cursor()
        cursor.execute(sql.replace("?", self.placeholder), tuple(params))
        return cursor

    def _migrate(self, db: Any, version: int) -> None:
        """Bring the schema from `version` to the newest, inside the caller's transaction."""
        for number in sorted(MIGRATIONS):
            if number > version:
                for sql in MIGRATIONS[number]:
                    self._run(db, sql)
        self._run(db, "DELETE FROM schema_version")
        self._run(db, "INSERT INTO schema_version VALUES (?)", (max(MIGRATIONS),))

    def _connect(self) -> Any:  # a context manager yielding a DB-API connection
        raise NotImplementedError


class _Writes:
    """`KeyTransaction` over one connection inside a transaction."""

    def __init__(self, index: SQLIndex, db: Any) -> None:
        self.index, self.db = index, db

    def get(self, digest: str, signer: str) -> Entry | None:
        sql = "SELECT entry FROM packets WHERE digest = ? AND signer = ?"
        row = self.index._run(self.db, sql, (digest, signer)).fetchone()
        return Entry(**json.loads(row[0])) if row else None

    def add(self, entry: Entry) -> None:
        e = entry
        self.index._run(
            self.db,
            "INSERT INTO packets (digest, signer, file_sha256, size, kind, publisher, created_at, "
            "published_at, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.digest,
                e.signer,
                e.file_sha256,
                e.size,
                e.kind,
                e.publisher,
                e.created_at,
                e.published_at,
                json.dumps(e.as_dict(), sort_keys=True),
            ),
        )
        for (table, column), values in zip(
            _CHILDREN, (e.concepts, e.teachers, e.tags), strict=True
        ):
            for value in values:
                self.index._run(
                    self.db,
                    f"INSERT INTO {table} (digest, signer, {column}) VALUES (?, ?, ?)",
                    (e.digest, e.signer, value),
                )

    def remove(self, digest: str, signer: str) -> None:
        sql = "DELETE FROM packets WHERE digest = ? AND signer = ?"
        self.index._run(self.db, sql, (digest, signer))


class SQLiteIndex(SQLIndex):
    """One database file; WAL mode, so readers are not blocked by the one writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            _set_wal(db)
            db.execute("PRAGMA foreign_keys = OFF")  # a migration rebuilds referenced tables
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            legacy = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'packets'").fetchone()
            version = row[0] if row else (1 if legacy else 0)
            if version < max(MIGRATIONS):
                self._migrate(db, version)
            db.execute("COMMIT")

    @contextmanager
    def locked(self, digest: str, signer: str) -> Iterator[KeyTransaction]:
        """The database's write lock, taken before the first read (BEGIN IMMEDIATE)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield _Writes(self, db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA foreign_keys = ON")
            yield db


def _set_wal(db: sqlite3.Connection, attempts: int = 300) -> None:
    """Switch a database to WAL. SQLite answers "database is locked" at once, without its busy
    handler, when two processes make the switch on a new file together (two servers starting
    on one store); the mode is persistent, so the loser retries and finds it set."""
    for attempt in range(attempts):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
