"""Step 2 of ingestion: read the packet's probes through the student.

The student reads each concept's extraction probes (its own anchor for the concept is their
mean state, pulled toward its reading of the name: m2kt.ingest.prior), the packet's anchor
texts, the probe of every trace, the packet's verification probes (held out at extraction, so
the transfer check scores texts nothing was fitted to) and the concept names alone (its
zero-shot reading: a baseline the packet must beat). Each text is read once and counted by the
view under its purpose: task inputs the packet carries as probes under "task", anchor texts
under "anchor", the rest under "probe". The teacher's states pair with the student's: part P
gives one per extraction probe, part N one per anchor, a trace one per worked step or the one
at the concepts' layer. The anchor pairs also judge the map before anything is trained
(`m2kt.align.quality`). Nothing else: the student never sees a data set here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from m2kt.align.quality import AnchorAlignment, anchor_alignment
from m2kt.concepts.probing import read_probes
from m2kt.concepts.readout import packet_readout
from m2kt.errors import UsageError
from m2kt.ingest.loss import Targets, concept_probabilities
from m2kt.ingest.prior import NamePrior, blend_with_names
from m2kt.models.view import ModelView, Pooling, Purpose
from m2kt.packet import Packet, anchor_states, concept_probes
from m2kt.packet.manifest import CONCEPTS_TENSOR, TRACE_PREFIX
from m2kt.progress import Progress

DEFAULT_TEACHER_SCALE = 20.0  # part P's logit_scale, for a packet made without probe states


@dataclass(frozen=True)
class StudentReading:
    """What ingestion trains on and verifies against, all from the packet's own probes."""

    concepts: tuple[str, ...]
    targets: Targets
    heldout_states: torch.Tensor  # [V, d_S] the packet's verification probes
    heldout_labels: torch.Tensor  # [V] the concept each was listed under
    zero_shot: torch.Tensor  # [K, d_S] unit: the student's reading of the concept names alone
    name_prior: NamePrior  # how far its own anchors lean on the names (m2kt.ingest.prior)
    layer: int
    pooling: Pooling
    inputs_read: int
    anchor_inputs: int = 0  # of inputs_read, the anchor texts
    alignment: AnchorAlignment | None = None  # the map judged on held-out anchors
    notes: list[str] = field(default_factory=list)
    pair_texts: tuple[str, ...] = ()  # the text of each row of targets.student_states


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
    probes = concept_probes(packet)
    empty = [c.name for c in m.concepts if not c.probes][:3]
    if empty:
        raise UsageError(f"concepts without probes cannot be anchored in the student: {empty}")

    # Pairs of (student text, teacher state): part P's extraction probes, then the traces, at
    # the concepts' layer or at each worked step. Traces on a verification probe stay out.
    pair_texts: list[str] = list(probes.texts) if probes.states is not None else []
    pair_states: list[torch.Tensor] = [probes.states] if probes.states is not None else []
    carried = anchor_states(packet)
    concept_layer = m.concepts[0].layer
    held = set(probes.verification_texts)
    for trace in m.traces or []:
        if trace.probe in held:
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
            pair_texts.append(trace.probe)
            pair_states.append(states[row : row + 1])
        else:
            steps = [s.split(": ", 1)[-1] for s in trace.steps]
            pair_texts += [" ".join([trace.probe, *steps[: i + 1]]) for i in range(len(steps))]
            pair_states.append(states)

    anchor_texts = carried[0] if carried is not None else []
    names = [c.name for c in m.concepts]
    wanted = probes.texts + probes.verification_texts + anchor_texts + pair_texts + names
    read = _read_by_purpose(
        view,
        wanted,
        set(probes.task_texts),
        set(anchor_texts),
        resolved,
        batch_size,
        truncate,
        progress,
    )
    states = torch.stack([read[t] for t in wanted])
    extraction, verification, student_anchor_states, student_pairs, name_states = torch.split(
        states,
        [
            len(probes.texts),
            len(probes.verification_texts),
            len(anchor_texts),
            len(pair_texts),
            len(names),
        ],
    )

    # The student's own anchor of a concept: its spec probes, not the task inputs the teacher
    # labelled (those carry the teacher's answers; "before" must not see them).
    # Pulled toward its reading of the concept's name as far as leave-one-out on them says.
    own = [[i for i in probes.indices(k) if not probes.task[i]] for k in range(len(m.concepts))]
    rows = [i for k, found in enumerate(own) for i in (found or probes.indices(k))]
    labels = torch.tensor([k for k, found in enumerate(own) for _ in (found or probes.indices(k))])
    prior = blend_with_names(extraction[rows], labels, name_states)
    teacher_states = torch.cat(pair_states) if pair_states else None
    alignment = None
    if carried is not None:
        alignment = anchor_alignment(carried[1], student_anchor_states, seed=seed)
    scale = probes.logit_scale or DEFAULT_TEACHER_SCALE
    if teacher_states is None:
        notes.append(
            "the packet carries no probe states or traces: L_reason and L_kl have nothing to "
            "compare"
        )
    targets = Targets(
        student_anchors=prior.anchors,
        student_states=student_pairs if teacher_states is not None else extraction,
        teacher_concepts=concepts,
        teacher_states=teacher_states,
        teacher_probs=_teacher_probabilities(packet, teacher_states, concepts, scale),
        anchor_teacher=carried[1] if carried is not None else None,
        anchor_student=student_anchor_states if carried is not None else None,
        teacher_scale=scale,
    )
    return StudentReading(
        concepts=tuple(c.name for c in m.concepts),
        targets=targets,
        heldout_states=verification,
        heldout_labels=probes.verification_labels,
        layer=resolved,
        pooling=view.pooling,
        zero_shot=F.normalize(name_states, dim=-1),
        name_prior=prior,
        inputs_read=len(read),
        anchor_inputs=len(carried[0]) if carried is not None else 0,
        alignment=alignment,
        notes=notes,
        pair_texts=tuple(pair_texts if teacher_states is not None else probes.texts),
    )


def _teacher_probabilities(
    packet: Packet, states: torch.Tensor | None, concepts: torch.Tensor, scale: float
) -> torch.Tensor | None:
    """The teacher's concept distribution on its carried states [N, d_T]: the softmax of part
    D's linear logits where the packet has a readout, else of scaled cosines with the concepts.

    A trace state read at another layer than the concepts' is scored the same way; the readout,
    like the cosine, is only a guide there.
    """
    if states is None:
        return None
    readout = packet_readout(packet)
    if readout.kind == "centroid":
        return concept_probabilities(states, concepts, scale)
    return torch.softmax(readout.scores(states, concepts), dim=-1)


def _read_by_purpose(
    view: ModelView,
    texts: list[str],
    task: set[str],
    anchors: set[str],
    layer: int,
    batch_size: int,
    truncate: bool,
    progress: Progress | None,
) -> dict[str, torch.Tensor]:
    """Each distinct text's state, read once, under the purpose the view counts it for."""
    unique = list(dict.fromkeys(texts))
    groups: dict[Purpose, list[str]] = {"task": [], "anchor": [], "probe": []}
    for text in unique:
        purpose: Purpose = "task" if text in task else "anchor" if text in anchors else "probe"
        groups[purpose].append(text)
    found: dict[str, torch.Tensor] = {}
    for purpose, group in groups.items():
        if not group:
            continue
        with view.reading(purpose):
            readings = read_probes(
                view,
                group,
                [layer],
                poolings=[view.pooling],
                batch_size=batch_size,
                truncate=truncate,
                progress=progress,
            )
        states = readings.states[(view.pooling, layer)].float()
        found |= dict(zip(group, states, strict=True))
    return found
