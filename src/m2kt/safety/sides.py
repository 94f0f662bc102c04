"""The auditor on each side of a transfer: the teacher's own space at export, the student's at
ingestion (after alignment). Both read the screen's texts with the model being screened."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from m2kt.align.cal import CALConfig, ConceptAlignmentLayer
from m2kt.extract.probing import read_probes
from m2kt.models.view import ModelView, Pooling
from m2kt.packet import Packet
from m2kt.packet.manifest import CONCEPTS_TENSOR, TRACE_PREFIX
from m2kt.safety.audit import Audit, audit_concepts, probe_consistency
from m2kt.safety.screen import ReadTexts, SafetyScreen

AUDIT_RIDGE = 0.1  # the ingestion CAL's default ridge: the auditor sees what ingestion would


def model_reader(view: ModelView, layer: int, pooling: Pooling, batch_size: int = 16) -> ReadTexts:
    """Texts → the model's pooled states at `layer` (already resolved), read in batches."""

    def read(texts: list[str]) -> torch.Tensor:
        readings = read_probes(
            view, texts, [layer], poolings=[pooling], batch_size=batch_size, truncate=True
        )
        return readings.states[(pooling, layer)].float()

    return read


def audit_teacher(
    screen: SafetyScreen,
    ids: list[str],
    names: list[str],
    embeddings: torch.Tensor,
    probe_means: torch.Tensor | None = None,
) -> Audit:
    """Export-time audit in the teacher's own space; `probe_means` [K, d] for consistency."""
    consistency = None
    if probe_means is not None:
        consistency = (
            F.normalize(embeddings.float(), dim=-1) @ F.normalize(probe_means.float(), dim=-1).T
        )
    return audit_concepts(screen, ids, names, {"concept": embeddings}, consistency, space="teacher")


def align_for_audit(
    teacher: torch.Tensor, student: torch.Tensor, concepts: torch.Tensor
) -> torch.Tensor:
    """φ(c_k): a linear CAL fitted in closed form on paired states [N, d_T], [N, d_S]."""
    config = CALConfig(kind="linear", d_in=teacher.shape[1], d_out=student.shape[1])
    cal = ConceptAlignmentLayer.fit(
        config,
        F.normalize(teacher.float(), dim=-1),
        F.normalize(student.float(), dim=-1),
        ridge=AUDIT_RIDGE,
    )
    with torch.no_grad():
        return cal(F.normalize(concepts.float(), dim=-1))


def audit_student(screen: SafetyScreen, packet: Packet, read: ReadTexts) -> Audit:
    """Ingestion-time audit in the student's space, from the packet's own probes.

    The student reads every concept probe; its own reading of a concept (the mean of its
    probes' states) is screened, and so is φ(c_k), the teacher's vector aligned by a CAL fitted
    on the probe states the packet carries (or on concept/anchor pairs when it carries none).
    """
    m = packet.manifest
    assert m.concepts is not None
    texts = list(dict.fromkeys(p for c in m.concepts for p in c.probes))
    position = {t: i for i, t in enumerate(texts)}
    states = read(texts)
    anchors = torch.stack(
        [F.normalize(states[[position[p] for p in c.probes]], dim=-1).mean(0) for c in m.concepts]
    )
    concepts = packet.tensors[CONCEPTS_TENSOR]
    pairs = [
        (packet.tensors[TRACE_PREFIX + t.id][0], states[position[t.probe]])
        for t in m.traces or []
        if len(t.steps) == 1 and t.probe in position
    ]
    if len(pairs) >= 2:
        teacher, student = (torch.stack(side) for side in zip(*pairs, strict=True))
    else:
        teacher, student = concepts, anchors
    aligned = align_for_audit(teacher, student, concepts)
    return audit_concepts(
        screen,
        [c.id for c in m.concepts],
        [c.name for c in m.concepts],
        {"aligned concept": aligned, "student's reading of its probes": anchors},
        probe_consistency(packet),
    )
