"""`m2kt bench broker`: many clients against one and against two `m2kt serve` processes, on each
index backend, all on loopback; it stops after a fixed number of operations.

Two publishers each sign the same bodies (so every digest has two signers' entries). Half the
digests are stable: published before the clock starts and never deleted. The other half are
churned: their publisher publishes and deletes them while readers pull them. Clients are
threads of this process, each with its own connection; each operation is one of

  pull     GET a stable or churned entry by (digest, signer): right when the bytes are exactly
           that signer's file, or 404 for a churned one; anything else is a wrong answer
  search   GET the entries of a digest: right when every entry names a known signer and file
  publish  POST the publisher's own file: right when the answer names its signer and file
  delete   DELETE the publisher's own entry: right when the answer names its signer, or 404

After each run the store is checked: every index row has its file with the right hash and no
file lacks a row (`Registry.check`), and every stable entry is still there. Pulls compare the
bytes' SHA-256 with the file's rather than verifying the signature, so that the clients spend
the machine's CPU on requests; the signature path is what the tests check.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import quantiles
from typing import Any

from m2kt.broker.processes import ServerProcess, fresh_database, private_postgres
from m2kt.broker.registry import Registry
from m2kt.broker.tokens import add_publisher
from m2kt.packet import fingerprint_of_public_key, generate_keypair
from m2kt.packet.example import example_packet

OPERATIONS = ("pull", "search", "publish", "delete")
MIX = {"pull": 0.7, "search": 0.1, "publish": 0.1, "delete": 0.1}


@dataclass(frozen=True)
class BenchPlan:
    clients: int
    operations: int  # per run
    digests: int
    backends: tuple[str, ...]
    processes: tuple[int, ...]


PLANS = {
    "quick": BenchPlan(16, 1000, 8, ("sqlite", "postgresql"), (1, 2)),
    "full": BenchPlan(32, 10_000, 16, ("sqlite", "postgresql"), (1, 2)),
}


def run_broker_bench(
    plan: BenchPlan, out: Path, log: Callable[[str], None] = lambda m: None
) -> dict[str, Any]:
    """Every (backend, process count) of the plan; writes results.json and results.md."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="m2kt-bench-broker-") as tmp, ExitStack() as stack:
        work = _Workload.make(Path(tmp), plan.digests)
        server = None
        if "postgresql" in plan.backends:
            server = stack.enter_context(private_postgres())
        rows: list[dict[str, Any]] = []
        for backend in plan.backends:
            for count in plan.processes:
                log(f"{backend}, {count} server process(es), {plan.clients} clients")
                index = None
                if backend == "postgresql":
                    index = fresh_database(server, f"bench_{count}_{len(rows)}")  # type: ignore[arg-type]
                store = Path(tmp) / f"store-{backend}-{count}"
                rows.append(_run(work, store, index, count, plan, backend))
                log(json.dumps(rows[-1]))
    result = {
        "plan": vars(plan),
        "runs": rows,
        "pull_speedup_two_processes": _speedups(rows),
        "wall_clock_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(markdown(result))
    return result


@dataclass
class _Workload:
    tokens: Path
    token: dict[str, str]  # publisher -> token
    signer: dict[str, str]  # publisher -> fingerprint
    files: dict[tuple[str, int], Path]  # (publisher, digest number) -> file
    sha: dict[tuple[str, int], str]
    digest: dict[int, str]
    stable: list[int]
    churned: list[int]

    @classmethod
    def make(cls, root: Path, digests: int) -> _Workload:
        tokens, token, signer, files = root / "tokens.json", {}, {}, {}
        for name in ("alice", "bob"):
            private, public = generate_keypair(root / "keys", name)
            token[name] = add_publisher(tokens, name, ["read", "publish", "delete"], [public])
            signer[name] = fingerprint_of_public_key(public)
            for n in range(digests):
                path = root / "packets" / f"{name}-{n}.m2kt"
                files[(name, n)] = example_packet(50_000 + n).signed(private).save(path)
        sha = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}
        digest = {n: example_packet(50_000 + n).digest for n in range(digests)}
        half = digests // 2
        stable, churned = list(range(half)), list(range(half, digests))
        return cls(tokens, token, signer, files, sha, digest, stable, churned)


