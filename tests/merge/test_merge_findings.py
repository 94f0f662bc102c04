"""Merging packets of two synthetic teachers whose spaces are known linear views of one latent
space: which concepts are found to be duplicates, aliases and conflicts, and what survives."""

from __future__ import annotations

import pytest
import torch

from m2kt.errors import UsageError
from m2kt.merge import MergeSettings, merge_packets
from m2kt.merge.align import align
from m2kt.packet import Packet, make_provenance
from m2kt.packet.manifest import ANCHOR_STATES_TENSOR, CONCEPTS_TENSOR, PROBE_STATES_TENSOR

LATENT = 8
TOPICS = ["sport", "politics", "business", "science", "weather", "music"]
Z = torch.randn(len(TOPICS), LATENT, generator=torch.Generator().manual_seed(0)) * 2
ANCHORS = torch.randn(24, LATENT, generator=torch.Generator().manual_seed(1))


def teacher_packet(
    teacher: str,
    width: int,
    concepts: list[tuple[str, str, str]],  # (name, latent topic, probe prefix)
    seed: int,
    confidence: dict[str, float] | None = None,
    created_at: str = "2026-01-01T00:00:00+00:00",
) -> Packet:
    """Concepts of `teacher`, whose states are a fixed linear view of the latent space; every
    teacher also reads the same 24 anchor texts (part N)."""
    g = torch.Generator().manual_seed(seed)
    view = torch.randn(LATENT, width, generator=g)
    tensors, entries, rows, probe_states = {}, [], [], []
    for name, topic, prefix in concepts:
        z = Z[TOPICS.index(topic)]
        probes = [f"{prefix} {topic} probe {i}" for i in range(3)]
        states = (z + 0.05 * torch.randn(3, LATENT, generator=g)) @ view
        rows.append(states.mean(0))
        probe_states.append(states)
        c = (confidence or {}).get(name, 0.5)
        entries.append(
            {
                "id": name,
                "name": name,
                "probes": probes,
                "layer": 2,
                "method": "bottleneck",
                "confidence": c,
            }
        )
    tensors[PROBE_STATES_TENSOR] = torch.cat(probe_states)
    tensors[ANCHOR_STATES_TENSOR] = ANCHORS @ view
    tensors[CONCEPTS_TENSOR] = torch.stack(rows)
    ids = [e["id"] for e in entries]
    return Packet.create(
        kind="knowledge",
        provenance=make_provenance(
            method="extract:bottleneck",
            created_at=created_at,
            models=[{"id": teacher, "architecture": "synthetic", "hidden_size": width}],
            inputs_seen={"teacher": 3 * len(concepts) + len(ANCHORS)},
            measurements={"teacher_forward_inputs": 3 * len(concepts) + len(ANCHORS)},
        ),
        tensors=tensors,
        concepts=entries,
        graph={
            "nodes": [{"id": i, "name": i, "kind": "concept"} for i in ids]
            + [{"id": "leisure", "name": "leisure", "kind": "abstract"}],
            "edges": [
                {"source": i, "target": "leisure", "type": "is-a", "weight": 1.0} for i in ids
            ],
        },
        probes={"layer": 2, "pooling": "mean", "logit_scale": 20.0},
        anchors={
            "set": "synthetic",
            "version": "1",
            "sha256": "0" * 64,
            "texts": [f"anchor text {i}" for i in range(len(ANCHORS))],
        },
    )


def teachers(**options) -> tuple[Packet, Packet]:
    a = teacher_packet(
        "teacher-a",
        12,
        [
            ("sport", "sport", "s"),
            ("politics", "politics", "p"),
            ("business", "business", "b"),
            ("science", "science", "a"),
        ],
        seed=2,
        **options.get("a", {}),
    )
    b = teacher_packet(
        "teacher-b",
        10,
        [
            ("sport", "sport", "s"),  # same probes, same meaning: a duplicate
            ("finance", "business", "f"),  # another name for business: an alias
            ("science", "music", "m"),  # same name, another meaning: a conflict
            ("weather", "weather", "w"),
        ],  # only teacher B knows it
        seed=3,
        **options.get("b", {}),
    )
    return a, b


