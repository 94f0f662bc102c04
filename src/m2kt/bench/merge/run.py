"""Does merging two teachers' packets give a student more than either packet alone?

The concept spec is split in two halves that share a few concepts (`overlap`): teacher A reads
one half, teacher B (another architecture) the other; a few probes of every concept are held
out before either teacher sees the spec. The student ingests packet A, packet B, and their
merge, and is scored on the held-out probes of *all* concepts. Beside it: each teacher on the
held-out probes of the concepts it knows, and the untouched student, classifying by its own
anchors of every concept (the mean of its states on the same teaching probes the packets
carry): what the probe texts alone give, without any teacher.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.atomic import atomic_write_bytes
from m2kt.concepts.probing import read_probes
from m2kt.concepts.spec import ConceptSpec, load_spec
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.ingest.evaluate import Ingested
from m2kt.ingest.pipeline import IngestSettings, ingest
from m2kt.ingest.verify import Gate
from m2kt.merge import MergeSettings, merge_packets
from m2kt.models.load import load_model
from m2kt.models.view import ModelView, Pooling
from m2kt.packet import Packet
from m2kt.safety import ExportScreen

CREATED = "2026-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class MergePlan:
    teachers: tuple[str, str] = ("e1", "l1")
    student: str = "e2"
    spec: str = "topics"
    overlap: int = 2  # concepts both teachers know
    heldout: int = 2  # probes per concept held out from everything, for scoring
    seed: int = 0


@dataclass(frozen=True)
class Split:
    whole: ConceptSpec  # every concept, teaching probes only
    halves: tuple[ConceptSpec, ConceptSpec]
    teaching: dict[str, list[str]]  # concept name -> probes the teachers may read
    heldout_texts: list[str]
    heldout_labels: list[str]


def split_spec(spec: ConceptSpec, overlap: int, heldout: int, seed: int) -> Split:
    """Two overlapping halves of the concepts; `heldout` probes per concept kept from both."""
    generator = torch.Generator().manual_seed(seed)
    entries, texts, labels, teaching = [], [], [], {}
    for entry in spec.concepts:
        order = torch.randperm(len(entry.probes), generator=generator).tolist()
        held = set(order[:heldout])
        kept = [p for i, p in enumerate(entry.probes) if i not in held]
        texts += [p for i, p in enumerate(entry.probes) if i in held]
        labels += [entry.name] * len(held)
        teaching[entry.name] = kept
        entries.append(entry.model_copy(update={"probes": kept}))
    n = len(entries)
    first_end = (n + overlap) // 2
    second_start = first_end - overlap
    halves = (
        spec.model_copy(update={"name": f"{spec.name}-a", "concepts": entries[:first_end]}),
        spec.model_copy(update={"name": f"{spec.name}-b", "concepts": entries[second_start:]}),
    )
    whole = spec.model_copy(update={"concepts": entries})
    return Split(whole, halves, teaching, texts, labels)


def run_merge_benchmark(
    plan: MergePlan, out: str | Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    started = time.perf_counter()
    split = split_spec(load_spec(plan.spec), plan.overlap, plan.heldout, plan.seed)
    settings = ExtractionSettings(seed=plan.seed, created_at=CREATED)
    packets: list[Packet] = []
    teachers: list[dict[str, Any]] = []
    for model_id, half in zip(plan.teachers, split.halves, strict=True):
        log(f"teacher {model_id} reads {len(half.concepts)} concepts")
        view = load_model(model_id)
        packet = extract_packet(view, half, settings, audit=ExportScreen()).packet
        if not packets:  # the reference: one teacher asked about every concept
            whole = extract_packet(view, split.whole, settings, audit=ExportScreen()).packet
        known = {c.name for c in half.concepts}
        teachers.append(
            {
                "teacher": model_id,
                "concepts": len(known),
                "accuracy_on_its_concepts": _teacher_accuracy(view, packet, split, known),
                "inputs": packet.manifest.provenance.inputs_seen.get("teacher", 0),
            }
        )
        packets.append(packet)
        del view
    log("merging")
    merge = merge_packets(packets, MergeSettings(created_at=CREATED))
    student = load_model(plan.student)
    rows = [_untouched(student, split)]
    named = [
        (f"packet A ({plan.teachers[0]})", packets[0]),
        (f"packet B ({plan.teachers[1]})", packets[1]),
        ("merged A+B", merge.packet),
        (f"one packet of {plan.teachers[0]} over all concepts (reference)", whole),
    ]
    for name, packet in named:
        log(f"student {plan.student} ingests {name}")
        rows.append(_ingested(student, packet, split, name))
    result = {
        "plan": asdict(plan),
        "concepts": len(split.teaching),
        "heldout_probes": len(split.heldout_texts),
        "teachers": teachers,
        "student": rows,
        "merge": {
            "findings": [asdict(f) for f in merge.findings],
            "alignments": merge.alignments,
            "notes": merge.notes,
            "concepts": len(merge.packet.manifest.concepts or []),
            "parents": merge.packet.manifest.provenance.parents,
        },
        "wall_clock_seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out)
    atomic_write_bytes(out / "merge-results.json", (json.dumps(result, indent=1) + "\n").encode())
    atomic_write_bytes(out / "merge-results.md", markdown(result).encode())
    return result


def markdown(result: dict[str, Any]) -> str:
    """Teacher, student, baseline and inputs side by side."""
    plan = result["plan"]
    lines = [
        f"Student {plan['student']}, spec {plan['spec']} ({result['concepts']} concepts, "
        f"{plan['overlap']} known to both teachers), {result['heldout_probes']} held-out probes, "
        f"seed {plan['seed']}.",
        "",
        "| who | knows | held-out accuracy % | teacher inputs | student inputs "
        "| verification probes | verdict (--accept-unverified) | verdict (default) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in result["teachers"]:
        lines.append(
            f"| teacher {t['teacher']} | {t['concepts']} concepts | "
            f"{100 * t['accuracy_on_its_concepts']:.1f} (its concepts only) | {t['inputs']} "
            "| - | - | - | - |"
        )
    for row in result["student"]:
        accuracy = "-" if row["accuracy"] is None else f"**{100 * row['accuracy']:.1f}**"
        lines.append(
            f"| student + {row['packet']} | {row['concepts']} concepts | {accuracy} | "
            f"{row['teacher_inputs']} | {row['student_inputs']} | "
            f"{row.get('verification_probes', '-')} | {row['verdict']} | "
            f"{row.get('default_verdict', '-')} |"
        )
    own = result["student"][0]["accuracy"]
    below = [
        r["packet"]
        for r in result["student"][1:]
        if r["accuracy"] is not None and r["accuracy"] < own
    ]
    lines += [
        "",
        f"Accepted (with --accept-unverified) yet below the student's own anchors ({100 * own:.1f}"
        f"%) on the held-out probes: {', '.join(below) or 'none'}.",
    ]
    found = result["merge"]["findings"]
    kinds = {k: sum(f["kind"] == k for f in found) for k in ("duplicate", "alias", "conflict")}
    lines += [
        "",
        f"Merge: {result['merge']['concepts']} concepts; findings {kinds}; alignment "
        f"{result['merge']['alignments']}; {result['wall_clock_seconds']:.0f} s in all.",
        "",
    ]
    return "\n".join(lines)


def _teacher_accuracy(view: ModelView, packet: Packet, split: Split, known: set[str]) -> float:
    """Nearest packet concept, in the teacher's own space, for held-out probes it knows."""
    pairs = zip(split.heldout_texts, split.heldout_labels, strict=True)
    texts, labels = map(
        list, zip(*[(t, label) for t, label in pairs if label in known], strict=True)
    )
    record = packet.manifest.provenance.settings
    layer = int(record["layer"])  # type: ignore[arg-type]
    pooling: Pooling = "last" if record["pooling"] == "last" else "mean"
    states = read_probes(view, texts, [layer], poolings=[pooling]).states[(pooling, layer)]
    concepts = packet.tensors["concepts.embeddings"].float()
    names = [c.name for c in packet.manifest.concepts or []]
    nearest = (F.normalize(states.float(), dim=-1) @ F.normalize(concepts, dim=-1).T).argmax(-1)
    return _accuracy([names[i] for i in nearest.tolist()], labels)


