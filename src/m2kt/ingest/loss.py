"""The composite ingestion loss: α·L_geo + β·L_struct + γ·L_reason + κ·L_kl + λ·L_safety.

Every term compares unit vectors, so a weight means the same for every pair of models:
- L_geo: ‖φ(c_k) − c^S_k‖² over concepts: the aligned teacher concept lands on the student's
  own representation of that concept (read from the concept's probes). A memory that reads
  the student in the teacher's space (`teacher` slots, map ψ) compares ‖ψ(c^S_k) − c_k‖² there,
  and L_reason likewise ψ of the student's adapted state against the teacher's state.
- L_struct: the concepts' relational structure. Each concept attends over the others with a
  softmax of cosine similarities; the teacher's pattern (in its own space) and the student's
  (over its slots) must agree in L1. A frozen student's token attention cannot move under a
  pooled adapter, so structure is matched where the adapter can change it (docs/ingest.md).
- L_reason: hidden-state traces: on every probe the teacher read, the student's adapted state
  must point where φ maps the teacher's state.
- L_kl: KL from the teacher's concept distribution on those probes (its scaled cosines to its
  own concepts, which the packet determines) to the student's.
- L_safety: concept slots and adapted probe states may not come closer than a margin to the
  student's representations of unsafe concepts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.ingest.memory import ConceptMemory

TERMS = ("geo", "struct", "reason", "kl", "safety")


@dataclass(frozen=True)
class LossWeights:
    """Weight of each term; 0 switches a term off (an ablation)."""

    geo: float = 1.0
    struct: float = 1.0
    reason: float = 1.0
    kl: float = 1.0
    safety: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value >= 0 or value == float("inf"):
                raise UsageError(f"loss weight {f.name} must be a finite number ≥ 0, got {value}")

    def without(self, term: str) -> LossWeights:
        if term not in TERMS:
            raise UsageError(f"unknown loss term {term!r}", f"choose from {', '.join(TERMS)}")
        return LossWeights(**(asdict(self) | {term: 0.0}))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Targets:
    """What the loss compares against, all fixed during training.

    `teacher_states` [N, d_T] and `student_states` [N, d_S] are paired: the same N probes read
    by each model. `teacher_concepts` [K, d_T] and `student_anchors` [K, d_S] are paired by
    concept. `unsafe` [M, d_S] holds the student's states of unsafe-concept descriptions.
    `anchor_teacher` [A, d_T] and `anchor_student` [A, d_S] are task-agnostic texts read by
    both: they fit the alignment's closed form and take no part in the loss.
    """

    student_anchors: torch.Tensor
    student_states: torch.Tensor
    teacher_concepts: torch.Tensor | None = None
    teacher_states: torch.Tensor | None = None
    teacher_probs: torch.Tensor | None = None  # [N, K] the teacher's outputs on the probes
    probe_labels: torch.Tensor | None = None  # [N] labels, for supervised tuning only
    unsafe: torch.Tensor | None = None
    anchor_teacher: torch.Tensor | None = None
    anchor_student: torch.Tensor | None = None
    teacher_scale: float = 20.0  # inverse temperature of `teacher_probs` (the packet's)
    safety_margin: float = 0.5
    struct_temperature: float = 0.1

    @property
    def probe_count(self) -> int:
        return len(self.student_states)

    def subset(self, index: torch.Tensor) -> Targets:
        """The same targets restricted to the probes `index` (for held-out step selection)."""
        per_probe = ("student_states", "teacher_states", "teacher_probs", "probe_labels")
        picked: dict[str, Any] = {
            name: (None if getattr(self, name) is None else getattr(self, name)[index])
            for name in per_probe
        }
        return replace(self, **picked)

    def probe_answers(self) -> torch.Tensor | None:
        """What the student should answer on each probe: labels if given, else the teacher's."""
        if self.probe_labels is not None:
            return self.probe_labels
        return None if self.teacher_probs is None else self.teacher_probs.argmax(-1)