def test_alignment_is_fitted_on_shared_probe_texts() -> None:
    a, b = teachers()
    alignment = align(a, b)
    assert alignment.anchors == 24 + 3  # the anchor texts and sport's probes
    assert alignment.fit_cosine is not None and alignment.fit_cosine > 0.95


def test_duplicates_aliases_and_conflicts_are_found_and_resolved() -> None:
    a, b = teachers()
    merge = merge_packets([a, b])
    kinds = {(f.kind, f.first[1], f.second[1]) for f in merge.findings}
    assert kinds == {("duplicate", 0, 0), ("alias", 2, 1), ("conflict", 3, 2)}

    m = merge.packet.manifest
    names = [c.name for c in m.concepts or []]
    assert names == ["sport", "politics", "business", "science", "science (teacher-b)", "weather"]
    business = next(c for c in m.concepts or [] if c.name == "business")
    assert any(p.startswith("f business") for p in business.probes)  # the alias's probes joined
    assert m.provenance.parents == [a.digest, b.digest]
    assert "business=0:business+1:finance" in m.provenance.settings["sources"]  # type: ignore[operator]
    assert [x.id for x in m.provenance.models] == ["teacher-a", "teacher-b"]
    assert m.provenance.inputs_seen["teacher"] == 2 * (12 + 24)
    assert m.provenance.measurements["teacher_forward_inputs"] == 2 * (12 + 24)

    # The joint space: teacher A's block first, B's after it, zero elsewhere.
    vectors = merge.packet.tensors[CONCEPTS_TENSOR]
    assert vectors.shape == (6, 22)
    assert torch.equal(vectors[0, :12], a.tensors[CONCEPTS_TENSOR][0])
    assert vectors[0, 12:].abs().sum() == 0 and vectors[5, :12].abs().sum() == 0
    assert torch.equal(vectors[5, 12:], b.tensors[CONCEPTS_TENSOR][3])
    assert len(m.traces or []) == len(a.manifest.traces or []) + len(b.manifest.traces or [])
    abstract = [n for n in (m.graph.nodes if m.graph else []) if n.kind == "abstract"]
    assert [n.name for n in abstract] == ["leisure"]  # joined by name across teachers


@pytest.mark.parametrize(
    ("settings", "options", "sport_from_b"),
    [
        (MergeSettings(policy="confidence"), {"b": {"confidence": {"sport": 0.9}}}, True),
        (MergeSettings(policy="confidence"), {"a": {"confidence": {"sport": 0.9}}}, False),
        (MergeSettings(policy="priority", priority=(1, 0)), {}, True),
        (MergeSettings(policy="priority"), {}, False),
        (MergeSettings(policy="recency"), {"b": {"created_at": "2026-06-01T00:00:00+00:00"}}, True),
    ],
)
def test_the_policy_picks_the_survivor(settings, options, sport_from_b) -> None:
    a, b = teachers(**options)
    merged = merge_packets([a, b], settings).packet
    sport = merged.tensors[CONCEPTS_TENSOR][0]
    assert bool(sport[12:].abs().sum() > 0) is sport_from_b
    assert bool(sport[:12].abs().sum() > 0) is not sport_from_b


def test_conflict_rule_winner_drops_the_loser() -> None:
    a, b = teachers()
    m = merge_packets([a, b], MergeSettings(conflicts="winner")).packet.manifest
    assert [c.name for c in m.concepts or []] == [
        "sport",
        "politics",
        "business",
        "science",
        "weather",
    ]
    assert m.provenance.settings["conflict_rule"] == "winner"
    [conflict] = m.provenance.settings["conflicts"]  # type: ignore[misc]
    assert str(conflict).startswith("0:science~1:science cos=0.5")


def test_merge_refuses_what_it_cannot_merge() -> None:
    a, _ = teachers()
    with pytest.raises(UsageError, match="at least two"):
        merge_packets([a])
    with pytest.raises(UsageError, match="twice"):
        merge_packets([a, a])
    with pytest.raises(UsageError, match="priority"):
        merge_packets(list(teachers()), MergeSettings(policy="priority", priority=(0, 0)))


def test_same_inputs_give_the_same_bytes() -> None:
    settings = MergeSettings(created_at="2026-01-01T00:00:00+00:00")
    first = merge_packets(list(teachers()), settings).packet
    second = merge_packets(list(teachers()), settings).packet
    assert first.to_bytes() == second.to_bytes()
