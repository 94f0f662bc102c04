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
  extraction restricted to it) classifies the held-out texts best, with that accuracy; over
  seeds, best_fixed_layer: the one layer best on average, a fairer mark than each seed's best.

Beside them, how many probes a concept needs: the frozen family extracted from n probes a
concept (a seeded subset of its 8), judged on the same held-out sentences (`probe_curve`).

The benchmark skips what concept accuracy does not read (anchors, attention, the safety audit),
and keeps every pooled state it reads in `<out>/states` (`m2kt.models.state_cache`): the
per-layer packets and a second run read no probe twice.
"""

from __future__ import annotations

import json
import random
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
from m2kt.models.state_cache import StateCache
from m2kt.models.view import ModelView, Pooling
from m2kt.packet import Packet, concept_probes, read_packet

SHIPPED: tuple[str, ...] = ("topics", "arithmetic")


@dataclass(frozen=True)
class ExtractPlan:
    teachers: tuple[str, ...] = ("e1", "e2", "l1", "e3")  # e3 only when installed
    specs: tuple[str, ...] = SHIPPED + FAMILY
    methods: tuple[Method, ...] = ("bottleneck",)
    seeds: tuple[int, ...] = (0, 1, 2)
    best_layer: bool = True
    probe_counts: tuple[int, ...] = ()  # probes a concept written, for the curve (frozen family)
    curve_teachers: tuple[str, ...] = ("e1", "e2")


PLANS = {
    "quick": ExtractPlan(teachers=("e1",), seeds=(0,), best_layer=False),
    "full": ExtractPlan(
        methods=("bottleneck", "attribution", "clustering"), probe_counts=(3, 4, 5, 6, 8)
    ),
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
    curve: list[dict[str, Any]] = []
    skipped: list[str] = []
    cache = StateCache(out_dir / "states")
    for teacher in plan.teachers:
        try:
            view = load_model(teacher)
        except M2KTError as exc:
            skipped.append(f"{teacher}: {exc.message}")
            log(f"skip {teacher}: {exc.message}")
            continue
        view.state_cache = cache
        for name, (spec, heldout) in specs.items():
            for method in plan.methods:
                for seed in plan.seeds:
                    log(f"{teacher} {name} {method} seed {seed}")
                    runs.append(
                        _one(view, teacher, name, spec, heldout, method, seed, plan, out_dir)
                    )
        if teacher in plan.curve_teachers:
            for name in (n for n in plan.specs if n in FAMILY):
                spec, heldout = specs[name]
                for count in plan.probe_counts:
                    log(f"{teacher} {name}: {count} probes a concept")
                    curve += [
                        _fewer(view, teacher, name, spec, heldout, count, s) for s in plan.seeds
                    ]
        cache.flush()
    result = {
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.__dict__.items()},
        "runs": runs,
        "summary": summarize(runs),
        "probe_curve": summarize_curve(curve),
        "probe_curve_runs": curve,
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
    judged = judge(view, packet, spec, heldout)
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
        "readout_layers": packet.manifest.readout.layers if packet.manifest.readout else None,
    }
    if plan.best_layer:
        per_layer = {}
        for layer in view.check_layers(spec.layers or default_layers(view)):
            one = extract_packet(view, spec, replace(settings, layers=[layer])).packet
            per_layer[layer] = judge(view, one, spec, heldout).concept_accuracy
        best = max(per_layer, key=lambda k: (per_layer[k], -k))
        row |= {"best_layer": best, "best_layer_accuracy": per_layer[best], "layers": per_layer}
    return row


def _fewer(
    view: ModelView,
    teacher: str,
    name: str,
    spec: ConceptSpec,
    heldout: dict[str, list[str]] | None,
    count: int,
    seed: int,
) -> dict[str, Any]:
    """The spec cut to `count` probes a concept (a subset drawn with `seed`), extracted and
    judged like a run: how accuracy grows with the probes a user writes."""
    draw = random.Random(f"{name}:{count}:{seed}")
    concepts = [
        c.model_copy(update={"probes": draw.sample(c.probes, min(count, len(c.probes)))})
        for c in spec.concepts
    ]
    cut = spec.model_copy(update={"concepts": concepts, "traces": []})
    settings = ExtractionSettings(seed=seed, anchors=None, attention=False)
    judged = judge(view, extract_packet(view, cut, settings).packet, cut, heldout)
    return {
        "teacher": teacher,
        "spec": name,
        "probes": count,
        "seed": seed,
        "concept_accuracy": judged.concept_accuracy,
        "linear_probe_accuracy": judged.linear_probe_accuracy,
    }


def summarize_curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean accuracy per teacher and probes a concept, over the family's specs and seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["teacher"], row["probes"]), []).append(row)
    return [
        {
            "teacher": teacher,
            "probes": count,
            "concept_accuracy": round(sum(r["concept_accuracy"] for r in rows) / len(rows), 4),
            "linear_probe_accuracy": round(
                sum(r["linear_probe_accuracy"] for r in rows) / len(rows), 4
            ),
            "runs": len(rows),
        }
        for (teacher, count), rows in groups.items()
    ]


def judge(
    view: ModelView, packet: Packet, spec: ConceptSpec, heldout: dict[str, list[str]] | None
) -> Judged:
    """Classify held-out texts with `packet`'s concepts, beside a linear probe on its part P.

    Each packet concept stands for the spec concept most of its extraction probes are listed
    under (itself for the named methods, the majority for a discovered cluster). Without
    `heldout` (spec concept id → texts), the held-out texts are the spec's probes that no packet
    concept was extracted from: the packet's verification probes.
    """
    probes = concept_probes(packet)
    part = packet.manifest.probes
    assert part is not None and part.layer is not None and probes.states is not None
    concept_of = {t: k for k, c in enumerate(spec.concepts) for t in c.probes}
    if heldout is None:
        used = set(probes.texts)
        texts = [t for c in spec.concepts for t in c.probes if t not in used]
    else:
        texts = [t for c in spec.concepts for t in heldout[c.id]]
        concept_of |= {t: k for k, c in enumerate(spec.concepts) for t in heldout[c.id]}
    truth = torch.tensor([concept_of[t] for t in texts])
    concepts = packet.manifest.concepts or []
    votes = [[concept_of[t] for t in c.probes if t in concept_of] for c in concepts]
    stands_for = torch.tensor(
        [max(set(v), key=lambda k: (v.count(k), -k)) if v else -1 for v in votes]
    )
    pooling: Pooling = "last" if part.pooling == "last" else "mean"
    layers = (packet.manifest.readout.layers if packet.manifest.readout else None) or []
    read = read_probes(view, texts, sorted({part.layer, *layers}), poolings=[pooling])
    states = read.states[(pooling, part.layer)]
    if layers:  # a readout over several layers reads their states side by side
        scores = packet_scores(packet, read.side_by_side(pooling, layers))
    else:
        scores = packet_scores(packet, states)
    predicted = stands_for[scores.argmax(1)]
    labelled = [n for n, t in enumerate(probes.texts) if t in concept_of]
    labels = torch.tensor([concept_of[probes.texts[n]] for n in labelled])
    classes = len(spec.concepts)
    ceiling = linear_probe_accuracy(probes.states[labelled], labels, states, truth, classes)
    return Judged(
        concept_accuracy=float((predicted == truth).float().mean()),
        linear_probe_accuracy=ceiling,
        chance=1 / classes,
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
        if "layers" in rows[0]:
            # the one layer best on average over seeds: a per-seed best is the maximum of a few
            # noisy figures and flatters the oracle
            means = {n: sum(r["layers"][n] for r in rows) / len(rows) for n in rows[0]["layers"]}
            fixed = max(means, key=lambda n: (means[n], -n))
            entry["best_fixed_layer"] = fixed
            entry["best_fixed_layer_accuracy"] = round(means[fixed], 4)
        entry["layer"] = [r["layer"] for r in rows]
        entry["pooling"] = [r["pooling"] for r in rows]
        entry["best_layer"] = [r.get("best_layer") for r in rows]
        entry["readout"] = [r["readout"] for r in rows]
        entry["readout_layers"] = [r.get("readout_layers") for r in rows]
        entry["family"] = rows[0]["family"]
        entry["seeds"] = len(rows)
        summary.append(entry)
    return summary


def _reading(entry: dict[str, Any], seed: int) -> str:
    """One seed's reading: `pooling@layer`, or `pooling@a+b+c` for a readout over layers."""
    layers = (entry.get("readout_layers") or [None] * len(entry["layer"]))[seed]
    shown = "+".join(map(str, layers)) if layers else entry["layer"][seed]
    return f"{entry['pooling'][seed]}@{shown}"


