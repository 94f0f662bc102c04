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

import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from m2kt.bench.patch_benchmark import EncodedModel
from m2kt.ingest.fit import FitSettings, fit_memory
from m2kt.ingest.loss import TERMS, LossWeights, Targets, concept_probabilities
from m2kt.ingest.memory import SlotSource
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


def budget_order(setting: LatentSetting, seed: int) -> list[int]:
    """A seeded order of the training inputs; budget B takes its first B (nested budgets)."""
    order = list(range(len(setting.task.train)))
    random.Random(seed).shuffle(order)
    return order


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
    fit = FitSettings(**(settings.as_dict() | {"seed": seed}))

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

    runs: dict[str, tuple[Targets, LossWeights, SlotSource, float]] = {
        "packet": (packet_targets, LossWeights(), "aligned", 0.0),
        "logit KD": (kd_targets, _only("kl"), "free", 0.0),
        "supervised": (sft_targets, _only(), "free", 1.0),
    }
    if ablations:
        for term in TERMS:
            if term != "safety":  # no unsafe anchors in this benchmark: the term is always 0
                runs[f"packet − {term}"] = (
                    packet_targets,
                    LossWeights().without(term),
                    "aligned",
                    0.0,
                )
    inputs = {
        "packet": {"teacher": p + b, "student": p + b},
        "logit KD": {"teacher": b, "student": p + b},
        "supervised": {"teacher": 0, "student": p + b},
    }
    x_eval = s.student.embeddings[split]
    y_eval = getattr(s.task, split).labels
    rows: dict[str, dict[str, Any]] = {}
    for name, (targets, weights, slots, ce) in runs.items():
        started = time.perf_counter()
        result = fit_memory(
            s.task.class_names,
            targets,
            weights,
            fit,
            slots=slots,
            ce_weight=ce,  # type: ignore[arg-type]
        )
        with torch.no_grad():
            accuracy = float((result.memory(x_eval).argmax(-1) == y_eval).float().mean())
        seen = inputs[name.split(" − ")[0]]
        rows[name] = {
            "accuracy": accuracy,
            "inputs": seen,
            "inputs_total": sum(seen.values()),
            "labels": b if name == "supervised" else 0,
            "trained_params": result.trainable_parameters,
            "seconds": time.perf_counter() - started,
            "final_loss": {t: v[-1] for t, v in result.history.items()},
            "selection": result.selection,
        }
    return rows


def _only(term: str | None = None) -> LossWeights:
    zero = {t: 0.0 for t in TERMS}
    return LossWeights(**(zero | ({term: 1.0} if term else {})))