def _run(
    work: _Workload, store: Path, index: str | None, count: int, plan: BenchPlan, backend: str
) -> dict[str, Any]:
    import httpx

    with _servers(store, work.tokens, index, count) as urls:
        for (name, _), path in work.files.items():  # every entry there before the clock
            auth = {"Authorization": f"Bearer {work.token[name]}"}
            httpx.post(f"{urls[0]}/v1/packets", content=path.read_bytes(), headers=auth)
        latencies: dict[str, list[float]] = defaultdict(list)
        wrong: list[str] = []
        lock = threading.Lock()
        per_client = -(-plan.operations // plan.clients)  # at least `operations` in all

        def client(number: int) -> None:
            rng = random.Random(number)
            name = ("alice", "bob")[number % 2]
            http = httpx.Client(
                base_url=urls[number % len(urls)],
                headers={"Authorization": f"Bearer {work.token[name]}"},
                timeout=60,
            )
            with http:
                for _ in range(per_client):
                    op = rng.choices(OPERATIONS, [MIX[o] for o in OPERATIONS])[0]
                    began = time.perf_counter()
                    problem = _operate(http, op, name, rng, work)
                    with lock:
                        latencies[op].append(time.perf_counter() - began)
                        if problem:
                            wrong.append(problem)

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=plan.clients) as pool:
            list(pool.map(client, range(plan.clients)))
        seconds = time.perf_counter() - began
    disagreements = _disagreements(Registry.open(store, index), work)
    done = sum(len(v) for v in latencies.values())
    row: dict[str, Any] = {
        "backend": backend,
        "processes": count,
        "clients": plan.clients,
        "operations": done,
        "seconds": round(seconds, 2),
        "requests_per_second": round(done / seconds, 1),
        "wrong_answers": len(wrong),
        "wrong_examples": wrong[:5],
        "index_file_disagreements": disagreements,
    }
    for op in OPERATIONS:
        times = sorted(latencies[op])
        row[op] = {
            "count": len(times),
            "per_second": round(len(times) / seconds, 1),
            "p50_ms": round(1000 * _quantile(times, 50), 1),
            "p99_ms": round(1000 * _quantile(times, 99), 1),
        }
    return row


def _operate(http: Any, op: str, name: str, rng: random.Random, work: _Workload) -> str | None:
    """One operation; a description of the answer when it is wrong, else None."""
    if op == "pull":
        n = rng.choice(work.stable + work.churned)
        reader = rng.choice(list(work.signer))
        response = http.get(f"/v1/packets/{work.digest[n]}", params={"signer": work.signer[reader]})
        if response.status_code == 404 and n in work.churned:
            return None
        if response.status_code != 200:
            return f"pull {n}: HTTP {response.status_code}"
        if hashlib.sha256(response.content).hexdigest() != work.sha[(reader, n)]:
            return f"pull {n} of {reader}: other bytes"
        return None
    n = rng.choice(work.churned) if op in ("publish", "delete") else rng.choice(work.stable)
    if op == "search":
        response = http.get("/v1/packets", params={"digest": work.digest[n]})
        known = {(work.signer[p], work.sha[(p, n)]) for p in work.signer}
        if response.status_code != 200:
            return f"search {n}: HTTP {response.status_code}"
        entries = {(e["signer"], e["file_sha256"]) for e in response.json()}
        return None if entries == known else f"search {n}: {sorted(entries)}"
    if op == "publish":
        response = http.post("/v1/packets", content=work.files[(name, n)].read_bytes())
        if response.status_code not in (200, 201):
            return f"publish {n}: HTTP {response.status_code}"
        got = (response.json()["signer"], response.json()["file_sha256"])
        return None if got == (work.signer[name], work.sha[(name, n)]) else f"publish {n}: {got}"
    response = http.delete(f"/v1/packets/{work.digest[n]}")
    if response.status_code in (403, 404):  # nothing of the caller's there
        return None
    if response.status_code != 200:
        return f"delete {n}: HTTP {response.status_code}"
    got = response.json()["signer"]
    return None if got == work.signer[name] else f"{name}'s delete removed {got}"


@contextmanager
def _servers(store: Path, tokens: Path, index: str | None, count: int) -> Iterator[list[str]]:
    servers = [ServerProcess(store, tokens, index) for _ in range(count)]
    try:
        for server in servers:
            server.launch()
        yield [server.wait().url for server in servers]
    finally:
        for server in servers:
            server.stop()


def _quantile(times: list[float], q: int) -> float:
    if len(times) < 2:
        return times[0] if times else 0.0
    return quantiles(times, n=100, method="inclusive")[q - 1]


