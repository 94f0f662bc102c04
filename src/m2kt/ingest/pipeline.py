"""Ingest a knowledge packet into a frozen student: the paper's Algorithm 2, end to end.

checkpoint → read the packet's probes and anchors through the student → judge the map on
held-out anchors → fit the concept memory on the composite loss → verify (the anchor alignment
against its floor, transfer on the packet's verification probes with a statistical gate,
held-in on a probe set no packet carries, safety) → accept, or roll back bit-exactly.

The student's weights are frozen and never trained, so the checkpoint is a hash plus an
in-memory copy of its state: after training the hash is taken again, and on any failure the
copy is loaded back and the hash re-checked. Files on disk are only ever read; the adapter
directory is written in one atomic swap, and only when verification passes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from m2kt import __version__, distributed
from m2kt.adapter_files import save_adapter_dir
from m2kt.align.quality import anchor_alignment
from m2kt.concepts.probing import read_probes
from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.ingest.fit import FitSettings, fit_memory
from m2kt.ingest.loss import LossWeights
from m2kt.ingest.memory import ConceptMemory
from m2kt.ingest.student import read_student
from m2kt.ingest.verify import (
    Check,
    Gate,
    Margins,
    Verdict,
    alignment_check,
    held_in_check,
    safety_check,
    screen_check,
    transfer_check,
    zero_shot_check,
)
from m2kt.models.fingerprint import weight_sha256
from m2kt.models.view import ModelView
from m2kt.packet import Packet
from m2kt.progress import StageProgress, quiet
from m2kt.report.records import INGESTION_FILE as REPORT_FILE
from m2kt.safety.descriptions import default_unsafe_descriptions, read_descriptions
from m2kt.safety.sides import screen_for_ingestion

HELD_IN = Path(__file__).with_name("held_in.yaml")  # the shipped held-in set (speech acts)


@dataclass(frozen=True)
class IngestSettings:
    weights: LossWeights = field(default_factory=LossWeights)
    fit: FitSettings = field(default_factory=FitSettings)
    margins: Margins = field(default_factory=Margins)
    gate: Gate = field(default_factory=Gate)
    layer: int = -1
    alignment_floor: float = 0.2  # held-out anchor R² below which the map is refused
    held_in: str | None = None  # a spec of the student's own skill; default: HELD_IN
    unsafe: str | None = None  # a file of unsafe-concept descriptions; default: shipped list
    screen: bool = (
        True  # the auditor drops concepts it flags, and the screen checks the slots after
    )
    batch_size: int = 16
    truncate: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Ingestion:
    """The outcome: an accepted memory with its report, or a rollback with its reasons."""

    accepted: bool
    memory: ConceptMemory | None
    verdict: Verdict
    report: dict[str, Any]

    def save(self, out_dir: str | Path) -> Path:
        """Write the adapter directory atomically (config, safetensors weights, report)."""
        import json

        if not self.accepted or self.memory is None:
            raise UsageError("a rolled-back ingestion has no adapter to save")
        out = Path(out_dir)
        config = self.memory.config.to_dict() | {"student": self.report["student"]}
        report = json.dumps(self.report, indent=2, sort_keys=True).encode()
        save_adapter_dir(out, config, self.memory.tensors(), {REPORT_FILE: report})
        return out


def ingest(
    view: ModelView,
    packet: Packet,
    settings: IngestSettings | None = None,
    progress: StageProgress | None = None,
) -> Ingestion:
    settings = settings or IngestSettings()
    progress = progress or quiet
    started = time.perf_counter()
    model = view.model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    checkpoint = {k: v.detach().clone() for k, v in model.state_dict().items()}
    counted = view.reads.copy()
    hash_before = weight_sha256(model)

    progress("safety screen", 0, 1)
    screen, audit, working = screen_for_ingestion(
        view, packet, settings.layer, settings.unsafe, settings.batch_size, settings.screen
    )
    progress("safety screen", 1, 1)
    # Texts the student read for the screen: its training texts, and the packet's probes.
    screened = audit.inputs_read if audit else 0
    if audit is None and screen is not None:
        screened = int(screen.calibration["texts_read"])
    audited = {f.name: f.score for f in audit.findings if not f.flagged} if audit else None
    dropped = (
        [{"id": f.id, "name": f.name, "reason": f.reasons[0]} for f in audit.flagged]
        if audit
        else []
    )
    held_in = load_spec(settings.held_in or HELD_IN)
    held_texts = held_in.all_probes()
    _check_independent(held_texts, packet, settings.held_in or "the shipped held-in set")
    reading = read_student(
        view,
        working,
        layer=settings.layer,
        seed=settings.fit.seed,
        batch_size=settings.batch_size,
        truncate=settings.truncate,
        progress=lambda d, t: progress("read packet probes", d, t),
    )
    held_labels = torch.tensor(
        [k for k, c in enumerate(held_in.concepts) for _ in c.probes], dtype=torch.long
    )
    unsafe_texts = (
        read_descriptions(settings.unsafe) if settings.unsafe else default_unsafe_descriptions()
    )
    extra = (
        read_probes(
            view,
            held_texts + unsafe_texts,
            [reading.layer],
            poolings=[reading.pooling],
            batch_size=settings.batch_size,
            truncate=True,
            progress=lambda d, t: progress("read held-in and safety probes", d, t),
        )
        .states[(reading.pooling, reading.layer)]
        .float()
    )
    held_states, unsafe_states = extra[: len(held_texts)], extra[len(held_texts) :]
    targets = reading.targets
    targets = type(targets)(**(targets.__dict__ | {"unsafe": unsafe_states}))

    fit = settings.fit
    if reading.alignment is not None:  # the ridge the held-out anchors preferred
        ridge = reading.alignment.ridge
        if fit.slots == "teacher" and targets.anchor_student is not None:
            assert targets.anchor_teacher is not None  # ψ runs the other way: its own choice
            ridge = anchor_alignment(
                targets.anchor_student, targets.anchor_teacher, seed=fit.seed
            ).ridge
        fit = replace(fit, ridge=ridge)
    result = fit_memory(reading.concepts, targets, settings.weights, fit, progress=progress)
    memory = result.memory
    m = settings.margins
    verdict = Verdict(
        [
            transfer_check(
                memory,
                reading.heldout_states,
                reading.heldout_labels,
                targets.student_anchors,
                m.transfer,
                settings.gate,
            ),
            zero_shot_check(
                memory,
                reading.heldout_states,
                reading.heldout_labels,
                reading.zero_shot,
                m.transfer,
                settings.gate,
            ),
            held_in_check(memory, held_states, held_labels, m.held_in),
            safety_check(memory, held_states, unsafe_states, m.safety),
        ]
        + ([screen_check(memory, held_states, screen, m.safety, audited)] if screen else [])
        + (
            [alignment_check(reading.alignment, settings.alignment_floor)]
            if reading.alignment
            else []
        )
    )
    hash_after = weight_sha256(model)
    if hash_after != hash_before:  # cannot happen with frozen weights; checked, not assumed
        verdict.checks.append(
            Check("weights", 0.0, 1.0, False, "the student's weights changed during ingestion")
        )
    accepted = verdict.passed
    if not accepted:
        model.load_state_dict(checkpoint)
        hash_after = weight_sha256(model)
        if hash_after != hash_before:
            raise RuntimeError("rollback failed to restore the student's weights")
    transfer = verdict.checks[0].statistics or {}
    read = _summed_reads(view.reads_since(counted))
    report = {
        "m2kt_version": __version__,
        "accepted": accepted,
        # verified: the gate could judge the transfer; unverifiable: too few probes, refused;
        # unverified: too few probes, accepted because the caller asked for it
        "verification": {
            "unverified": "unverified",
            "refused: too few probes": "unverifiable",
        }.get(transfer.get("decision", ""), "verified"),
        "packet": {
            "digest": packet.digest,
            "signer": packet.signer.fingerprint if packet.signer else None,
            "parents": list(packet.manifest.provenance.parents),
            "teacher": [r.model_dump(mode="json") for r in packet.manifest.provenance.models],
        },
        "student": {
            "id": view.name,
            "architecture": view.architecture,
            "weight_sha256": hash_before,
            "weight_sha256_after": hash_after,
            "layer": reading.layer,
            "pooling": reading.pooling,
        },
        "inputs": {
            "teacher": packet.manifest.provenance.measurements.get(
                "teacher_forward_inputs", sum(packet.manifest.provenance.inputs_seen.values())
            ),
            "student": sum(read.values()),
            "student_task": read["task"],
            "student_anchors": read["anchor"],
            "student_probes": read["probe"],
            "student_training": reading.inputs_read,
            "student_safety_screen": screened,
        },
        "alignment": reading.alignment.as_dict() if reading.alignment else None,
        "trainable_parameters": result.trainable_parameters,
        "settings": settings.as_dict() | {"fit": fit.as_dict()},
        "checks": [c.as_dict() for c in verdict.checks],
        "final_loss": {t: v[-1] for t, v in result.history.items()},
        "loss_history": result.history,
        "safety_screen": audit.as_dict() if audit else None,
        # what the adapter cannot answer: `m2kt evaluate` names these wherever it is used
        "dropped_concepts": dropped,
        "notes": reading.notes
        + [f"the safety auditor dropped {d['name']!r}: {d['reason']}" for d in dropped],
        "seconds": time.perf_counter() - started,
    }
    return Ingestion(accepted, memory if accepted else None, verdict, report)


def _check_independent(held_texts: list[str], packet: Packet, source: str | Path) -> None:
    """The held-in set measures the student's own skill; a packet's text in it would not."""
    m = packet.manifest
    carried = {t for c in m.concepts or [] for t in [*c.probes, *c.verification]}
    carried |= {t.probe for t in m.traces or []}
    shared = [t for t in held_texts if t in carried]
    if shared:
        raise UsageError(
            f"the held-in set {source} shares {len(shared)} texts with the packet (first: "
            f"{shared[0][:60]!r}), so it would not measure the student's own skill",
            "pass --held-in with a spec whose probes the packet does not carry",
        )


def _summed_reads(reads: dict[str, int]) -> dict[str, int]:
    """Texts the student read by purpose, summed over the processes that shared the reading."""
    names = list(reads)
    total = distributed.all_sum(torch.tensor([float(reads[n]) for n in names], dtype=torch.float64))
    return {n: int(total[i]) for i, n in enumerate(names)}
