"""Processes a broker test or benchmark runs on loopback: a private PostgreSQL cluster and
`m2kt serve` servers. Nothing here listens anywhere but 127.0.0.1.

`private_postgres` runs `initdb` in a temporary folder (as the `postgres` user when run as root,
which PostgreSQL refuses), trust authentication on loopback only, a free port, durability off
(a scratch cluster), and stops it on exit. `ServerProcess` is `m2kt serve` as its own process.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from m2kt.broker.errors import BrokerError


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


@contextmanager
def private_postgres() -> Iterator[str]:
    """The URL of a fresh cluster's maintenance database; BrokerError if it cannot start."""
    binaries = _server_bin()
    if binaries is None:
        raise BrokerError("no PostgreSQL server binaries", "apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="m2kt-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "m2kt", "--auth=trust", "-E", "UTF8"]
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options]
    try:
        done = subprocess.run(_as_owner(initdb), capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"initdb failed: {done.stderr.strip()[-300:]}")
        started = subprocess.run(_as_owner([*ctl, "-w", "start"]), capture_output=True, text=True)
        if started.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else started.stderr
            raise BrokerError(f"pg_ctl start failed: {log.strip()[-300:]}")
        yield f"postgresql://m2kt@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([*ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server: str, name: str) -> str:
    """A new, empty database `name` on the cluster of `server`; its URL."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        return self.launch().wait()

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it to answer (`wait` does)."""
        port = free_port()
        self.url = f"{self.scheme}://127.0.0.1:{port}"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*self.command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log
            )
        return self

    def wait(self, seconds: float = 60) -> ServerProcess:
        import httpx

        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + seconds
        while True:
            try:
                health = httpx.get(f"{self.url}/v1/health", timeout=5, verify=self.verify)
                if health.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise BrokerError(f"the broker stopped: {self.log.read_text()[-500:]}")
            if time.monotonic() > deadline:
                raise BrokerError("the broker did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
