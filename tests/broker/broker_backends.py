"""The index backends every broker API test runs against: SQLite, and a real PostgreSQL.

PostgreSQL is a private cluster the tests start themselves (`m2kt.broker.processes`), stopped at
the end of the session; each test gets a fresh database. Where no PostgreSQL server binaries
exist or the cluster cannot start, the PostgreSQL cases are skipped with the reason, unless
M2KT_REQUIRE_POSTGRES=1 (set by .ci/run, which installs Debian's postgresql) makes that a
failure.

Test modules take the fixtures by assignment (`index_url = broker_backends.index_url`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from m2kt.broker import processes
from m2kt.broker.errors import BrokerError
from m2kt.broker.processes import ServerProcess, private_postgres

__all__ = ["ServerProcess", "fresh_database", "index_url", "module_index_url", "postgres_server"]

_counter = itertools.count()


def _unavailable(reason: str) -> None:
    if os.environ.get("M2KT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (M2KT_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(f"PostgreSQL cannot start here: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a private PostgreSQL cluster's maintenance database."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable('psycopg is not installed (pip install -e ".[broker]")')
    cluster = private_postgres()
    try:
        url = cluster.__enter__()
    except BrokerError as exc:
        _unavailable(exc.message)
    try:
        yield url
    finally:
        cluster.__exit__(None, None, None)


def fresh_database(server: str) -> str:
    """A new, empty database on the cluster; its URL."""
    return processes.fresh_database(server, f"m2kt_{os.getpid()}_{next(_counter)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request: pytest.FixtureRequest) -> str | None:
    """None for the embedded SQLite index, else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_index_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_server"))
