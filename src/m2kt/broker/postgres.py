"""The shared index: PostgreSQL, for several broker processes over one store directory.

The same tables and SQL as the SQLite index (`m2kt.broker.index.SQLIndex`). A key's changes run
in one transaction that first takes `pg_advisory_xact_lock` on the key, so two processes never
move one key's file at the same time, while writes to other keys proceed in parallel.
Connections come from a small pool per process (psycopg 3, `pip install -e ".[broker]"`).
Migrations run under a lock of their own, so processes starting together migrate once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from m2kt.broker.errors import BrokerError
from m2kt.broker.extra import require
from m2kt.broker.index import MIGRATIONS, KeyTransaction, SQLIndex, _Writes

_LOCKS = 0x6D326B74  # "m2kt": the advisory-lock namespace of this index
_MIGRATION_LOCK = 0


class PostgresIndex(SQLIndex):
    placeholder = "%s"

    def __init__(self, url: str, pool_size: int = 8) -> None:
        require("psycopg", "psycopg_pool")
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True},
                open=True,
                timeout=30,
            )
            self._pool.wait(timeout=30)
        except (psycopg.Error, Exception) as exc:  # the pool reports a refused connection so
            raise BrokerError(
                f"cannot open the PostgreSQL index at {_redacted(url)}: {str(exc).splitlines()[0]}",
                "check the URL, that PostgreSQL runs, and that the database exists",
            ) from None
        with self._connect() as db, db.transaction():
            self._run(db, "SELECT pg_advisory_xact_lock(?::int, ?::int)", (_LOCKS, _MIGRATION_LOCK))
            self._run(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._run(db, "SELECT version FROM schema_version").fetchone()
            legacy = self._run(db, "SELECT to_regclass('packets')").fetchone()[0]
            version = row[0] if row else (1 if legacy else 0)
            if version < max(MIGRATIONS):
                self._migrate(db, version)

    @contextmanager
    def locked(self, digest: str, signer: str) -> Iterator[KeyTransaction]:
        with self._connect() as db, db.transaction():
            self._run(
                db,
                "SELECT pg_advisory_xact_lock(?::int, hashtext(?))",
                (_LOCKS, f"{digest}/{signer}"),
            )
            yield _Writes(self, db)

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        with self._pool.connection() as db:
            yield db

    def close(self) -> None:
        self._pool.close()


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}://{credentials.split(':')[0]}:***@{host}"
