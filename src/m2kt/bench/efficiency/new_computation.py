"""Data efficiency in the new-computation regime: a teacher that computes, a student that cannot.

The latent-skill regime asks a student to sharpen what it already represents. Here the skill is
a computation the frozen student was never asked for: a symbolic task (`m2kt.tasks.symbolic`,
e.g. (a + b + c) mod p). The teacher is a small transformer trained on the task's labels; the
student is a transformer of another shape (more, narrower layers, GELU instead of ReLU) trained
on another function of the same inputs (e.g. (a + b − c) mod p), so it knows the tokens but not
the answer. Both are frozen; one setting (task, teacher, student) is trained once per family and
shared by every seed and budget, and seeds vary the draw of the budget's inputs and the adapter.

At each budget B, every method trains the same concept memory (`m2kt.ingest.memory`) on what
the frozen student computes at the last token (its MLP activations in the last two blocks,
standardised on the training split): wide nonlinear features of the input from which a new
function is more nearly linear than from the narrow residual state the student's own head reads.

- packet: the teacher's concepts (its head's class vectors), its states on the B inputs as
  reasoning traces, and its answers on them (which follow from both); the alignment is fitted
  in closed form on the state pairs and the memory refined on the composite loss;
- logit KD: the teacher's output distribution on the B inputs, KL only;
- supervised: the B inputs with their labels, cross-entropy only.

Inputs consumed: the teacher and the student each read the B inputs once (the supervised
baseline: the student only). Nothing else is read: the packet holds no probes beyond them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch.nn import functional as F

from m2kt.bench.efficiency.blocks import BLOCKS, block_methods, run_block_methods
from m2kt.bench.efficiency.methods import method_runs, score_methods
from m2kt.concepts.geometry import centroids
from m2kt.errors import UsageError
from m2kt.ingest.blocks import BlockSettings
from m2kt.ingest.fit import FitSettings
from m2kt.ingest.loss import Targets, concept_probabilities
from m2kt.reproducible import one_thread
from m2kt.tasks.symbolic import FAMILIES, SymbolicSplit, SymbolicTask, symbolic_task
from m2kt.tasks.tiny_transformer import (
    TinyTransformer,
    TrainSettings,
    TransformerConfig,
    at_last,
    train_classifier,
)

SPLITS = ("train", "val", "test")


# The student's pretraining: another function of the same inputs, so it knows the tokens but
# has never been asked the task's question. Each returns (labels, number of classes).
def _modsum_other(task: SymbolicTask, split: SymbolicSplit) -> tuple[torch.Tensor, int]:
    p = task.options["p"]
    a, b, c = (torch.tensor([int(text.split()[i]) for text in split.texts]) for i in (0, 2, 4))
    return (a + b - c) % p, p


def _addition_other(task: SymbolicTask, split: SymbolicSplit) -> tuple[torch.Tensor, int]:
    pairs = [(int(t.split()[0]), int(t.split()[2])) for t in split.texts]
    return torch.tensor([abs(x - y) for x, y in pairs]), 10 ** task.options["digits"]


def _boolean_other(task: SymbolicTask, split: SymbolicSplit) -> tuple[torch.Tensor, int]:
    values = [_evaluate_swapped(text) for text in split.texts]
    return torch.tensor(values, dtype=torch.long), 2


def _binding_other(task: SymbolicTask, split: SymbolicSplit) -> tuple[torch.Tensor, int]:
    sums = [sum(int(t) for t in text.split() if t.isdigit()) % 10 for text in split.texts]
    return torch.tensor(sums), 10


OtherTask = Callable[[SymbolicTask, SymbolicSplit], tuple[torch.Tensor, int]]
OTHER_TASKS: dict[str, tuple[str, OtherTask]] = {
    "modsum": ("(a + b − c) mod p", _modsum_other),
    "addition": ("|x − y|", _addition_other),
    "boolean": ("the formula with and ↔ or swapped", _boolean_other),
    "binding": ("the sum of the program's digits mod 10", _binding_other),
}


def _evaluate_swapped(text: str) -> int:
    """A boolean problem's formula evaluated with `and` and `or` exchanged (1 or 0)."""
    assignment, formula = text.split(";")
    values = {}
    for part in assignment.split(","):
        name, value = part.split("=")
        values[name.strip()] = value.strip() == "1"
    tokens = formula.replace("(", " ( ").replace(")", " ) ").split()
    position = 0

    def expression() -> bool:
        nonlocal position
        value = unary()
        while position < len(tokens) and tokens[position] in ("and", "or"):
            op = tokens[position]
            position += 1
            right = unary()
            value = (value or right) if op == "and" else (value and right)
        return value

    def unary() -> bool:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "not":
            return not unary()
        if token == "(":
            value = expression()
            position += 1  # ")"
            return value
        return values[token]

    return int(expression())


StudentFeatures = Literal["pooled", "last-token", "tokens", "mlp"]


