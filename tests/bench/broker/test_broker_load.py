"""Concurrent publishers and pullers on a real broker; the index and the files must agree.
And the index on its own."""

from __future__ import annotations

import threading
from pathlib import Path

from m2kt.bench.broker.load import load_test
from m2kt.broker import Entry, Query, Registry, SQLiteIndex
from m2kt.broker.blobs import file_sha256
from m2kt.packet import fingerprint_of_public_key
from m2kt.packet.example import example_packet


def test_load_test_keeps_index_and_files_consistent(tmp_path: Path) -> None:
    report = load_test(tmp_path, publishers=3, packets_each=6, pulls_each=3)
    assert report.failures == 0
    assert (report.publishes, report.pulls) == (18, 54)
    assert report.consistency.ok and report.consistency.entries == 18
    assert report.requests_per_second > 0 and report.seconds < 60


def test_racing_publishers_of_one_digest_store_it_once_per_signer(
    tmp_path: Path, keys, other_keys
) -> None:
    registry = Registry.open(tmp_path / "store")
    packet = example_packet(1)
    ours = packet.signed(keys[0]).save(tmp_path / "ours.m2kt")
    theirs = packet.signed(other_keys[0]).save(tmp_path / "theirs.m2kt")  # same digest
    outcomes: list[tuple[str, bool]] = []

    def publish(path: Path, key: Path) -> None:
        entry, new = registry.publish_file(path, "p", [key])
        outcomes.append((entry.signer, new))

    threads = [threading.Thread(target=publish, args=(ours, keys[1])) for _ in range(6)]
    threads += [threading.Thread(target=publish, args=(theirs, other_keys[1])) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ours_fp, theirs_fp = (fingerprint_of_public_key(k[1]) for k in (keys, other_keys))
    assert sorted(outcomes).count((ours_fp, True)) == 1  # one publish per signer stored it
    assert sorted(outcomes).count((theirs_fp, True)) == 1 and len(outcomes) == 8
    assert registry.check().ok and registry.check().entries == 2
    assert registry.get(packet.digest, [ours_fp]).file_sha256 == file_sha256(ours)
    assert registry.get(packet.digest, [theirs_fp]).file_sha256 == file_sha256(theirs)


def test_index_search_by_teacher_id_or_its_short_name(tmp_path: Path) -> None:
    index = SQLiteIndex(tmp_path / "index.sqlite")
    entry = Entry("sha256:" + "1" * 64, "f", 1, "knowledge", "p", "s", "t", "t", ["e1:MiniLM"])
    with index.locked(*entry.key) as tx:
        tx.add(entry)
    assert [e.digest for e in index.search(Query(teacher="e1"))] == [entry.digest]
    assert index.search(Query(teacher="e")) == [] and index.search(Query(teacher="MiniLM")) == []
    with index.locked(*entry.key) as tx:
        tx.remove(*entry.key)
    assert index.keys() == []
    with index._connect() as db:  # the teacher row went with its packet (ON DELETE CASCADE)
        assert db.execute("SELECT count(*) FROM teachers").fetchone()[0] == 0