def markdown(result: dict[str, Any]) -> str:
    """The README's extraction table: means over seeds, layers per seed."""
    lines = [
        "| teacher | spec | method | concepts | linear probe | chance | reading (per seed) "
        "| best layer (per seed) | at best layer | best fixed layer | readout |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(value: object) -> str:
        return f"{100 * value:.1f}%" if isinstance(value, float) else "—"

    for s in result["summary"]:
        spec = s["spec"] + (" (frozen)" if s["family"] == "frozen" else "")
        best = ", ".join(str(b) for b in s["best_layer"]) if s["best_layer"][0] is not None else "—"
        fixed = "—"
        if "best_fixed_layer" in s:
            fixed = f"{s['best_fixed_layer']}: {pct(s['best_fixed_layer_accuracy'])}"
        lines.append(
            f"| {s['teacher']} | {spec} | {s['method']} | {pct(s['concept_accuracy'])} "
            f"| {pct(s['linear_probe_accuracy'])} | {pct(s['chance'])} "
            f"| {', '.join(_reading(s, i) for i in range(len(s['layer'])))} "
            f"| {best} | {pct(s.get('best_layer_accuracy'))} | {fixed} "
            f"| {', '.join(sorted(set(s['readout'])))} |"
        )
    if result.get("probe_curve"):
        lines += [
            "",
            "Probes a concept (written; a third held out) → concept accuracy on the frozen "
            "family's held-out sentences, mean over its specs and seeds:",
            "",
            "| teacher | probes a concept | concepts | linear probe | runs |",
            "|---|---|---|---|---|",
        ]
        for c in result["probe_curve"]:
            lines.append(
                f"| {c['teacher']} | {c['probes']} | {pct(c['concept_accuracy'])} "
                f"| {pct(c['linear_probe_accuracy'])} | {c['runs']} |"
            )
    lines.append("")
    lines.append(f"{len(result['runs'])} runs, {result['wall_clock_seconds']:.0f} s.")
    for note in result["skipped"]:
        lines.append(f"Skipped {note}.")
    return "\n".join(lines) + "\n"
