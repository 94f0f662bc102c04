"""Concurrent publishers and pullers on a real broker; the index and the files must agree.
And the index on its own."""

from __future__ import annotations

import threading
from pathlib import Path

from m2kt.broker import Entry, Query, Registry, SQLiteIndex
from m2kt.broker.blobs import file_sha256
from m2kt.broker.errors import ConflictError
from m2kt.broker.loadtest import load_test, synthetic_packet


def test_load_test_keeps_index_and_files_consistent(tmp_path: Path) -> None:
    report = load_test(tmp_path, publishers=3, packets_each=6, pulls_each=3)
    assert report.failures == 0
    assert (report.publishes, report.pulls) == (18, 54)
    assert report.consistency.ok and report.consistency.entries == 18
    assert report.requests_per_second > 0 and report.seconds < 60


def test_racing_publishers_of_one_digest_store_it_once(tmp_path: Path, keys, other_keys) -> None:
    registry = Registry.open(tmp_path / "store")
    packet = synthetic_packet(1)
    ours = packet.signed(keys[0]).save(tmp_path / "ours.m2kt")
    theirs = packet.signed(other_keys[0]).save(tmp_path / "theirs.m2kt")  # same digest
    outcomes: list[object] = []

    def publish(path: Path, key: Path) -> None:
        try:
            outcomes.append(registry.publish_file(path, "p", [key])[1])
        except ConflictError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=publish, args=(ours, keys[1])) for _ in range(6)]
    threads += [threading.Thread(target=publish, args=(theirs, other_keys[1])) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 1  # exactly one publish stored the file
    assert registry.check().ok and registry.check().entries == 1
    conflicts = [o for o in outcomes if isinstance(o, ConflictError)]
    assert len(conflicts) in (2, 6)  # whichever signature won, the other side is refused
    winner = ours if len(conflicts) == 2 else theirs
    assert registry.get(packet.digest).file_sha256 == file_sha256(winner)


def test_index_search_by_teacher_id_or_its_short_name(tmp_path: Path) -> None:
    index = SQLiteIndex(tmp_path / "index.sqlite")
    entry = Entry("sha256:" + "1" * 64, "f", 1, "knowledge", "p", "s", "t", "t", ["e1:MiniLM"])
    assert index.add(entry) and not index.add(entry)
    assert [e.digest for e in index.search(Query(teacher="e1"))] == [entry.digest]
    assert index.search(Query(teacher="e")) == [] and index.search(Query(teacher="MiniLM")) == []
    assert index.remove(entry.digest) and index.digests() == []