def student_features(
    student: TinyTransformer, tokens: torch.Tensor, kind: StudentFeatures
) -> torch.Tensor:
    """What the concept memory reads from the frozen student, [N, d_S] (see the docstring):

    pooled      the state its own head reads                                 [d]
    last-token  the residual state at the last real token after every block  [(layers+1)·d]
    tokens      every token's state after the last block, concatenated       [T·d]
    mlp         the MLP activations at the last real token, last two blocks  [2·ff]
    """
    with torch.no_grad():
        if kind == "pooled":
            return student.pooled(tokens)
        states, hidden = student.run(tokens)
        if kind == "last-token":
            return torch.cat([at_last(h, tokens) for h in states], -1)
        if kind == "tokens":
            return states[-1].flatten(1)
        if kind == "mlp":
            return torch.cat([at_last(h, tokens) for h in hidden[-2:]], -1)
    raise UsageError(f"unknown student features {kind!r}")


@dataclass(frozen=True)
class FamilyPlan:
    """Everything `prepare` draws and trains for one family in one mode."""

    sizes: tuple[int | None, int | None, int | None] = (None, None, None)
    options: dict[str, int] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    student: dict[str, Any] = field(default_factory=dict)
    teacher_training: TrainSettings = TrainSettings(epochs=100)
    student_training: TrainSettings = TrainSettings(epochs=60)


# Full: (a + b + c) mod 17, 3,000 / 500 / 1,000 of its 4,913 problems; sized so that its
# benchmark (3 seeds, 7 budgets, 7 methods) runs in well under an hour on 2 cores.
_FULL_MODSUM = FamilyPlan(
    sizes=(3000, 500, 1000),
    options={"p": 17},
    teacher={"width": 128, "layers": 2, "heads": 4, "ff": 512, "activation": "relu"},
    student={"width": 96, "layers": 3, "heads": 3, "ff": 384, "activation": "gelu"},
    teacher_training=TrainSettings(epochs=100),
    student_training=TrainSettings(epochs=100),
)
FULL = {
    "modsum": _FULL_MODSUM,
    # Two-digit addition with carries, 3,000 / 500 / 1,000 of its 10,000 problems, 199
    # answers; the same networks and training as modsum (teacher 99.8% on test, the student
    # pretrained on |x − y| 1.1%, chance 0.5%).
    "addition": replace(_FULL_MODSUM, options={"digits": 2}),
}
# Quick: (a + b + c) mod 11, 700 / 300 / 300 of its 1,331 problems, small networks; the teacher
# reached 93% on test in about a minute on one core.
QUICK = {
    "modsum": FamilyPlan(
        sizes=(700, 300, 300),
        options={"p": 11},
        teacher={"width": 64, "layers": 2, "heads": 4, "ff": 256, "activation": "relu"},
        student={"width": 48, "layers": 3, "heads": 3, "ff": 192, "activation": "gelu"},
        teacher_training=TrainSettings(epochs=200),
        student_training=TrainSettings(epochs=200),
    )
}
FEATURES: StudentFeatures = "mlp"


@dataclass(frozen=True)
class NewComputationSetting:
    """A symbolic task with its teacher and frozen student, both read once on every split.

    `teacher_states[split]` [N, d_T] is what the teacher's cosine head reads (its outputs are
    `concept_probabilities(teacher_states, teacher_concepts, teacher_scale)`);
    `student_states[split]` [N, d_S] is what the student's concept memory reads.
    """

    task: SymbolicTask
    teacher: TinyTransformer
    student: TinyTransformer
    teacher_states: dict[str, torch.Tensor]
    student_states: dict[str, torch.Tensor]
    student_guesses: dict[str, torch.Tensor]  # [N] its own head's answer, read as the task's
    teacher_name: str
    student_name: str
    features: StudentFeatures
    seconds: dict[str, float]

    @property
    def teacher_concepts(self) -> torch.Tensor:
        """One vector per answer class in the teacher's state space: its head's class vectors."""
        return self.teacher.class_vectors.detach()

    @property
    def teacher_scale(self) -> float:
        return self.teacher.config.scale

    def accuracy(self, split: str, who: str) -> float:
        labels = getattr(self.task, split).labels
        if who == "teacher":
            probs = concept_probabilities(
                self.teacher_states[split], self.teacher_concepts, self.teacher_scale
            )
            guesses = probs.argmax(-1)
        elif who == "student":
            guesses = self.student_guesses[split]
        else:
            raise UsageError(f"who must be teacher or student, got {who!r}")
        return float((guesses == labels).float().mean())


def plan_for(family: str, quick: bool) -> FamilyPlan:
    plans = QUICK if quick else FULL
    if family not in plans:
        raise UsageError(
            f"no {'quick' if quick else 'full'} plan for symbolic family {family!r}",
            f"choose one of: {', '.join(plans)}",
        )
    return plans[family]


