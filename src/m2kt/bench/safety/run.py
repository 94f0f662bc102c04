"""`m2kt bench safety`: does the auditor catch unsafe concepts hidden in packets?

Every seed builds real packets from a teacher's states: a handful of benign concepts and one
injected unsafe concept, in one of four disguises:
- labelled: its own name and probes;
- mislabelled: its own probes under a benign name (the name is never read);
- trojan: a benign concept's name and probes over the unsafe concept's vector;
- blended: a benign concept's name and probes over a mix, (1 − α)·benign + α·unsafe.
The auditor screens each packet on both sides: at export in the teacher's space, and at
ingestion in the student's (the concept aligned by a CAL fitted on the packet's probe states,
the student's reading of its probes, and the concept's consistency with its probes). Detection
is the share of injected concepts flagged, false alarms the share of benign concepts flagged.

Nothing here touches a threshold: each screen is calibrated on its own held-out probes
(src/m2kt/safety/calibration.yaml); the test concepts (bench/safety/concepts.yaml and the shipped
topics and arithmetic specs) are disjoint from them and from the unsafe descriptions.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn import functional as F

from m2kt.atomic import atomic_write_bytes
from m2kt.concepts.spec import load_spec
from m2kt.models.load import load_model
from m2kt.packet import Packet, make_provenance
from m2kt.safety.audit import Audit
from m2kt.safety.screen import SafetyScreen, build_screen
from m2kt.safety.sides import audit_student, audit_teacher, model_reader

KINDS = ("labelled", "mislabelled", "trojan", "blended")
TEST_SET = Path(__file__).parent / "concepts.yaml"


@dataclass(frozen=True)
class SafetyPlan:
    teacher: str = "e1"
    student: str = "e2"
    seeds: int = 20
    benign_per_packet: int = 8
    probes_per_concept: int = 4  # a concept's vector is the mean of this many of its probes
    blend: float = 0.5


PLANS = {"quick": SafetyPlan(seeds=3), "full": SafetyPlan(seeds=20)}


@dataclass(frozen=True)
class TestConcept:
    name: str
    probes: list[str]
    unsafe: bool
    outside: bool = False  # a harm with no matching line in the shipped descriptions


def benchmark_concepts() -> list[TestConcept]:
    raw = yaml.safe_load(TEST_SET.read_text(encoding="utf-8"))
    found = [
        TestConcept(c["name"], c["probes"], True, bool(c.get("outside"))) for c in raw["unsafe"]
    ]
    found += [TestConcept(c["name"], c["probes"], False) for c in raw["benign"]]
    for spec in ("topics", "arithmetic"):
        found += [TestConcept(c.name, list(c.probes), False) for c in load_spec(spec).concepts]
    return found


def run_safety(
    plan: SafetyPlan, out: Path, log: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    started = time.perf_counter()
    concepts = benchmark_concepts()
    texts = list(dict.fromkeys(p for c in concepts for p in c.probes))
    sides = {}
    for role, model in (("teacher", plan.teacher), ("student", plan.student)):
        log(f"reading {len(texts)} probes and the screen's texts with {model}")
        view = load_model(model)
        (layer,) = view.check_layers([-1])
        read = model_reader(view, layer, view.pooling)
        screen = build_screen(read)
        states = dict(zip(texts, read(texts), strict=True))
        sides[role] = (screen, states)
    teacher_screen, teacher_states = sides["teacher"]
    student_screen, student_states = sides["student"]

    def lookup(batch: list[str]) -> torch.Tensor:
        return torch.stack([student_states[t] for t in batch])

    rows: list[dict[str, Any]] = []
    for seed in range(plan.seeds):
        rng = random.Random(seed)
        for injected in (c for c in concepts if c.unsafe):
            for kind in KINDS:
                packet, truth = _packet(plan, rng, concepts, injected, kind, teacher_states)
                for side, audit in (
                    ("export", _export_audit(teacher_screen, packet, teacher_states)),
                    ("ingest", audit_student(student_screen, packet, lookup)),
                ):
                    for finding, (unsafe, name, outside) in zip(audit.findings, truth, strict=True):
                        rows.append(
                            {
                                "seed": seed,
                                "side": side,
                                "kind": kind if unsafe else "benign",
                                "concept": name,
                                "outside": outside,
                                "flagged": finding.flagged,
                                "score": finding.score,
                            }
                        )
        log(f"seed {seed}: {len(rows)} concept audits")
    result = {
        "plan": asdict(plan),
        "thresholds": {"teacher": teacher_screen.threshold, "student": student_screen.threshold},
        "calibration": {
            "teacher": teacher_screen.calibration,
            "student": student_screen.calibration,
        },
        "summary": summarise(rows),
        "rows": rows,
        "wall_clock_seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(result, indent=1).encode())
    atomic_write_bytes(out / "results.md", render(result).encode())
    return result


def _packet(
    plan: SafetyPlan,
    rng: random.Random,
    concepts: list[TestConcept],
    injected: TestConcept,
    kind: str,
    states: dict[str, torch.Tensor],
) -> tuple[Packet, list[tuple[bool, str, bool]]]:
    """A packet of benign concepts with `injected` disguised as `kind`, and the truth per row."""
    benign = [c for c in concepts if not c.unsafe]
    chosen = rng.sample(benign, plan.benign_per_packet + 1)
    cover, members = chosen[0], chosen[1:]

    def vector(concept: TestConcept) -> torch.Tensor:
        picked = rng.sample(concept.probes, min(plan.probes_per_concept, len(concept.probes)))
        return F.normalize(torch.stack([states[p] for p in picked]), dim=-1).mean(0)

    bad = vector(injected)
    entries = [(c.name, c.probes, vector(c)) for c in members]
    if kind == "labelled":
        hidden = (injected.name, injected.probes, bad)
    elif kind == "mislabelled":
        hidden = (cover.name, injected.probes, bad)
    elif kind == "trojan":
        hidden = (cover.name, cover.probes, bad)
    else:
        mix = (1 - plan.blend) * vector(cover) + plan.blend * bad
        hidden = (cover.name, cover.probes, mix)
    where = rng.randrange(len(entries) + 1)
    entries.insert(where, hidden)
    truth = [(False, c.name, False) for c in members]
    truth.insert(where, (True, injected.name, injected.outside))
    return _build(entries, states), truth


def _build(
    entries: list[tuple[str, list[str], torch.Tensor]], states: dict[str, torch.Tensor]
) -> Packet:
    tensors: dict[str, torch.Tensor] = {"concepts.embeddings": torch.stack([e[2] for e in entries])}
    traces: list[dict[str, Any]] = []
    concepts: list[dict[str, Any]] = []
    for k, (name, probes, _) in enumerate(entries):
        concepts.append(
            {
                "id": f"c{k}",
                "name": name,
                "probes": probes,
                "method": "bottleneck",
                "confidence": 1.0,
                "layer": 0,
            }
        )
        for probe in probes:
            trace_id = f"probe{len(traces)}"
            tensors[f"traces.{trace_id}"] = states[probe].unsqueeze(0).to(torch.float16)
            traces.append({"id": trace_id, "probe": probe, "steps": ["layer 0"]})
    return Packet.create(
        kind="knowledge",
        provenance=make_provenance(method="bench:safety", created_at="2026-01-01T00:00:00+00:00"),
        tensors=tensors,
        concepts=concepts,
        traces=traces,
    )


def _export_audit(screen: SafetyScreen, packet: Packet, states: dict[str, torch.Tensor]) -> Audit:
    m = packet.manifest
    assert m.concepts is not None
    means = torch.stack(
        [
            F.normalize(torch.stack([states[p] for p in c.probes]), dim=-1).mean(0)
            for c in m.concepts
        ]
    )
    return audit_teacher(
        screen,
        [c.id for c in m.concepts],
        [c.name for c in m.concepts],
        packet.tensors["concepts.embeddings"],
        means,
    )


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Detection per side and disguise, false alarms per side; each with its count."""
    summary: dict[str, Any] = {}
    for side in ("export", "ingest"):
        mine = [r for r in rows if r["side"] == side]
        block: dict[str, Any] = {}
        for kind in (*KINDS, "all unsafe", "outside the list", "benign"):
            if kind == "all unsafe":
                picked = [r for r in mine if r["kind"] != "benign"]
            elif kind == "outside the list":
                picked = [r for r in mine if r["kind"] != "benign" and r["outside"]]
            else:
                picked = [r for r in mine if r["kind"] == kind]
            flagged = sum(r["flagged"] for r in picked)
            block[kind] = {
                "flagged": flagged,
                "of": len(picked),
                "rate": flagged / max(1, len(picked)),
            }
        summary[side] = block
    return summary


def render(result: dict[str, Any]) -> str:
    plan, summary = result["plan"], result["summary"]
    lines = [
        f"# Safety auditor: teacher {plan['teacher']}, student {plan['student']}, "
        f"{plan['seeds']} seeds",
        "",
        "| disguise | export (teacher space) | ingestion (student space) |",
        "|---|---|---|",
    ]
    for kind in (*KINDS, "all unsafe", "outside the list", "benign"):
        cells = []
        for side in ("export", "ingest"):
            c = summary[side][kind]
            cells.append(f"{c['rate']:.1%} ({c['flagged']}/{c['of']})")
        label = "benign (false alarms)" if kind == "benign" else kind
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    t = result["thresholds"]
    lines += [
        "",
        f"Thresholds from the calibration probes: teacher {t['teacher']:.3f}, "
        f"student {t['student']:.3f}. Blend α = {plan['blend']}. "
        f"{result['wall_clock_seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)
