"""Step 2 of ingestion: read the packet's probes through the student.

The student reads each concept's probes (its own anchor for the concept is their mean state)
and the probe of every trace (paired with the teacher's state at the concepts' layer, or at
each worked step). Nothing else: the student never sees a data set during ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.extract.concepts import Group
from m2kt.extract.probing import read_probes
from m2kt.extract.worth import holdout_split
from m2kt.ingest.loss import Targets, concept_probabilities
from m2kt.models.view import ModelView, Pooling
from m2kt.packet import Packet
from m2kt.packet.manifest import CONCEPTS_TENSOR, TRACE_PREFIX
from m2kt.progress import Progress

DEFAULT_TEACHER_SCALE = 20.0


@dataclass(frozen=True)
class StudentReading:
    """What ingestion trains on and verifies against, all from the packet's own probes."""

    concepts: tuple[str, ...]
    targets: Targets
    heldout_states: torch.Tensor  # [H, d_S] held-out concept probes (transfer probes)
    heldout_labels: torch.Tensor  # [H] the concept each was listed under
    layer: int
    pooling: Pooling
    inputs_read: int
    notes: list[str] = field(default_factory=list)


def read_student(
    view: ModelView,
    packet: Packet,
    *,
    layer: int = -1,
    seed: int = 0,
    batch_size: int = 16,
    truncate: bool = False,
    progress: Progress | None = None,
) -> StudentReading:
    m = packet.manifest
    if m.kind != "knowledge" or not m.concepts:
        raise UsageError(
            f"packet {packet.digest[:12]} is a {m.kind} packet without concepts",
            "ingest knowledge packets made by `m2kt extract`; apply patches with `m2kt patch`",
        )
    concepts = packet.tensors[CONCEPTS_TENSOR].float()
    if not torch.isfinite(concepts).all():
        raise UsageError("the packet's concept embeddings are not all finite")
    (resolved,) = view.check_layers([layer])
    notes: list[str] = []

    # Concept probes: a third held out per concept for verification, as at extraction.
    texts: list[str] = []
    groups = []
    for entry in m.concepts:
        groups.append(
            Group(entry.name, entry.id, list(range(len(texts), len(texts) + len(entry.probes))))
        )
        texts += entry.probes
    if any(not g.probes for g in groups):
        empty = [g.name for g in groups if not g.probes][:3]
        raise UsageError(f"concepts without probes cannot be anchored in the student: {empty}")
    split = holdout_split(groups, seed)

    # Trace probes, paired with the teacher's state at the concepts' layer or worked step;
    # held-out concept probes stay out, so that the transfer check scores unseen probes.
    concept_layer = m.concepts[0].layer
    heldout_texts = {texts[i] for i in split.heldout}
    trace_texts: list[str] = []
    trace_states: list[torch.Tensor] = []
    for trace in m.traces or []:
        if trace.probe in heldout_texts:
            continue
        states = packet.tensors[TRACE_PREFIX + trace.id].float()
        if states.shape[1] != concepts.shape[1]:
            raise UsageError(
                f"trace {trace.id} is {states.shape[1]} wide, the concepts {concepts.shape[1]}"
            )
        if trace.steps[0].startswith("layer "):
            layer_step = f"layer {concept_layer}"
            row = (
                trace.steps.index(layer_step) if layer_step in trace.steps else len(trace.steps) - 1
            )
            trace_texts.append(trace.probe)
            trace_states.append(states[row : row + 1])
        else:
            steps = [s.split(": ", 1)[-1] for s in trace.steps]
            trace_texts += [" ".join([trace.probe, *steps[: i + 1]]) for i in range(len(steps))]
            trace_states.append(states)

    wanted = texts + trace_texts
    unique = list(dict.fromkeys(wanted))  # a text listed twice is read once
    readings = read_probes(
        view,
        unique,
        [resolved],
        poolings=[view.pooling],
        batch_size=batch_size,
        truncate=truncate,
        progress=progress,
    )
    position = {text: i for i, text in enumerate(unique)}
    read = readings.states[(view.pooling, resolved)].float()
    states = read[[position[t] for t in wanted]]
    probe_states, student_trace = states[: len(texts)], states[len(texts) :]

    anchors = torch.stack(
        [F.normalize(probe_states[g.probes], dim=-1).mean(0) for g in split.train]
    )
    train_index = [i for g in split.train for i in g.probes]
    teacher_states = torch.cat(trace_states) if trace_states else None
    scale = m.provenance.settings.get("concept_logit_scale", DEFAULT_TEACHER_SCALE)
    if not isinstance(scale, (int, float)) or not 0 < scale < 1e4:
        raise UsageError(f"the packet's concept_logit_scale {scale!r} is not a positive number")
    if teacher_states is None:
        notes.append("the packet carries no traces: L_reason and L_kl have nothing to compare")
    targets = Targets(
        student_anchors=F.normalize(anchors, dim=-1),
        student_states=student_trace if teacher_states is not None else probe_states[train_index],
        teacher_concepts=concepts,
        teacher_states=teacher_states,
        teacher_probs=(
            concept_probabilities(teacher_states, concepts, float(scale))
            if teacher_states is not None
            else None
        ),
    )
    return StudentReading(
        concepts=tuple(c.name for c in m.concepts),
        targets=targets,
        heldout_states=probe_states[split.heldout],
        heldout_labels=torch.tensor(split.heldout_labels, dtype=torch.long),
        layer=resolved,
        pooling=view.pooling,
        inputs_read=len(unique),
        notes=notes,
    )
