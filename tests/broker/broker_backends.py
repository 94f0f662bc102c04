"""The index backends every broker API test runs against: SQLite, and a real PostgreSQL.

PostgreSQL is a private cluster the tests start themselves (`initdb` in a temporary folder,
trust authentication on loopback, a free port), stopped at the end of the session; each test
gets a fresh database. Where no PostgreSQL server binaries exist or the cluster cannot start,
the PostgreSQL cases are skipped with the reason, unless M2KT_REQUIRE_POSTGRES=1 (set by
.ci/run, which installs Debian's postgresql) makes that a failure.

Test modules take the fixtures by assignment (`index_url = broker_backends.index_url`).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

_counter = itertools.count()


def _server_bin() -> Path | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "postgres").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` user then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unavailable(reason: str) -> None:
    if os.environ.get("M2KT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (M2KT_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(f"PostgreSQL cannot start here: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a private PostgreSQL cluster's maintenance database."""
    binaries = _server_bin()
    if binaries is None:
        _unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable('psycopg is not installed (pip install -e ".[broker]")')
    root = Path(tempfile.mkdtemp(prefix="m2kt-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "m2kt", "--auth=trust", "-E", "UTF8"]
    done = subprocess.run(_as_owner(initdb), capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"initdb failed: {done.stderr.strip()[-300:]}")
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options]
    started = subprocess.run(_as_owner([*ctl, "-w", "start"]), capture_output=True, text=True)
    if started.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else started.stderr
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"pg_ctl start failed: {log.strip()[-300:]}")
    try:
        yield f"postgresql://m2kt@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([*ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server: str) -> str:
    """A new, empty database on the cluster; its URL."""
    import psycopg

    name = f"m2kt_{os.getpid()}_{next(_counter)}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


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


class ServerProcess:
    """`m2kt serve` as its own process on a free loopback port; `kill()` is kill -9.

    Its stderr (the access log among it) goes to `log`, a file, so that a busy server never
    blocks on a full pipe. `certfile` serves HTTPS; it also verifies the server's certificate.
    """

    def __init__(
        self,
        store: Path,
        tokens: Path,
        index: str | None,
        *extra: str,
        certfile: Path | None = None,
    ) -> None:
        self.command = [sys.executable, "-m", "m2kt", "serve", "--store", str(store)]
        self.command += ["--tokens", str(tokens), *extra]
        self.command += ["--index", index] if index else []
        self.verify: ssl.SSLContext | bool = False
        if certfile:
            self.verify = ssl.create_default_context(cafile=str(certfile))
        self.scheme = "https" if certfile else "http"
        self.log = Path(tempfile.mkstemp(prefix="m2kt-serve-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> ServerProcess:
        port = _free_port()
        self.url = f"{self.scheme}://127.0.0.1:{port}"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*self.command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{self.url}/v1/health", timeout=5, verify=self.verify)
                if health.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(self.log.read_text())
            if time.monotonic() > deadline:
                raise RuntimeError("the broker did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