def _speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Pull throughput of two processes over one, per backend."""
    by = {(r["backend"], r["processes"]): r["pull"]["per_second"] for r in rows}
    return {
        backend: round(by[(backend, 2)] / by[(backend, 1)], 2)
        for backend, count in by
        if count == 1 and (backend, 2) in by and by[(backend, 1)]
    }


def markdown(result: dict[str, Any]) -> str:
    head = "| backend | processes | clients | ops | s | req/s | "
    head += " | ".join(f"{op} /s, p50, p99 ms" for op in OPERATIONS)
    head += " | wrong answers | index/file disagreements |\n"
    lines = [head, "|" + "---|" * (8 + len(OPERATIONS)) + "\n"]
    for r in result["runs"]:
        ops = " | ".join(
            f"{r[op]['per_second']}, {r[op]['p50_ms']}, {r[op]['p99_ms']}" for op in OPERATIONS
        )
        lines.append(
            f"| {r['backend']} | {r['processes']} | {r['clients']} | {r['operations']} | "
            f"{r['seconds']} | {r['requests_per_second']} | {ops} | {r['wrong_answers']} | "
            f"{r['index_file_disagreements']} |\n"
        )
    speedups = ", ".join(f"{b} {s}x" for b, s in result["pull_speedup_two_processes"].items())
    lines.append(f"\nPull throughput, two processes over one: {speedups or 'n/a'}.\n")
    return "".join(lines)


def run_crash_soak(
    kills: int, clients: int, out: Path, log: Callable[[str], None] = lambda m: None
) -> dict[str, Any]:
    """Two server processes sharing a private PostgreSQL and one store, `clients` threads
    writing and reading through both; `kills` times, one process (in turn) is killed with
    SIGKILL mid-traffic and restarted, then the index and the files are compared with the
    traffic paused. A request cut off by a kill has no answer and is not counted as wrong;
    after the last restart every publish is repeated and must succeed. Writes
    crash_soak.json."""
    import httpx

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="m2kt-soak-") as tmp, private_postgres() as server:
        work = _Workload.make(Path(tmp), 8)
        index = fresh_database(server, "soak")
        store = Path(tmp) / "store"
        servers = [ServerProcess(store, work.tokens, index).launch() for _ in range(2)]
        for process in servers:
            process.wait()
        for (name, _), path in work.files.items():
            auth = {"Authorization": f"Bearer {work.token[name]}"}
            httpx.post(f"{servers[0].url}/v1/packets", content=path.read_bytes(), headers=auth)
        registry = Registry.open(store, index)
        wrong: list[str] = []
        counts: dict[str, int] = defaultdict(int)
        disagreements = 0
        lock = threading.Lock()
        rng = random.Random(0)
        try:
            for kill in range(kills):
                stop = threading.Event()

                def client(number: int, stop: threading.Event = stop, seed: int = kill) -> None:
                    local = random.Random(seed * 1000 + number)
                    name = ("alice", "bob")[number % 2]
                    url = servers[number % 2].url
                    auth = {"Authorization": f"Bearer {work.token[name]}"}
                    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
                        while not stop.is_set():
                            op = local.choices(OPERATIONS, [0.4, 0.1, 0.25, 0.25])[0]
                            try:
                                problem = _operate(http, op, name, local, work)
                            except httpx.TransportError:
                                with lock:
                                    counts["refused_or_cut_off"] += 1
                                continue
                            with lock:
                                counts[op] += 1
                                if problem:
                                    wrong.append(problem)

                threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
                for thread in threads:
                    thread.start()
                time.sleep(rng.uniform(0.5, 1.5))
                servers[kill % 2].kill()
                stop.set()
                for thread in threads:
                    thread.join()
                servers[kill % 2].start()  # recovers at start
                disagreements += _disagreements(registry, work)
                log(
                    f"kill {kill + 1}/{kills}: {dict(counts)}, wrong {len(wrong)}, "
                    f"disagreements {disagreements}"
                )
            for (name, n), path in work.files.items():  # every repeated publish succeeds
                auth = {"Authorization": f"Bearer {work.token[name]}"}
                answer = httpx.post(
                    f"{servers[n % 2].url}/v1/packets", content=path.read_bytes(), headers=auth
                )
                if answer.status_code not in (200, 201):
                    wrong.append(f"repeated publish {name} {n}: HTTP {answer.status_code}")
            disagreements += _disagreements(registry, work)
        finally:
            for process in servers:
                process.stop()
    result = {
        "kills": kills,
        "clients": clients,
        "operations_answered": sum(counts[op] for op in OPERATIONS),
        "requests_refused_or_cut_off_by_a_kill": counts["refused_or_cut_off"],
        "wrong_answers": len(wrong),
        "wrong_examples": wrong[:5],
        "index_file_disagreements": disagreements,
        "wall_clock_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "crash_soak.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _disagreements(registry: Registry, work: _Workload) -> int:
    """Index rows without their file, files without their row, wrong hashes, lost stable
    entries."""
    c = registry.check()
    lost = [
        (n, fingerprint)
        for n in work.stable
        for fingerprint in work.signer.values()
        if fingerprint not in {e.signer for e in registry.entries(work.digest[n])}
    ]
    return len(c.missing_files) + len(c.unindexed_files) + len(c.wrong_hashes) + len(lost)
