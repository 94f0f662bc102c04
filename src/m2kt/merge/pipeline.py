"""Merge knowledge packets of several teachers into one packet a student ingests at once.

Read top to bottom: compare every pair of packets (align on shared probe texts, find
duplicates, aliases and conflicts) → group concepts that mean the same thing and pick each
group's survivor by the policy → lay every teacher's vectors into one joint space → carry
traces, attention, graph → provenance with the parents, each concept's source and every
finding.

**The joint space.** Teacher p's vectors occupy their own block of coordinates (its width, at
its offset) and are zero elsewhere. Nothing is pushed through a cross-teacher map, which with a
handful of shared probes would distort the concepts only one teacher knows; the student's
alignment layer, fitted on every teacher's probe states, learns one block per teacher. The
cross-teacher maps serve the comparison only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from m2kt.errors import UsageError
from m2kt.merge.compare import ConceptRef, Finding, compare
from m2kt.merge.policy import Policy, rank_order, winner
from m2kt.packet import Concept, Packet, anchor_states, concept_probes, make_provenance
from m2kt.packet.manifest import (
    ANCHOR_STATES_TENSOR,
    ATTENTION_TENSOR,
    CONCEPTS_TENSOR,
    PROBE_STATES_TENSOR,
    TRACE_PREFIX,
)
from m2kt.progress import StageProgress, quiet

ConflictRule = Literal["keep-both", "winner"]


@dataclass(frozen=True)
class MergeSettings:
    policy: Policy = "confidence"
    priority: tuple[int, ...] | None = None  # packet indices, most trusted first
    conflicts: ConflictRule = "keep-both"  # keep both (the loser renamed) or only the winner
    created_at: str | None = None


@dataclass(frozen=True)
class Merge:
    packet: Packet
    findings: list[Finding]
    alignments: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def merge_packets(
    packets: Sequence[Packet],
    settings: MergeSettings | None = None,
    progress: StageProgress | None = None,
) -> Merge:
    settings = settings or MergeSettings()
    progress = progress or quiet
    packets = list(packets)
    _check_inputs(packets)
    rank = rank_order(len(packets), settings.priority)
    notes: list[str] = []

    # Compare every pair, the earlier packet's space as the reference.
    findings: list[Finding] = []
    alignments = []
    pairs = [(i, j) for i in range(len(packets)) for j in range(i + 1, len(packets))]
    for n, (i, j) in enumerate(pairs):
        found, alignment = compare(packets, i, j)
        findings += found
        alignments.append(
            {"pair": [i, j], "anchors": alignment.anchors, "fit_cosine": alignment.fit_cosine}
        )
        progress("compare", n + 1, len(pairs))

    # Survivors: one concept per group of same-meaning concepts; conflicts per the rule.
    groups = _same_meaning_groups(packets, findings)
    survivors: dict[ConceptRef, list[ConceptRef]] = {}
    for members in groups:
        survivors[winner(members, packets, settings.policy, rank)] = members
    renamed: dict[ConceptRef, str] = {}
    for f in (f for f in findings if f.kind == "conflict"):
        keep = winner([f.first, f.second], packets, settings.policy, rank)
        lose = f.second if keep == f.first else f.first
        lose_root = next((w for w, members in survivors.items() if lose in members), None)
        if lose_root is None:
            continue  # already dropped by an earlier conflict
        if settings.conflicts == "winner":
            survivors.pop(lose_root)
        else:
            teacher = _teacher(packets[lose[0]])
            renamed[lose_root] = f"{_concept(packets, lose_root).name} ({teacher})"

    # The joint space and the merged parts.
    widths = [packets[p].tensors[CONCEPTS_TENSOR].shape[1] for p in range(len(packets))]
    offsets = [sum(widths[:p]) for p in range(len(packets))]
    total = sum(widths)
    order = sorted(survivors, key=lambda ref: min(survivors[ref]))  # where each first appears
    concepts: list[dict[str, Any]] = []
    ids: dict[ConceptRef, str] = {}
    sources: list[str] = []
    for ref in order:
        entry = _merged_concept(packets, ref, survivors[ref], renamed.get(ref), set(ids.values()))
        ids[ref] = entry["id"]
        for member in survivors[ref]:
            ids.setdefault(member, entry["id"])
        concepts.append(entry)
        sources.append(
            f"{entry['id']}="
            + "+".join(f"{p}:{_concept(packets, (p, k)).id}" for p, k in survivors[ref])
        )
    tensors = {
        CONCEPTS_TENSOR: torch.stack(
            [_embed(packets[p].tensors[CONCEPTS_TENSOR][k], offsets[p], total) for p, k in order]
        )
    }
    probes, probe_tensors = _probes(packets, [[ref, *survivors[ref]] for ref in order], offsets)
    tensors |= probe_tensors
    anchors, anchor_tensors = _anchors(packets, offsets, total) if probes else (None, {})
    tensors |= anchor_tensors
    traces, trace_tensors = _traces(packets, offsets, total)
    tensors |= trace_tensors
    attention = _attention(packets, order, tensors, notes)
    graph = _graph(packets, ids, {c["id"]: c["name"] for c in concepts})

    provenance = make_provenance(
        method=f"merge:{settings.policy}",
        created_at=settings.created_at,
        models=_unique([m for p in packets for m in p.manifest.provenance.models]),
        parents=[p.digest for p in packets],
        settings=_settings(packets, settings, offsets, widths, sources, findings, alignments),
        inputs_seen=_summed([p.manifest.provenance.inputs_seen for p in packets]),
        measurements={"teacher_forward_inputs": sum(map(_teacher_inputs, packets))},
    )
    packet = Packet.create(
        kind="knowledge",
        provenance=provenance,
        tensors=tensors,
        concepts=concepts,
        probes=probes,
        anchors=anchors,
        graph=graph,
        attention=attention,
        traces=traces or None,
    )
    return Merge(packet, findings, alignments, notes)


def _check_inputs(packets: list[Packet]) -> None:
    if len(packets) < 2:
        raise UsageError("merge needs at least two packets")
    for p in packets:
        if p.manifest.kind != "knowledge" or not p.manifest.concepts:
            raise UsageError(
                f"packet {p.digest[:19]} is not a knowledge packet with concepts",
                "merge packets made by `m2kt extract`",
            )
    digests = [p.digest for p in packets]
    if len(set(digests)) != len(digests):
        raise UsageError("the same packet is listed twice", "list each packet once")


def _same_meaning_groups(packets: list[Packet], findings: list[Finding]) -> list[list[ConceptRef]]:
    """Every concept in one group, joined through duplicate and alias findings (union-find)."""
    parent: dict[ConceptRef, ConceptRef] = {
        (p, k): (p, k)
        for p, packet in enumerate(packets)
        for k in range(len(packet.manifest.concepts or []))
    }

    def root(ref: ConceptRef) -> ConceptRef:
        while parent[ref] != ref:
            parent[ref] = parent[parent[ref]]
            ref = parent[ref]
        return ref

    for f in findings:
        if f.kind in ("duplicate", "alias"):
            parent[root(f.second)] = root(f.first)
    groups: dict[ConceptRef, list[ConceptRef]] = {}
    for ref in parent:
        groups.setdefault(root(ref), []).append(ref)
    return list(groups.values())


def _concept(packets: list[Packet], ref: ConceptRef) -> Concept:
    return (packets[ref[0]].manifest.concepts or [])[ref[1]]


def _teacher(packet: Packet) -> str:
    models = packet.manifest.provenance.models
    return models[0].id if models else packet.digest[7:19]


def _merged_concept(
    packets: list[Packet],
    ref: ConceptRef,
    members: list[ConceptRef],
    name: str | None,
    taken: set[str],
) -> dict[str, Any]:
    """The survivor's entry, with every member's probes (the winner's first) and a free id.

    A text two teachers both read stays listed twice: each listing has its own teacher's state
    in part P. Verification probes are every member's, less any text another extracted from.
    """
    base = _concept(packets, ref)
    ordered = list(dict.fromkeys([ref, *members]))
    probes = [t for m in ordered for t in _concept(packets, m).probes]
    verification = [
        t
        for t in dict.fromkeys(t for m in ordered for t in _concept(packets, m).verification)
        if t not in set(probes)
    ]
    entry = base.model_dump(mode="json", exclude_none=True)
    entry |= {"probes": probes, "verification": verification}
    if name is not None:
        entry["name"] = name
    if entry["id"] in taken:
        entry["id"] = f"{base.id[:120]}.p{ref[0]}"
    return entry


def _embed(vector: torch.Tensor, offset: int, total: int) -> torch.Tensor:
    out = torch.zeros(*vector.shape[:-1], total, dtype=vector.dtype)
    out[..., offset : offset + vector.shape[-1]] = vector
    return out


def _probes(
    packets: list[Packet], members: list[list[ConceptRef]], offsets: list[int]
) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """Part P of the merge: each member's probe states in its block, in `_merged_concept`'s order.

    None when a parent carries no probe states. Layer and pooling are left out (the teachers'
    differ); the logit scale is the parents' common one, else the first parent's.
    """
    if any(p.manifest.probes is None for p in packets):
        return None, {}
    total = sum(p.tensors[CONCEPTS_TENSOR].shape[1] for p in packets)
    read = [concept_probes(p) for p in packets]
    rows = []
    for group in members:
        for p, k in dict.fromkeys(group):
            states = read[p].states
            assert states is not None
            rows.append(_embed(states[read[p].indices(k)], offsets[p], total))
    scales = [r.logit_scale for r in read]
    part = {"logit_scale": scales[0]}
    return part, {PROBE_STATES_TENSOR: torch.cat(rows).to(torch.float16)}


def _anchors(
    packets: list[Packet], offsets: list[int], total: int
) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """Part N of the merge: the anchor texts every parent read from one set, each row holding
    every teacher's state in its own block. None when the parents' anchor sets differ."""
    parts = [p.manifest.anchors for p in packets]
    if any(a is None for a in parts):
        return None, {}
    sets = {(a.set, a.version, a.sha256) for a in parts if a is not None}
    read = [anchor_states(p) for p in packets]
    common = set.intersection(*(set(r[0]) for r in read if r is not None))
    first = read[0]
    if len(sets) != 1 or first is None or not common:
        return None, {}
    texts = [t for t in first[0] if t in common]
    rows = torch.zeros(len(texts), total)
    for p, found in enumerate(read):
        assert found is not None
        position = {t: i for i, t in enumerate(found[0])}
        states = found[1][[position[t] for t in texts]]
        rows[:, offsets[p] : offsets[p] + states.shape[1]] = states
    base = parts[0]
    assert base is not None
    part = {"set": base.set, "version": base.version, "sha256": base.sha256, "texts": texts}
    return part, {ANCHOR_STATES_TENSOR: rows.to(torch.float16)}


def _traces(
    packets: list[Packet], offsets: list[int], total: int
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Every parent's traces, ids prefixed by the parent, states laid into the joint space.

    A trace over the teacher's layers keeps only the row at the layer its concepts were read
    at: the student pairs a probe with one teacher state, and the parents' layers differ.
    """
    traces, tensors = [], {}
    for p, packet in enumerate(packets):
        layer = (packet.manifest.concepts or [])[0].layer
        for trace in packet.manifest.traces or []:
            states = packet.tensors[TRACE_PREFIX + trace.id]
            steps = list(trace.steps)
            if len(steps) > 1 and all(s.startswith("layer ") for s in steps):
                wanted = f"layer {layer}"
                row = steps.index(wanted) if wanted in steps else len(steps) - 1
                states, steps = states[row : row + 1], [steps[row]]
            entry = trace.model_dump(mode="json", exclude_none=True)
            entry |= {"id": f"p{p}.{trace.id}"[:128], "steps": steps}
            traces.append(entry)
            tensors[TRACE_PREFIX + entry["id"]] = _embed(states, offsets[p], total)
    return traces, tensors


def _attention(
    packets: list[Packet],
    order: list[ConceptRef],
    tensors: dict[str, torch.Tensor],
    notes: list[str],
) -> dict[str, Any] | None:
    """The survivors' attention maps, when every parent read the same layers at one length."""
    parts = [p.manifest.attention for p in packets]
    if any(a is None for a in parts) or len({(tuple(a.layers), a.length) for a in parts}) != 1:  # type: ignore[union-attr]
        notes.append("attention dropped: the parents read attention at different layers")
        return None
    tensors[ATTENTION_TENSOR] = torch.stack(
        [packets[p].tensors[ATTENTION_TENSOR][k] for p, k in order]
    )
    return parts[0].model_dump(mode="json")  # type: ignore[union-attr]


def _graph(
    packets: list[Packet], ids: dict[ConceptRef, str], names: dict[str, str]
) -> dict[str, Any] | None:
    """Concept nodes of the survivors, abstract nodes joined by name, edges redirected."""
    nodes: dict[str, dict[str, Any]] = {}
    abstract: dict[str, str] = {}  # abstract node name -> merged node id
    edges: dict[tuple[str, str, str], float] = {}
    for p, packet in enumerate(packets):
        graph = packet.manifest.graph
        if graph is None:
            continue
        index = {c.id: k for k, c in enumerate(packet.manifest.concepts or [])}
        rename: dict[str, str] = {}
        for node in graph.nodes:
            if node.kind == "concept":
                merged = ids.get((p, index[node.id]))
                if merged is None:
                    continue  # a conflict's loser, dropped by the rule
                name = names[merged]
            else:
                if node.name not in abstract:
                    abstract[node.name] = _free_id(f"a.{node.name}", nodes)
                merged, name = abstract[node.name], node.name
            rename[node.id] = merged
            nodes.setdefault(merged, {"id": merged, "name": name, "kind": node.kind})
        for edge in graph.edges:
            ends = (rename.get(edge.source), rename.get(edge.target))
            if ends[0] is not None and ends[1] is not None and ends[0] != ends[1]:
                key = (ends[0], ends[1], str(edge.type))
                edges[key] = max(edges.get(key, 0.0), edge.weight)
    if not nodes:
        return None
    return {
        "nodes": list(nodes.values()),
        "edges": [
            {"source": s, "target": t, "type": kind, "weight": w}
            for (s, t, kind), w in edges.items()
        ],
    }


def _free_id(wanted: str, taken: dict[str, Any]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.:-]", "-", wanted)[:120] or "a"
    candidate, n = base, 1
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _unique(models: list[Any]) -> list[Any]:
    seen, out = set(), []
    for m in models:
        key = (m.id, m.weight_sha256)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def _teacher_inputs(packet: Packet) -> int:
    """Inputs the teacher's forward passes took, counted as ingestion counts them."""
    provenance = packet.manifest.provenance
    passes = provenance.measurements.get("teacher_forward_inputs")
    return passes if isinstance(passes, int) else sum(provenance.inputs_seen.values())


def _summed(counts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for count in counts:
        for key, value in count.items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total


def _settings(
    packets: list[Packet],
    settings: MergeSettings,
    offsets: list[int],
    widths: list[int],
    sources: list[str],
    findings: list[Finding],
    alignments: list[dict[str, Any]],
) -> dict[str, Any]:
    """The merge's record inside the packet: flat lists, as the settings schema allows."""

    def ref(r: ConceptRef) -> str:
        return f"{r[0]}:{_concept(packets, r).id}"

    record: dict[str, Any] = {
        "policy": settings.policy,
        "priority": list(settings.priority or range(len(packets))),
        "conflict_rule": settings.conflicts,
        "space": "joint",
        "block_offsets": offsets,
        "block_widths": widths,
        "sources": sources,
        "anchors": [a["anchors"] for a in alignments],
    }
    for kind in ("duplicate", "alias", "conflict"):
        record[f"{kind}s"] = [
            f"{ref(f.first)}~{ref(f.second)} cos={f.similarity}" for f in findings if f.kind == kind
        ]
    return record