def concept_probabilities(
    states: torch.Tensor, concepts: torch.Tensor, scale: float
) -> torch.Tensor:
    """A model's distribution over concepts [N, K]: softmax of scaled cosines of its states.

    For a teacher whose head is a cosine classifier over its concept vectors (a fine-tuned
    class-name head), this is exactly its output, so a packet with states and concepts carries
    the teacher's predictions on its probes without a separate logits table.
    """
    cosines = F.normalize(states, dim=-1) @ F.normalize(concepts, dim=-1).T
    return torch.softmax(scale * cosines, dim=-1)


def loss_terms(
    memory: ConceptMemory, targets: Targets, weights: LossWeights, ce_weight: float = 0.0
) -> dict[str, torch.Tensor]:
    """Each switched-on term (unweighted) and `total`, the weighted sum.

    `ce_weight` adds cross-entropy on `targets.probe_labels`: supervised tuning of the same
    adapter, the benchmark's baseline, not part of M2KT.
    """
    terms: dict[str, torch.Tensor] = {}
    aligned = memory.cal is not None
    logits = memory(targets.student_states)
    if weights.geo and aligned:
        if memory.in_teacher_space:  # the student's anchors land on the teacher's concepts
            assert memory.cal is not None and targets.teacher_concepts is not None
            mapped = F.normalize(memory.cal(memory.anchors), dim=-1)
            wanted = F.normalize(targets.teacher_concepts, dim=-1)
        else:
            mapped, wanted = F.normalize(memory.aligned_concepts(), dim=-1), targets.student_anchors
        terms["geo"] = (mapped - wanted).pow(2).sum(-1).mean()
    if weights.struct and targets.teacher_concepts is not None:
        terms["struct"] = _struct(memory.slots(), targets)
    if weights.reason and aligned and targets.teacher_states is not None:
        if memory.in_teacher_space:  # compared in the teacher's space
            mapped = F.normalize(targets.teacher_states, dim=-1)
            adapted = F.normalize(memory.in_teacher(targets.student_states), dim=-1)
        else:
            mapped = F.normalize(memory.cal(targets.teacher_states), dim=-1)  # type: ignore[misc]
            adapted = F.normalize(memory.adapt(targets.student_states), dim=-1)
        terms["reason"] = (adapted - mapped).pow(2).sum(-1).mean()
    if weights.kl and targets.teacher_probs is not None:
        terms["kl"] = F.kl_div(
            F.log_softmax(logits, -1), targets.teacher_probs, reduction="batchmean"
        )
    if weights.safety and targets.unsafe is not None and len(targets.unsafe):
        terms["safety"] = _safety(memory, targets)
    if ce_weight and targets.probe_labels is not None:
        terms["ce"] = F.cross_entropy(logits, targets.probe_labels)
    weight_of = weights.as_dict() | {"ce": ce_weight}
    total = sum((weight_of[name] * value for name, value in terms.items()), torch.tensor(0.0))
    terms["total"] = total
    return terms


def _struct(slots: torch.Tensor, targets: Targets) -> torch.Tensor:
    assert targets.teacher_concepts is not None
    teacher = F.normalize(targets.teacher_concepts, dim=-1)
    t = targets.struct_temperature
    return (_relations(teacher, t) - _relations(slots, t)).abs().sum(-1).mean()


def _relations(unit: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each concept's attention over the other concepts [K, K] (zero on the diagonal)."""
    scores = unit @ unit.T / temperature
    eye = torch.eye(len(unit), dtype=torch.bool)
    return torch.softmax(scores.masked_fill(eye, float("-inf")), dim=-1)


def _safety(memory: ConceptMemory, targets: Targets) -> torch.Tensor:
    assert targets.unsafe is not None
    unsafe = F.normalize(targets.unsafe, dim=-1)
    adapted = F.normalize(memory.adapt(targets.student_states), dim=-1)
    points = torch.cat([memory.slots(), adapted])
    excess = (points @ unsafe.T - targets.safety_margin).clamp(min=0)
    return excess.pow(2).sum(-1).mean()