def prepare(family: str, plan: FamilyPlan, seed: int = 0) -> NewComputationSetting:
    """Draw the task, train the teacher on its labels and the student on another function of
    the same inputs, freeze both and read every split once."""
    if family not in FAMILIES:
        raise UsageError(f"unknown family {family!r}", f"choose one of: {', '.join(FAMILIES)}")
    train, val, test = plan.sizes
    task = symbolic_task(family, seed=seed, train=train, val=val, test=test, **plan.options)
    vocab, length = len(task.vocabulary), task.sequence_length
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    teacher_config = TransformerConfig(vocab, length, len(task.classes), **plan.teacher)
    teacher = TinyTransformer(teacher_config, seed=seed)
    train_classifier(
        teacher, task.train.tokens, task.train.labels, plan.teacher_training, seed=seed
    )
    seconds["teacher_training"] = time.perf_counter() - started

    started = time.perf_counter()
    other_name, other = OTHER_TASKS[family]
    other_labels, other_classes = other(task, task.train)
    student_config = TransformerConfig(vocab, length, other_classes, **plan.student)
    student = TinyTransformer(student_config, seed=seed + 1)
    train_classifier(student, task.train.tokens, other_labels, plan.student_training, seed=seed)
    seconds["student_pretraining"] = time.perf_counter() - started

    started = time.perf_counter()
    with one_thread(), torch.no_grad():  # the states, as the weights, whatever the threads
        raw = {s: student_features(student, getattr(task, s).tokens, FEATURES) for s in SPLITS}
        mean, std = raw["train"].mean(0), raw["train"].std(0) + 1e-6
        setting = NewComputationSetting(
            task=task,
            teacher=teacher,
            student=student,
            teacher_states={s: teacher.pooled(getattr(task, s).tokens) for s in SPLITS},
            student_states={s: (raw[s] - mean) / std for s in SPLITS},
            student_guesses={s: student(getattr(task, s).tokens).argmax(-1) for s in SPLITS},
            teacher_name=f"{teacher_config.describe()}, trained on labels",
            student_name=f"{student_config.describe()}, pretrained on {other_name}",
            features=FEATURES,
            seconds=seconds,
        )
    seconds["reading"] = time.perf_counter() - started
    return setting


def run_budget(
    setting: NewComputationSetting,
    index: list[int],
    seed: int,
    settings: FitSettings,
    split: str = "test",
    ablations: bool = True,
    adapters: tuple[str, ...] = ("memory",),
    blocks: BlockSettings = BLOCKS,
) -> dict[str, dict[str, Any]]:
    """Every method at one budget (the training inputs `index`); scored on `split`. `adapters`:
    the memory rows, the in-block rows (`m2kt.bench.efficiency.blocks`, trained with
    `blocks`), or both."""
    s = setting
    b, k = len(index), len(s.task.classes)
    chosen = torch.tensor(index, dtype=torch.long)
    labels = s.task.train.labels[chosen]
    teacher_x = s.teacher_states["train"][chosen]
    student_x = s.student_states["train"][chosen]

    # The packet: concepts = the teacher's class vectors, traces = its states on the B probes;
    # its outputs on them follow (cosine head). Each probe is listed under the teacher's answer.
    teacher_probs = concept_probabilities(teacher_x, s.teacher_concepts, s.teacher_scale)
    taught = class_centroids(student_x, teacher_probs.argmax(-1), k)
    packet_targets = Targets(
        student_anchors=taught,
        student_states=student_x,
        teacher_concepts=s.teacher_concepts,
        teacher_states=teacher_x,
        teacher_probs=teacher_probs,
    )
    kd_targets = Targets(
        student_anchors=taught, student_states=student_x, teacher_probs=teacher_probs
    )
    sft_targets = Targets(
        student_anchors=class_centroids(student_x, labels, k),
        student_states=student_x,
        probe_labels=labels,
    )
    inputs = {
        "packet": {"teacher": b, "student": b},
        "logit KD": {"teacher": b, "student": b},
        "supervised": {"teacher": 0, "student": b},
    }
    rows: dict[str, dict[str, Any]] = {}
    if "memory" in adapters:
        rows |= score_methods(
            s.task.classes,
            method_runs(packet_targets, kd_targets, sft_targets, ablations),
            inputs,
            settings,
            seed,
            (s.student_states[split], getattr(s.task, split).labels),
            labels_used=b,
        )
    if "blocks" in adapters:
        methods = block_methods(packet_targets, kd_targets, sft_targets, ablations)
        rows |= run_block_methods(s, chosen, methods, inputs, settings, seed, split, b, blocks)
    return rows


def class_centroids(states: torch.Tensor, owners: torch.Tensor, k: int) -> torch.Tensor:
    """The unit mean state of the inputs assigned to each class [K, d]; a class with none gets
    the unit mean of all of them, which favours no class."""
    unit = F.normalize(states, dim=-1)
    counts = torch.bincount(owners, minlength=k)
    neutral = F.normalize(unit.mean(0), dim=-1).expand(k, -1)
    means = F.normalize(centroids(unit, owners, k), dim=-1)
    return torch.where(counts[:, None] > 0, means, neutral)
