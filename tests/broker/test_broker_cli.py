"""`m2kt serve` as its own process on loopback, driven by `m2kt publish`, `search`, `pull`,
`unpublish`; and the same commands on a local directory store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from m2kt.broker.extra import require
from m2kt.cli import main
from m2kt.errors import UsageError

from conftest import knowledge_packet


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path, keys, capsys) -> Iterator[tuple[str, Path]]:
    """A broker process and a file holding alice's token (made with `serve --add-publisher`)."""
    tokens = tmp_path / "tokens.json"
    assert (
        main(["serve", "--tokens", str(tokens), "--add-publisher", "alice", "--key", str(keys[1])])
        == 0
    )
    token_file = tmp_path / "alice.token"
    printed = capsys.readouterr().out.strip()
    assert len(printed.splitlines()) == 1  # stdout holds the token alone: `> alice.token` works
    token_file.write_text(printed)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "m2kt",
        "serve",
        "--store",
        str(tmp_path / "store"),
        "--tokens",
        str(tokens),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.1)
        yield url, token_file
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_publish_search_pull_round_trip(
    served, keys, other_keys, tmp_path: Path, capsys
) -> None:
    url, token_file = served
    packet = knowledge_packet(201).signed(keys[0])
    path = packet.save(tmp_path / "topics.m2kt")
    auth = ["--store", url, "--token-file", str(token_file)]
    assert main(["publish", str(path), *auth, "--tag", "news"]) == 0
    assert packet.digest in capsys.readouterr().out

    assert main(["search", *auth, "--concept", "concept c2", "--tag", "news", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [e["digest"] for e in found] == [packet.digest]

    out = tmp_path / "pulled" / "topics.m2kt"
    assert main(["pull", packet.digest, *auth, "--key", str(keys[1]), "--out", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes()
    assert (
        main(
            [
                "pull",
                packet.digest,
                *auth,
                "--key",
                str(other_keys[1]),
                "--out",
                str(tmp_path / "x.m2kt"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "x.m2kt").exists()

    assert main(["search", "--store", url]) == 2  # no token, and reads are not public
    assert "needs a token" in capsys.readouterr().err
    assert main(["unpublish", packet.digest, *auth]) == 0
    assert main(["pull", packet.digest, *auth, "--key", str(keys[1]), "--out", str(out)]) == 2


def test_directory_store_round_trip(keys, other_keys, tmp_path: Path, capsys) -> None:
    store = ["--store", str(tmp_path / "store")]
    mine = knowledge_packet(202).signed(keys[0]).save(tmp_path / "a.m2kt")
    theirs = knowledge_packet(203).signed(other_keys[0]).save(tmp_path / "b.m2kt")
    assert main(["publish", str(mine), *store, "--key", str(keys[1])]) == 0
    assert main(["publish", str(theirs), *store, "--key", str(keys[1])]) == 1  # key not accepted
    capsys.readouterr()
    assert main(["search", *store, "--teacher", "tiny", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    out = tmp_path / "pulled.m2kt"
    assert main(["pull", entry["digest"], *store, "--key", str(keys[1]), "--out", str(out)]) == 0
    assert out.read_bytes() == mine.read_bytes()
    assert main(["unpublish", entry["digest"], *store, "--publisher", "bob"]) == 2  # not bob's
    assert main(["unpublish", entry["digest"], *store]) == 0


def test_a_missing_broker_package_is_one_line_with_the_hint() -> None:
    with pytest.raises(UsageError) as missing:
        require("m2kt_no_such_package")
    assert "m2kt_no_such_package" in missing.value.message
    assert ".[broker]" in missing.value.hint and os.linesep not in missing.value.message


def test_publishing_a_missing_file_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["publish", str(tmp_path / "nope.m2kt"), "--store", str(tmp_path / "store")])
    assert code == 2
    assert "no such packet file" in capsys.readouterr().err
