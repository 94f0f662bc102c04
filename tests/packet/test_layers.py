"""Part L (concepts at several layers), part D over several layers or per-concept forms, and how
a reader that does not know a part refuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from m2kt.errors import SchemaError
from m2kt.packet import DEFAULT_LIMITS, Packet, kept_concept_parts, make_provenance, read_packet
from m2kt.packet.canonical import canonical_json
from m2kt.packet.container import MANIFEST, TENSORS, read_container, write_container

K, P, D = 3, 6, 8  # concepts, probes (two a concept), width


def _packet(kept: list[int], pooling: str = "mean", **readout) -> Packet:
    """Concepts kept at layers `kept` (part L); part P at layer 4; part D as `readout` says."""
    generator = torch.Generator().manual_seed(0)
    concepts = [
        {
            "id": f"c{k}",
            "name": f"c{k}",
            "probes": [f"p{k}-{i}" for i in range(2)],
            "method": "bottleneck",
            "confidence": 1.0,
        }
        for k in range(K)
    ]
    width = D * len(readout.get("layers", [0]))
    return Packet.create(
        kind="knowledge",
        provenance=make_provenance(method="test", created_at="2026-01-01T00:00:00Z"),
        tensors={
            "concepts.embeddings": torch.randn(K, D, generator=generator),
            "probes.states": torch.randn(P, D, generator=generator),
            "layers.embeddings": torch.randn(len(kept), K, D, generator=generator),
            "layers.states": torch.randn(len(kept), P, D, generator=generator),
            "readout.weight": torch.randn(K, width, generator=generator),
            "readout.bias": torch.randn(K, generator=generator),
        },
        concepts=concepts,
        probes={"layer": 4, "pooling": "mean", "logit_scale": 20.0},
        layers={"layers": kept, "pooling": pooling},
        readout={"kind": "linear"} | readout,
    )


def test_a_readout_over_kept_layers_round_trips(tmp_path: Path) -> None:
    packet = _packet([2, 4], layers=[4, 2])
    back = read_packet(packet.save(tmp_path / "p.m2kt"))
    assert back.manifest.readout is not None and back.manifest.readout.layers == [4, 2]
    assert back.manifest.layers is not None and back.manifest.layers.layers == [2, 4]
    assert back.to_bytes() == packet.to_bytes()


@pytest.mark.parametrize(
    ("kept", "pooling", "readout", "problem"),
    [
        ([2], "mean", {"layers": [2, 4]}, "carried by part L"),
        ([2, 4], "last", {"layers": [2, 4]}, "part P's pooling"),
        ([2, 2], "mean", {}, "not unique"),
        ([2, 4], "mean", {"forms": ["linear"] * K}, "belong to a mixed readout"),
    ],
)
def test_parts_l_and_d_that_disagree_are_refused(kept, pooling, readout, problem) -> None:
    with pytest.raises(SchemaError, match=problem):
        _packet(kept, pooling, **readout)


def test_a_reader_refuses_a_part_it_does_not_know_in_one_line(tmp_path: Path) -> None:
    """What a reader older than part L (or any later part) does: one line naming the part."""
    members = read_container(_packet([2, 4]).save(tmp_path / "p.m2kt"), DEFAULT_LIMITS)

    def read_with(part: str) -> SchemaError:
        manifest = json.loads(members[MANIFEST]) | {part: {"layers": [1]}}
        path = tmp_path / "later.m2kt"
        path.write_bytes(
            write_container({MANIFEST: canonical_json(manifest), TENSORS: members[TENSORS]})
        )
        with pytest.raises(SchemaError) as caught:
            read_packet(path)
        return caught.value

    refused = read_with("hologram")
    assert "does not know: 'hologram'" in refused.message and "\n" not in refused.message
    assert "update m2kt" in refused.hint
    assert len(read_with("x" * 100_000).message) < 200  # a name from outside is cut short


def test_dropping_a_concept_keeps_parts_p_d_and_l_consistent() -> None:
    packet = _packet(
        [2, 4], kind="mixed", forms=["linear", "centroid", "linear"], centroid_scale=10.0
    )
    tensors, parts = kept_concept_parts(packet, [0, 2])
    assert parts["readout"].forms == ["linear", "linear"]
    assert tensors["layers.states"].shape == (2, 4, D)
    assert torch.equal(tensors["layers.embeddings"], packet.tensors["layers.embeddings"][:, [0, 2]])
    m = packet.manifest
    assert m.concepts is not None
    assert torch.equal(tensors["probes.states"], packet.tensors["probes.states"][[0, 1, 4, 5]])
    kept = packet.rebuilt(
        {"concepts.embeddings": packet.tensors["concepts.embeddings"][[0, 2]]} | tensors,
        concepts=[m.concepts[0], m.concepts[2]],
        **parts,
    )
    assert kept.manifest.readout is not None and kept.manifest.readout.forms == ["linear"] * 2
