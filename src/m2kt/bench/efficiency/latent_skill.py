"""Data efficiency in the latent-skill regime: a fine-tuned teacher, a frozen pretrained student.

The teacher is a text encoder whose class-name head was tuned on the task's labels (the skill
someone paid for); the student is another encoder that already represents the topics and
classifies them zero-shot from label prompts. At each budget B (unlabelled training inputs),
every method trains the same concept-memory adapter on the student's pooled states:

- packet: M2KT. The teacher exports its tuned class vectors as concepts (their probes: the
  label prompts), with its states on the prompts and on the B inputs as traces; the student
  reads the same texts, fits the alignment on them in closed form and refines the adapter on
  the composite loss (each ablation drops one term);
- logit KD: the teacher's output distribution on the B inputs, KL only;
- supervised: the B inputs with their labels, cross-entropy only (labels are not free).

Inputs consumed count every text any model read during the transfer: both models read the
label prompts (the student's starting anchors come from them in every method) and the B inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from m2kt.bench.efficiency.methods import method_runs, score_methods
from m2kt.bench.patch.seed import EncodedModel
from m2kt.ingest.fit import FitSettings
from m2kt.ingest.loss import Targets, concept_probabilities
from m2kt.models.class_head import ClassNameHead, fine_tune_head
from m2kt.tasks import TextClassificationTask


@dataclass(frozen=True)
class LatentSetting:
    """A task with its teacher and student, encoded once for every seed and budget."""

    task: TextClassificationTask
    teacher: EncodedModel
    student: EncodedModel
    teacher_head: ClassNameHead  # tuned on the full training split: the teacher's skill
    student_head: ClassNameHead  # zero-shot, from label prompts
    teacher_prompts: torch.Tensor  # [K·T, d_T] the label prompts read by the teacher
    student_prompts: torch.Tensor  # [K·T, d_S]

    @property
    def prompt_count(self) -> int:
        return len(self.teacher_prompts)

    def accuracy(self, split: str, who: str) -> float:
        labels = getattr(self.task, split).labels
        if who == "teacher":
            logits = self.teacher_head.logits(self.teacher.embeddings[split])
        else:
            logits = self.student_head.logits(self.student.embeddings[split])
        return float((logits.argmax(-1) == labels).float().mean())


def prepare(
    task: TextClassificationTask, teacher: EncodedModel, student: EncodedModel
) -> LatentSetting:
    prompts = [t.format(c) for c in task.class_names for t in task.templates]
    teacher_zero = ClassNameHead.from_names(teacher.encoder, task.class_names, task.templates)
    teacher_head = fine_tune_head(teacher_zero, teacher.embeddings["train"], task.train.labels)
    return LatentSetting(
        task=task,
        teacher=teacher,
        student=student,
        teacher_head=teacher_head,
        student_head=ClassNameHead.from_names(student.encoder, task.class_names, task.templates),
        teacher_prompts=teacher.encoder.encode(prompts),
        student_prompts=student.encoder.encode(prompts),
    )


def run_budget(
    setting: LatentSetting,
    index: list[int],
    seed: int,
    settings: FitSettings,
    split: str = "test",
    ablations: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every method at one budget (the inputs `index`); scored on `split`."""
    s = setting
    b, p = len(index), s.prompt_count
    labels = s.task.train.labels[index]
    teacher_x = s.teacher.embeddings["train"][index]
    student_x = s.student.embeddings["train"][index]
    head = s.teacher_head

    # What the packet carries: concepts = tuned class vectors; traces = teacher states on the
    # prompts and the B inputs. The teacher's outputs follow from both (cosine head).
    teacher_states = torch.cat([s.teacher_prompts, teacher_x])
    student_states = torch.cat([s.student_prompts, student_x])
    teacher_probs = concept_probabilities(teacher_states, head.weights, head.scale)
    zero_shot = s.student_head.weights  # the student's own concepts: its label-prompt means
    packet_targets = Targets(
        student_anchors=zero_shot,
        student_states=student_states,
        teacher_concepts=head.weights,
        teacher_states=teacher_states,
        teacher_probs=teacher_probs,
    )
    kd_targets = Targets(
        student_anchors=zero_shot,
        student_states=student_x,
        teacher_probs=concept_probabilities(teacher_x, head.weights, head.scale),
    )
    sft_targets = Targets(student_anchors=zero_shot, student_states=student_x, probe_labels=labels)

    inputs = {
        "packet": {"teacher": p + b, "student": p + b},
        "logit KD": {"teacher": b, "student": p + b},
        "supervised": {"teacher": 0, "student": p + b},
    }
    return score_methods(
        s.task.class_names,
        method_runs(packet_targets, kd_targets, sft_targets, ablations),
        inputs,
        settings,
        seed,
        (s.student.embeddings[split], getattr(s.task, split).labels),
        labels_used=b,
    )