def _untouched(student: ModelView, split: Split) -> dict[str, Any]:
    """The student's own anchors of every concept, from the teaching probes; no teacher."""
    names = list(split.teaching)
    texts = [t for n in names for t in split.teaching[n]]
    readings = read_probes(student, texts + split.heldout_texts, [-1])
    (states,) = readings.states.values()
    states = F.normalize(states.float(), dim=-1)
    anchors, start = [], 0
    for n in names:
        anchors.append(states[start : start + len(split.teaching[n])].mean(0))
        start += len(split.teaching[n])
    held = states[len(texts) :]
    nearest = (held @ F.normalize(torch.stack(anchors), dim=-1).T).argmax(-1)
    return {
        "packet": "no packet (own anchors)",
        "concepts": len(names),
        "accuracy": _accuracy([names[i] for i in nearest.tolist()], split.heldout_labels),
        "teacher_inputs": 0,
        "student_inputs": len(texts),
        "verdict": "-",
    }


def _ingested(student: ModelView, packet: Packet, split: Split, name: str) -> dict[str, Any]:
    """Ingest with unverified packets allowed, so that every packet's accuracy is measured.

    `verdict` is the gate's decision with `--accept-unverified`; `default_verdict` is what a
    user gets without it (a packet with too few verification probes is refused).
    """
    ingestion = ingest(student, packet, IngestSettings(gate=Gate(accept_unverified=True)))
    transfer = ingestion.verdict.checks[0].statistics or {}
    unverified = transfer.get("decision") == "unverified"
    verdict = "accepted" if ingestion.accepted else "rolled back"
    row = {
        "packet": name,
        "concepts": len(packet.manifest.concepts or []),
        "teacher_inputs": ingestion.report["inputs"]["teacher"],
        "student_inputs": ingestion.report["inputs"]["student_training"],
        "verification_probes": transfer.get("n", 0),
        "verdict": f"{verdict} (unverified)" if unverified and ingestion.accepted else verdict,
        "default_verdict": "refused: too few verification probes" if unverified else verdict,
        "reasons": ingestion.verdict.reasons(),
    }
    if ingestion.memory is None:
        return row | {"accuracy": None}
    used = Ingested(ingestion.memory, dict(ingestion.report["student"]), dict(ingestion.report))
    with torch.no_grad():
        logits = ingestion.memory(used.states(student, split.heldout_texts))
    names = ingestion.memory.config.concepts
    predicted = [names[i] for i in logits.argmax(-1).tolist()]
    return row | {"accuracy": _accuracy(predicted, split.heldout_labels)}


def _accuracy(predicted: list[str], labels: list[str]) -> float:
    return round(sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels), 4)
