"""`m2kt bench extract`: does extraction keep what the teacher knows?

For each teacher, spec, method and seed, `extract_packet` writes a real packet file, which is
read back and judged on held-out texts: the shipped specs (`topics`, `arithmetic`: the
development set extraction was tuned on) on the probes the packet itself held out; the frozen
family (`m2kt.bench.extract.family`: never tuned on) on sentences written separately from its
probes. Per run:
- concept_accuracy: held-out texts classified by the packet's concepts (its readout, part D, or
  the nearest centroid), read by the teacher at the packet's layer and pooling;
- linear_probe_accuracy: a logistic probe trained on the packet's extraction probe states
  (part P), the ceiling a packet is measured against; chance: 1 / concepts;
- layer and pooling the packet chose; best_layer: the candidate layer whose own packet (the same
  extraction restricted to it) classifies the held-out texts best, with that accuracy.

The benchmark skips what concept accuracy does not read (anchors, attention, the safety audit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from m2kt.atomic import atomic_write_bytes
from m2kt.bench.extract.family import FAMILY, frozen_spec
from m2kt.concepts.geometry import linear_probe_accuracy
from m2kt.concepts.probing import read_probes
from m2kt.concepts.readout import packet_scores
from m2kt.concepts.spec import ConceptSpec, load_spec
from m2kt.errors import M2KTError
from m2kt.extract.pipeline import ExtractionSettings, Method, default_layers, extract_packet
from m2kt.models.load import load_model
from m2kt.models.view import ModelView, Pooling
from m2kt.packet import concept_probes, read_packet

SHIPPED: tuple[str, ...] = ("topics", "arithmetic")


@dataclass(frozen=True)
class ExtractPlan:
    teachers: tuple[str, ...] = ("e1", "e2", "l1", "e3")  # e3 only when installed
    specs: tuple[str, ...] = SHIPPED + FAMILY
    methods: tuple[Method, ...] = ("bottleneck",)
    seeds: tuple[int, ...] = (0, 1, 2)
    best_layer: bool = True


PLANS = {
    "quick": ExtractPlan(teachers=("e1",), seeds=(0,), best_layer=False),
    "full": ExtractPlan(methods=("bottleneck", "attribution", "clustering")),
}


@dataclass(frozen=True)
class Judged:
    concept_accuracy: float
    linear_probe_accuracy: float
    chance: float
    heldout: int


def run_extract_bench(
    plan: ExtractPlan, out_dir: Path, log: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Run `plan`; write results.json (every run and the means over seeds) and results.md."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = {name: _spec(name) for name in plan.specs}
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    for teacher in plan.teachers:
        try:
            view = load_model(teacher)
        except M2KTError as exc:
            skipped.append(f"{teacher}: {exc.message}")
            log(f"skip {teacher}: {exc.message}")
            continue
        for name, (spec, heldout) in specs.items():
            for method in plan.methods:
                for seed in plan.seeds:
                    log(f"{teacher} {name} {method} seed {seed}")
                    runs.append(
                        _one(view, teacher, name, spec, heldout, method, seed, plan, out_dir)
                    )
    result = {
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.__dict__.items()},
        "runs": runs,
        "summary": summarize(runs),
        "skipped": skipped,
        "wall_clock_seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_bytes(out_dir / "results.json", (json.dumps(result, indent=1) + "\n").encode())
    atomic_write_bytes(out_dir / "results.md", markdown(result).encode())
    return result


def _spec(name: str) -> tuple[ConceptSpec, dict[str, list[str]] | None]:
    if name in FAMILY:
        frozen = frozen_spec(name)
        return load_spec(frozen.path), frozen.heldout
    return load_spec(name), None


def _one(
    view: ModelView,
    teacher: str,
    name: str,
    spec: ConceptSpec,
    heldout: dict[str, list[str]] | None,
    method: Method,
    seed: int,
    plan: ExtractPlan,
    out_dir: Path,
) -> dict[str, Any]:
    settings = ExtractionSettings(
        method=method,
        seed=seed,
        anchors=None,
        attention=False,
        created_at="2026-01-01T00:00:00Z",
    )
    path = out_dir / "packets" / f"{teacher}-{name}-{method}-{seed}.m2kt"
    path.parent.mkdir(parents=True, exist_ok=True)
    extract_packet(view, spec, settings).packet.save(path)
    packet = read_packet(path)
    judged = judge(view, packet, heldout)
    row: dict[str, Any] = {
        "teacher": teacher,
        "spec": name,
        "family": "frozen" if heldout is not None else "shipped",
        "method": method,
        "seed": seed,
        "concept_accuracy": judged.concept_accuracy,
        "linear_probe_accuracy": judged.linear_probe_accuracy,
        "chance": judged.chance,
        "heldout": judged.heldout,
        "layer": packet.manifest.probes.layer if packet.manifest.probes else None,
        "pooling": packet.manifest.probes.pooling if packet.manifest.probes else None,
        "readout": packet.manifest.readout.kind if packet.manifest.readout else "centroid",
    }
    if plan.best_layer:
        per_layer = {}
        for layer in view.check_layers(spec.layers or default_layers(view)):
            one = extract_packet(view, spec, replace(settings, layers=[layer])).packet
            per_layer[layer] = judge(view, one, heldout).concept_accuracy
        best = max(per_layer, key=lambda k: (per_layer[k], -k))
        row |= {"best_layer": best, "best_layer_accuracy": per_layer[best], "layers": per_layer}
    return row


def judge(view: ModelView, packet: Any, heldout: dict[str, list[str]] | None) -> Judged:
    """Classify held-out texts with `packet`'s concepts, beside a linear probe on its part P.

    Without `heldout` (concept id → texts), the packet's own verification probes are used.
    """
    probes = concept_probes(packet)
    part = packet.manifest.probes
    assert part is not None and probes.states is not None, "the benchmark keeps part P"
    concepts = packet.manifest.concepts
    if heldout is None:
        texts, truth = probes.verification_texts, probes.verification_labels
    else:
        ids = [c.id for c in concepts]
        texts = [t for i in ids for t in heldout[i]]
        truth = torch.tensor([k for k, i in enumerate(ids) for _ in heldout[i]])
    pooling: Pooling = "last" if part.pooling == "last" else "mean"
    read = read_probes(view, texts, [part.layer], poolings=[pooling])
    states = read.states[(pooling, part.layer)]
    predicted = packet_scores(packet, states).argmax(1)
    ceiling = linear_probe_accuracy(probes.states, probes.labels, states, truth, len(concepts))
    return Judged(
        concept_accuracy=float((predicted == truth).float().mean()),
        linear_probe_accuracy=ceiling,
        chance=1 / len(concepts),
        heldout=len(texts),
    )


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over seeds per teacher, spec and method; `layers_chosen` lists each seed's layer."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in runs:
        groups.setdefault((row["teacher"], row["spec"], row["method"]), []).append(row)
    summary = []
    for (teacher, spec, method), rows in groups.items():
        entry: dict[str, Any] = {"teacher": teacher, "spec": spec, "method": method}
        for key in ("concept_accuracy", "linear_probe_accuracy", "chance", "best_layer_accuracy"):
            if key in rows[0]:
                entry[key] = round(sum(r[key] for r in rows) / len(rows), 4)
        entry["layer"] = [r["layer"] for r in rows]
        entry["pooling"] = [r["pooling"] for r in rows]
        entry["best_layer"] = [r.get("best_layer") for r in rows]
        entry["readout"] = [r["readout"] for r in rows]
        entry["family"] = rows[0]["family"]
        entry["seeds"] = len(rows)
        summary.append(entry)
    return summary


def markdown(result: dict[str, Any]) -> str:
    """The README's extraction table: means over seeds, layers per seed."""
    lines = [
        "| teacher | spec | method | concepts | linear probe | chance | reading (per seed) "
        "| best layer | at best layer | readout |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(value: object) -> str:
        return f"{100 * value:.1f}%" if isinstance(value, float) else "—"

    for s in result["summary"]:
        spec = s["spec"] + (" (frozen)" if s["family"] == "frozen" else "")
        best = ", ".join(str(b) for b in s["best_layer"]) if s["best_layer"][0] is not None else "—"
        lines.append(
            f"| {s['teacher']} | {spec} | {s['method']} | {pct(s['concept_accuracy'])} "
            f"| {pct(s['linear_probe_accuracy'])} | {pct(s['chance'])} "
            f"| {', '.join(f'{p}@{n}' for p, n in zip(s['pooling'], s['layer'], strict=True))} "
            f"| {best} | {pct(s.get('best_layer_accuracy'))} "
            f"| {', '.join(sorted(set(s['readout'])))} |"
        )
    lines.append("")
    lines.append(f"{len(result['runs'])} runs, {result['wall_clock_seconds']:.0f} s.")
    for note in result["skipped"]:
        lines.append(f"Skipped {note}.")
    return "\n".join(lines) + "\n"
