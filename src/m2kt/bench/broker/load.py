"""A small load test of a real broker on loopback: concurrent publishers and pullers.

Each publisher has its own key and token and publishes its own signed packets from its own
thread while the pullers fetch (and verify) what is already there; afterwards the index and the
stored files must agree exactly. The figures are for one process on this machine, not a
capacity claim.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

from m2kt.broker.client import BrokerClient, pull
from m2kt.broker.registry import Consistency, Registry
from m2kt.broker.service import create_app, running
from m2kt.broker.tokens import TokenTable, add_publisher
from m2kt.packet import generate_keypair
from m2kt.packet.example import example_packet
from m2kt.progress import Progress


@dataclass(frozen=True)
class LoadReport:
    publishers: int
    publishes: int
    pulls: int
    seconds: float
    requests_per_second: float
    publish_p50_ms: float
    pull_p50_ms: float
    failures: int
    consistency: Consistency

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"consistent": self.consistency.ok}

    def summary(self) -> str:
        c = self.consistency
        return (
            f"{self.publishes} publishes and {self.pulls} verified pulls by {self.publishers} "
            f"publishers in {self.seconds:.1f} s: {self.requests_per_second:.1f} requests/s "
            f"(median publish {self.publish_p50_ms:.0f} ms, pull {self.pull_p50_ms:.0f} ms); "
            f"failures {self.failures}; index {c.entries} entries, {c.files} files, "
            f"{'consistent' if c.ok else 'INCONSISTENT'}"
        )


def load_test(
    directory: str | Path,
    *,
    publishers: int = 4,
    packets_each: int = 10,
    pulls_each: int = 4,
    seed: int = 0,
    progress: Progress | None = None,
) -> LoadReport:
    """Start a broker on a free loopback port over a fresh store in `directory` and load it."""
    directory = Path(directory)
    tokens_file = directory / "tokens.json"
    work = []
    for p in range(publishers):
        name = f"publisher{p}"
        private, public = generate_keypair(directory / "keys", name)
        token = add_publisher(tokens_file, name, ["read", "publish"], [public])
        files = []
        for i in range(packets_each):
            path = directory / "packets" / f"{name}-{i}.m2kt"
            files.append(example_packet(seed * 100_000 + p * 1000 + i).signed(private).save(path))
        work.append((token, public, files))
    registry = Registry.open(directory / "store")
    app = create_app(registry, TokenTable.load(tokens_file))
    publish_ms: list[float] = []
    pull_ms: list[float] = []
    published: list[str] = []
    lock = threading.Lock()
    done = [0]
    total = publishers * packets_each * (1 + pulls_each)

    def tick() -> None:
        with lock:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

    def publisher(token: str, files: list[Path]) -> None:
        client = BrokerClient(url, token)
        for path in files:
            started = time.perf_counter()
            entry = client.publish(path, ["load"])
            with lock:
                publish_ms.append(1000 * (time.perf_counter() - started))
                published.append(entry.digest)
            tick()

    def puller(token: str, keys: list[Path], count: int, worker: int) -> None:
        client = BrokerClient(url, token)
        rng = random.Random(seed * 7919 + worker)
        out = directory / "pulled" / f"worker{worker}.m2kt"
        deadline = time.monotonic() + 60
        for _ in range(count):
            while True:
                with lock:
                    known = list(published)
                if known:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("no packet was published to pull")
                time.sleep(0.005)
            started = time.perf_counter()
            pull(client, rng.choice(known), out, trusted_keys=keys)
            with lock:
                pull_ms.append(1000 * (time.perf_counter() - started))
            tick()

    keys = [public for _, public, _ in work]
    failures = 0
    with running(app) as url, ThreadPoolExecutor(max_workers=2 * publishers) as pool:
        started = time.perf_counter()
        jobs = [pool.submit(publisher, token, files) for token, _, files in work]
        jobs += [
            pool.submit(puller, work[w][0], keys, packets_each * pulls_each, w)
            for w in range(publishers)
        ]
        for job in jobs:
            if job.exception() is not None:
                failures += 1
        seconds = time.perf_counter() - started
    requests = len(publish_ms) + len(pull_ms)
    return LoadReport(
        publishers=publishers,
        publishes=len(publish_ms),
        pulls=len(pull_ms),
        seconds=round(seconds, 3),
        requests_per_second=round(requests / seconds, 1),
        publish_p50_ms=round(median(publish_ms or [0.0]), 1),
        pull_p50_ms=round(median(pull_ms or [0.0]), 1),
        failures=failures,
        consistency=registry.check(),
    )
