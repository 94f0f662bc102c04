"""Crashes and races on both index backends: every crash point of a publish and a delete settled
at start, real servers killed with SIGKILL while they write, and many clients on two server
processes sharing one index and one store."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import broker_backends
import httpx
from broker_backends import ServerProcess

from m2kt.broker import BrokerClient, Query, Registry, add_publisher, pull
from m2kt.broker.blobs import file_sha256
from m2kt.broker.errors import BrokerError, NotFoundError, ScopeError
from m2kt.broker.index import MIGRATIONS, SQLiteIndex
from m2kt.broker.registry import open_index
from m2kt.errors import UntrustedKeyError
from m2kt.packet import fingerprint_of_public_key

from conftest import knowledge_packet

postgres_server = broker_backends.postgres_server
index_url = broker_backends.index_url


def signed(tmp_path: Path, key: Path, seed: int) -> Path:
    return knowledge_packet(seed).signed(key).save(tmp_path / f"{key.stem}-{seed}.m2kt")


def test_recovery_settles_every_crash_point(tmp_path: Path, keys, index_url) -> None:
    registry = Registry.open(tmp_path / "store", index_url)
    paths = [signed(tmp_path, keys[0], seed) for seed in range(301, 305)]
    intact, undone, gone = (registry.publish_file(p, "alice", [keys[1]])[0] for p in paths[:3])
    signer = intact.signer

    registry.blobs.retire(undone.key)  # delete: file moved to its tombstone, row not removed
    with registry.index.locked(*gone.key) as tx:  # delete: row removal committed, then killed
        tx.remove(*gone.key)
    registry.blobs.retire(gone.key)
    half = knowledge_packet(304).digest  # publish: file stored, killed before the row
    registry.blobs.put(paths[3], (half, signer))
    new = registry.blobs.path(intact.key).with_name(f"{signer}.m2kt.0.new")
    new.write_bytes(b"a half-stored file")  # publish: killed between link and rename
    dead = registry.blobs.staging_root / ("0" * 32)  # upload in progress, process killed
    dead.mkdir()
    (dead / ".lock").touch()
    (dead / "upload-x.m2kt").write_bytes(b"part of an upload")
    live = registry.blobs.staging / "upload-live.m2kt"  # a live process's upload: kept
    live.write_bytes(b"in flight")
    assert not registry.check().ok

    restarted = Registry.open(tmp_path / "store", index_url)
    assert restarted.recover() == Counter(
        staging_files=1, deletions_undone=1, unindexed_files_removed=1, debris_removed=2
    )
    assert restarted.check().ok and restarted.check().entries == 2
    assert live.exists() and not dead.exists()
    assert b"".join(restarted.read(undone.digest)) == paths[1].read_bytes()
    _, new_entry = restarted.publish_file(paths[3], "alice", [keys[1]])  # the client's retry
    assert new_entry and restarted.recover() == Counter() and restarted.check().ok


def test_an_index_and_store_of_the_first_schema_are_migrated(
    tmp_path: Path, keys, index_url
) -> None:
    """Version 1 kept one row per digest and files at objects/<2>/<hex>.m2kt."""
    path = signed(tmp_path, keys[0], 310)
    scratch = Registry.open(tmp_path / "scratch")
    entry = scratch.publish_file(path, "alice", [keys[1]])[0]
    store = tmp_path / "store"
    legacy = store / "objects" / entry.digest[7:9] / f"{entry.digest[7:]}.m2kt"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(path.read_bytes())
    row = (entry.digest, entry.file_sha256, entry.size, entry.kind, entry.publisher)
    row += (entry.signer, entry.created_at, entry.published_at, json.dumps(entry.as_dict()))
    if index_url is None:
        import sqlite3

        db = sqlite3.connect(store / "index.sqlite", isolation_level=None)
        mark = "?"
    else:
        import psycopg

        db = psycopg.connect(index_url, autocommit=True)  # type: ignore[assignment]
        mark = "%s"
    for sql in MIGRATIONS[1]:
        db.execute(sql)
    db.execute(f"INSERT INTO packets VALUES ({', '.join([mark] * 9)})", row)
    db.execute(f"INSERT INTO tags VALUES ({mark}, {mark})", (entry.digest, "old"))
    db.close()

    registry = Registry.open(store, index_url)
    assert registry.recover()["legacy_files_moved"] == 1
    assert registry.check().ok and registry.check().entries == 1
    assert registry.search(Query(tag="old"))[0] == entry
    assert b"".join(registry.read(entry.digest)) == path.read_bytes()
    index = open_index(index_url, store)
    if isinstance(index, SQLiteIndex):
        with index._connect() as raw:
            assert raw.execute("SELECT version FROM schema_version").fetchone()[0] == 2


def _team(tmp_path: Path, keys, other_keys) -> tuple[Path, dict[str, str]]:
    tokens_file = tmp_path / "tokens.json"
    tokens = {
        name: add_publisher(tokens_file, name, ["read", "publish", "delete"], [key])
        for name, key in (("alice", keys[1]), ("mallory", other_keys[1]))
    }
    return tokens_file, tokens


def test_kill_9_during_uploads_and_deletes_then_restart(
    tmp_path: Path, keys, other_keys, index_url
) -> None:
    """SIGKILL a server while clients publish and delete and one upload is half sent; at each
    restart the index and the files agree, staging is clean, and a repeated request works."""
    tokens_file, tokens = _team(tmp_path, keys, other_keys)
    store = tmp_path / "store"
    files = [signed(tmp_path, keys[0], seed) for seed in range(320, 326)]
    server = ServerProcess(store, tokens_file, index_url)
    rng = random.Random(0)
    try:
        for _ in range(2):
            server.start()
            stop = threading.Event()

            def churn(worker: int, url: str = server.url, stop=stop) -> None:  # type: ignore[no-untyped-def]
                client = BrokerClient(url, tokens["alice"], timeout=10)
                mine = files[worker::3]
                while not stop.is_set():
                    for path in mine:
                        try:
                            client.publish(path)
                            client.delete(knowledge_packet(int(path.stem[-3:])).digest)
                        except BrokerError:
                            pass  # refused mid-kill, or deleted by nobody else: ignored here

            def half_upload(url: str = server.url) -> None:
                def body():  # type: ignore[no-untyped-def]
                    yield files[0].read_bytes()[:1000]
                    time.sleep(30)
                    yield b""

                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(
                        f"{url}/v1/packets",
                        content=body(),
                        headers={"Authorization": f"Bearer {tokens['alice']}"},
                        timeout=60,
                    )

            threading.Thread(target=half_upload, daemon=True).start()
            workers = [threading.Thread(target=churn, args=(w,)) for w in range(3)]
            for worker in workers:
                worker.start()
            time.sleep(rng.uniform(0.3, 0.6))
            server.kill()
            stop.set()
            for worker in workers:
                worker.join()
            assert any((store / "staging").glob("*/upload-*"))  # the killed upload's part

        server.start()  # the restart settles what the kill left
        assert not list((store / "staging").glob("*/upload-*"))
        assert len(list((store / "staging").iterdir())) == 1  # the running server's own
        alice = BrokerClient(server.url, tokens["alice"])
        for path in files:  # every repeated request succeeds, whatever state the kill left
            entry = alice.publish(path)
            assert entry.file_sha256 == file_sha256(path)
        registry = Registry.open(store, index_url)
        assert registry.check().ok and registry.check().entries == len(files)
    finally:
        server.stop()


def test_many_clients_on_two_servers_race_publish_delete_and_pull(
    tmp_path: Path, keys, other_keys, index_url
) -> None:
    """32 clients on two server processes sharing one index and one store: two signers publish
    the same digests, delete them while others publish and pull them. Every answer is what was
    stored: a publish names the caller's own signer and file, a pull returns exactly the file
    its key signed or 404, a delete removes only the caller's entry."""
    tokens_file, tokens = _team(tmp_path, keys, other_keys)
    store = tmp_path / "store"
    prints = {"alice": fingerprint_of_public_key(keys[1])}
    prints["mallory"] = fingerprint_of_public_key(other_keys[1])
    public = {"alice": keys[1], "mallory": other_keys[1]}
    seeds = range(340, 344)
    files = {
        (name, seed): signed(tmp_path, key, seed)
        for seed in seeds
        for name, key in (("alice", keys[0]), ("mallory", other_keys[0]))
    }
    shas = {k: file_sha256(p) for k, p in files.items()}
    digests = {seed: knowledge_packet(seed).digest for seed in seeds}
    servers = [ServerProcess(store, tokens_file, index_url).launch() for _ in range(2)]
    for server in servers:
        server.wait()
    wrong: list[str] = []
    counts: Counter[str] = Counter()

    def client(number: int) -> None:
        rng = random.Random(number)
        name = ("alice", "mallory")[number % 2]
        broker = BrokerClient(servers[number % 2 ^ (number // 2) % 2].url, tokens[name])
        out = tmp_path / f"pulled-{number}.m2kt"
        for _ in range(10):
            seed = rng.choice(seeds)
            action = rng.choice(["publish", "publish", "delete", "pull", "pull"])
            counts[action] += 1
            try:
                if action == "publish":
                    e = broker.publish(files[(name, seed)])
                    if (e.signer, e.publisher, e.file_sha256) != (
                        prints[name],
                        name,
                        shas[(name, seed)],
                    ):
                        wrong.append(f"publish answered {e}")
                elif action == "delete":
                    e = broker.delete(digests[seed])
                    if e.signer != prints[name]:
                        wrong.append(f"{name}'s delete removed {e.signer}")
                else:
                    reader = rng.choice(["alice", "mallory"])
                    pull(broker, digests[seed], out, trusted_keys=[public[reader]])
                    if file_sha256(out) != shas[(reader, seed)]:
                        wrong.append(f"pull of {reader}'s {seed} returned other bytes")
            except (NotFoundError, ScopeError):
                counts["absent"] += 1  # nothing of the caller's (or reader's) was there
            except UntrustedKeyError as exc:
                if "is in the store, but signed only by" not in exc.message:
                    raise  # a file by another signer was served: a wrong answer
                counts["absent"] += 1
            except BrokerError as exc:
                wrong.append(f"{action}: {exc.message}")
            except Exception as exc:  # a failed verification is a wrong answer too
                wrong.append(f"{action}: {type(exc).__name__}: {exc}")

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(client, range(32)))
    finally:
        for server in servers:
            server.stop()
    assert wrong == []
    assert sum(counts[a] for a in ("publish", "delete", "pull")) == 320
    registry = Registry.open(store, index_url)
    assert registry.check().ok
    for entry in registry.search(Query()):
        name = "alice" if entry.signer == prints["alice"] else "mallory"
        assert entry.publisher == name
        assert (
            entry.file_sha256 == shas[(name, next(s for s in seeds if digests[s] == entry.digest))]
        )
