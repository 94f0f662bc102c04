"""`m2kt merge` on two real packets (e1 read two overlapping halves of the topics spec), and the
student e2 ingesting the merged packet; the merge benchmark's split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2kt.bench.merge.run import split_spec
from m2kt.cli import main
from m2kt.concepts.spec import load_spec
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.models.load import load_model


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory, keys) -> tuple[Path, Path]:
    """Two signed e1 packets: topics' first four concepts, and the third to sixth."""
    root = tmp_path_factory.mktemp("halves")
    topics = load_spec("topics")
    e1 = load_model("e1")
    settings = ExtractionSettings(attention=False)
    paths = []
    for name, concepts in (("a", topics.concepts[:4]), ("b", topics.concepts[2:6])):
        spec = topics.model_copy(update={"name": name, "concepts": concepts})
        packet = extract_packet(e1, spec, settings).packet.signed(keys[0])
        paths.append(packet.save(root / f"{name}.m2kt"))
    return paths[0], paths[1]


def test_merge_then_ingest(halves, keys, tmp_path: Path, capsys) -> None:
    merged = tmp_path / "merged.m2kt"
    trust = ["--key", str(keys[1])]
    command = ["merge", *map(str, halves), "--out", str(merged), *trust, "--sign", str(keys[0])]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert out.count("duplicate") == 2 and "conflict " not in out
    # Two shared concepts × 4 extraction probes, and the 1,024 anchors both packets carry.
    assert "aligned" in out and "1032 shared" in out
    record = json.loads(merged.with_name("merged.m2kt.record.json").read_text())
    assert record["step"] == "merge" and len(record["parents"]) == 2
    assert main(["verify", str(merged), *trust]) == 0

    adapter = tmp_path / "adapter"
    ingest = ["ingest", "--student", "e2", "--packet", str(merged), *trust, "--out", str(adapter)]
    ingest += ["--steps", "20"]  # a short fit: this checks the merged packet is usable
    assert main(ingest) == 1  # 12 verification probes (2 a concept) cannot detect a 25% drop
    assert "only 12 held-out verification probes" in capsys.readouterr().out
    assert main([*ingest, "--accept-unverified"]) == 0
    report = json.loads((adapter / "ingestion_report.json").read_text())
    assert report["verification"] == "unverified"
    assert report["packet"]["parents"] == record["parents"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert len(config["concepts"]) == 6  # four and four, two of them shared


def test_merge_refuses_an_unverified_parent(halves, other_keys, tmp_path: Path) -> None:
    out = tmp_path / "m.m2kt"
    command = ["merge", *map(str, halves), "--out", str(out), "--key", str(other_keys[1])]
    assert main(command) == 1
    assert not out.exists()


def test_benchmark_split_holds_probes_out_of_both_halves() -> None:
    spec = load_spec("topics")
    split = split_spec(spec, overlap=2, heldout=2, seed=0)
    a, b = split.halves
    assert [len(h.concepts) for h in split.halves] == [6, 6]
    shared = {c.name for c in a.concepts} & {c.name for c in b.concepts}
    assert shared == {"entertainment", "health"}
    taught = {p for h in split.halves for c in h.concepts for p in c.probes}
    assert len(split.heldout_texts) == 20 and not taught & set(split.heldout_texts)
    assert sorted(set(split.heldout_labels)) == sorted(c.name for c in spec.concepts)
