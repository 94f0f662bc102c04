"""Data efficiency in the latent-skill regime, through the product: extract → signed file → ingest.

The teacher is a text encoder whose class-name head was tuned on the task's labels (the skill
someone paid for); the student is another encoder that already represents the topics and
classifies them zero-shot from label prompts. At each budget B (unlabelled training inputs,
0 included), every method gets the same first B inputs of the seed's order:

- packet: `extract_packet` reads the teacher (its tuned head as the concepts, the label prompts
  as the spec's probes, the B inputs as task inputs it answers for, 1,024 anchor sentences),
  audits it, signs it and writes the file; `ingest` (what `m2kt ingest` runs) loads the file
  with its signature checked and puts it into the student, verification and safety screen
  included. A packet the gate refuses leaves the student as it was, and is scored so. The
  same file is ingested again without the screen (`--no-screen`) and, where the setting has
  an auditor model, with the screen judging the probes in the auditor's space (`--auditor`);
- logit KD: the teacher's output distribution on the B inputs, KL only, free slots;
- logit KD + anchors: the same, with the teacher's outputs on the packet's 1,024 anchor
  sentences as extra unlabelled inputs (what the packet gets, given to KD);
- supervised: the B inputs with their labels, cross-entropy only (labels are not free).

Every text is read through a `ModelView`, whose counter (by purpose: task inputs, anchors,
probes) gives each row's inputs; nothing here counts by formula. A state cache saves repeated
forward passes across budgets and seeds without changing the counts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.nn import functional as F

from m2kt.anchors import SHIPPED_ANCHORS, load_anchor_set
from m2kt.bench.efficiency.curves import AUDITED
from m2kt.bench.efficiency.methods import only
from m2kt.concepts.geometry import accuracy
from m2kt.concepts.probing import read_probes
from m2kt.concepts.spec import ConceptSpec
from m2kt.extract.pipeline import ExtractionSettings, TeacherHead, extract_packet
from m2kt.ingest.fit import FitSettings, fit_memory
from m2kt.ingest.loss import LossWeights, Targets, concept_probabilities
from m2kt.ingest.pipeline import Ingestion, IngestSettings, ingest
from m2kt.ingest.verify import Gate
from m2kt.models.class_head import ClassNameHead, fine_tune_head
from m2kt.models.view import PURPOSES, ModelView, Purpose
from m2kt.packet import Packet, generate_keypair, load_packet
from m2kt.packet.manifest import MAX_TEXT
from m2kt.safety import ExportScreen, finish_export
from m2kt.safety.audit import UnsafePacketError
from m2kt.tasks import TextClassificationTask

# What the benchmark asks of ingestion (the CLI's --slots teacher --pair-weight 10 --steps 0),
# chosen on the tweets and BBC validation splits (docs/ingest.md), never on a test split.
PACKET_FIT = {"slots": "teacher", "pair_weight": 10.0, "steps": 0, "select_steps": False}
ANCHOR_COUNT = 1024
ZERO_BUDGET = True  # with anchors, a packet is worth measuring before any task input
SPLITS = ("train", "val", "test")
T = TypeVar("T")


@dataclass(frozen=True)
class Auditor:
    """An auditor model for the screened ingestion (`m2kt ingest --auditor MODEL`): the name
    its row carries (the model reference, e.g. l1) and its view."""

    name: str
    view: ModelView


@dataclass
class LatentSetting:
    """A task with its teacher and student views, read once for every seed and budget."""

    task: TextClassificationTask
    teacher: ModelView
    student: ModelView
    head: TeacherHead  # tuned on the full training split: the teacher's skill
    teacher_states: dict[str, torch.Tensor]  # pooled, last layer, per split
    student_states: dict[str, torch.Tensor]
    student_prompts: torch.Tensor  # [K, d_S] unit: the student's zero-shot class vectors
    student_names: torch.Tensor  # [K, d_S] unit: the student's reading of the names alone
    keys: tuple[Path, Path]  # (private, public): every packet is signed and checked
    workdir: Path
    anchor_count: int = ANCHOR_COUNT  # anchor sentences a packet carries (and KD gets)
    auditor: Auditor | None = None  # judges the probes at ingestion (`m2kt ingest --auditor`)

    @property
    def prompts(self) -> list[str]:
        return _prompts(self.task)

    def texts(self, split: str, index: Sequence[int] | None = None) -> list[str]:
        return _texts(self.task, split, index)

    def accuracy(self, split: str, who: str) -> float:
        labels = getattr(self.task, split).labels
        if who == "teacher":
            states, classes = self.teacher_states[split], self.head.weights
        else:
            states, classes = self.student_states[split], self.student_prompts
        return accuracy(F.normalize(states, dim=-1) @ classes.T, labels)

    def references(self, split: str) -> dict[str, float]:
        """The student's zero-shot reading of the concept names alone, beside its prompts."""
        labels = getattr(self.task, split).labels
        names = F.normalize(self.student_states[split], dim=-1) @ self.student_names.T
        return {"student zero-shot (names alone)": accuracy(names, labels)}


def prepare(
    task: TextClassificationTask,
    teacher: ModelView,
    student: ModelView,
    workdir: Path,
    anchor_count: int = ANCHOR_COUNT,
    auditor: Auditor | None = None,
) -> LatentSetting:
    """Read every split through both views (setup: not counted), tune the teacher's head;
    `auditor` adds the row of the packet screened with that model judging its probes."""
    teacher_states = {split: _read(teacher, _texts(task, split), "task") for split in SPLITS}
    student_states = {split: _read(student, _texts(task, split), "task") for split in SPLITS}
    shape = (len(task.class_names), len(task.templates), -1)
    zero = ClassNameHead(
        task.class_names, _class_vectors(_read(teacher, _prompts(task), "probe").view(shape))
    )
    tuned = fine_tune_head(zero, F.normalize(teacher_states["train"], dim=-1), task.train.labels)
    setting = LatentSetting(
        task=task,
        teacher=teacher,
        student=student,
        head=TeacherHead(tuned.weights, tuned.scale, layer=-1),
        teacher_states=teacher_states,
        student_states=student_states,
        student_prompts=_class_vectors(_read(student, _prompts(task), "probe").view(shape)),
        student_names=F.normalize(_read(student, list(task.class_names), "probe"), dim=-1),
        keys=generate_keypair(workdir / "keys"),
        workdir=workdir,
        anchor_count=anchor_count,
        auditor=auditor,
    )
    for view in (teacher, student, *([auditor.view] if auditor else [])):
        view.reads.clear()  # setup reads are not any method's inputs
    return setting


def run_budget(
    setting: LatentSetting,
    index: list[int],
    seed: int,
    settings: FitSettings,
    split: str = "test",
    ablations: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every method at one budget (the inputs `index`); scored on `split`."""
    s = setting
    labels = s.task.train.labels[index]
    evaluation = (s.student_states[split], getattr(s.task, split).labels)
    fit = replace(settings, seed=seed)
    rows = _packet(s, index, seed, settings, evaluation)
    anchors = load_anchor_set(SHIPPED_ANCHORS).subset(s.anchor_count, seed)

    def kd(with_anchors: bool) -> dict[str, Any]:
        def teach() -> Targets:
            texts = s.texts("train", index)
            teacher = _read(s.teacher, texts, "task")
            student = _read(s.student, texts, "task")
            if with_anchors:
                teacher = torch.cat([teacher, _read(s.teacher, anchors, "anchor")])
                student = torch.cat([student, _read(s.student, anchors, "anchor")])
            _read(s.student, s.prompts, "probe")  # its starting slots: the prompts' means
            probs = concept_probabilities(teacher, s.head.weights, s.head.scale)
            return Targets(s.student_prompts, student, teacher_probs=probs)

        return _trained(s, teach, only("kl"), fit, 0.0, evaluation, labels_used=0)

    def supervised() -> Targets:
        student = _read(s.student, s.texts("train", index), "task")
        _read(s.student, s.prompts, "probe")
        return Targets(s.student_prompts, student, probe_labels=labels)

    rows["logit KD"] = kd(False)
    rows["logit KD + anchors"] = kd(True)
    rows["supervised"] = _trained(s, supervised, only(), fit, 1.0, evaluation, len(index))
    return rows


def _packet(
    s: LatentSetting,
    index: list[int],
    seed: int,
    settings: FitSettings,
    evaluation: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, dict[str, Any]]:
    """Extract, sign and write the packet; load it back checked; ingest it (with the safety
    screen, as `m2kt ingest` does; without it, `--no-screen`; and, where the setting has an
    auditor, with the screen judging the probes in its space, `--auditor`); score the student.
    Each ingestion row counts what the student (and the auditor) read under its own key."""
    started = time.perf_counter()
    spec = ConceptSpec.model_validate(
        {
            "name": f"{s.task.name}-classes",
            "concepts": [
                {"name": c, "probes": [t.format(c) for t in s.task.templates]}
                for c in s.task.class_names
            ],
        }
    )
    extraction_settings = ExtractionSettings(
        method="head",
        attention=False,
        truncate=True,
        anchor_count=s.anchor_count,
        seed=seed,
        created_at="2026-01-01T00:00:00Z",
    )

    def extract() -> Path:  # what `m2kt extract` runs: screen, drop what it flags, sign
        audit = ExportScreen()
        extraction = extract_packet(
            s.teacher,
            spec,
            extraction_settings,
            audit=audit,
            head=s.head,
            task_inputs=s.texts("train", index),
        )
        packet = finish_export(extraction.packet, audit)[0]
        path = s.workdir / f"{s.task.name}-b{len(index)}-s{seed}.m2kt"
        return packet.signed(s.keys[0]).save(path)

    path, teacher_reads = _counted_views({"teacher": s.teacher}, extract)
    packet = load_packet(path, trusted_keys=[s.keys[1]])
    ingest_settings = IngestSettings(
        fit=replace(settings, seed=seed, **PACKET_FIT),  # type: ignore[arg-type]
        gate=Gate(accept_unverified=True),
        truncate=True,
    )
    rows = {}
    runs: list[tuple[str, bool, Auditor | None]] = [
        ("packet", True, None),
        ("packet, no screen", False, None),
    ]
    if s.auditor is not None:
        runs.append((f"{AUDITED}{s.auditor.name}", True, s.auditor))
    for name, screened, auditor in runs:
        chosen = ingest_settings if screened else replace(ingest_settings, screen=False)
        views = {"student": s.student} | ({"auditor": auditor.view} if auditor else {})
        judge = auditor.view if auditor else None
        (outcome, screen), reads = _counted_views(
            views, partial(screened_ingest, s.student, packet, chosen, judge)
        )
        rows[name] = _scored(s, outcome, evaluation, teacher_reads | reads) | {
            "packet_digest": packet.digest,
            "packet_bytes": path.stat().st_size,
            "safety_screen": screen if screened else "off",
            "seconds": time.perf_counter() - started,
        }
    return rows


def _scored(
    s: LatentSetting,
    outcome: Ingestion,
    evaluation: tuple[torch.Tensor, torch.Tensor],
    reads: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """An ingestion's row: the student with the memory, or as it was when refused."""
    if outcome.accepted and outcome.memory is not None:
        # the memory's concepts by name: the screen may have dropped some of the task's classes
        names = outcome.memory.config.concepts
        classes = torch.tensor([s.task.class_names.index(c) for c in names])
        with torch.no_grad():
            predicted = classes[outcome.memory(evaluation[0]).argmax(-1)]
    else:  # refused: the student is rolled back to what it was
        predicted = (F.normalize(evaluation[0], dim=-1) @ s.student_prompts.T).argmax(-1)
    report = outcome.report
    return _row(
        float((predicted == evaluation[1]).float().mean()),
        reads,
        labels=0,
        trained=report["trainable_parameters"],
        seconds=0.0,
    ) | {
        "accepted": outcome.accepted,
        "verification": report["verification"],
        "concepts_kept": len(outcome.memory.config.concepts) if outcome.memory else None,
        "dropped_concepts": {d["name"]: d["reason"] for d in report["dropped_concepts"]},
        "checks": {c["name"]: [c["before"], c["after"], c["passed"]] for c in report["checks"]},
        "ingestion_inputs": report["inputs"],
        "alignment": report["alignment"],
    }


def _trained(
    s: LatentSetting,
    teach: Callable[[], Targets],
    weights: LossWeights,
    fit: FitSettings,
    ce: float,
    evaluation: tuple[torch.Tensor, torch.Tensor],
    labels_used: int,
) -> dict[str, Any]:
    """A baseline: its targets read through the views (counted), the same adapter with free
    slots trained on them; with nothing to learn from, the student as it was."""
    started = time.perf_counter()
    before = (Counter(s.teacher.reads), Counter(s.student.reads))
    targets = teach()
    reads = {
        "teacher": s.teacher.reads_since(before[0]),
        "student": s.student.reads_since(before[1]),
    }
    if targets.probe_count == 0:
        predicted = (F.normalize(evaluation[0], dim=-1) @ s.student_prompts.T).argmax(-1)
        trained = 0
    else:
        result = fit_memory(s.task.class_names, targets, weights, fit, slots="free", ce_weight=ce)
        with torch.no_grad():
            predicted = result.memory(evaluation[0]).argmax(-1)
        trained = result.trainable_parameters
    accuracy = float((predicted == evaluation[1]).float().mean())
    return _row(accuracy, reads, labels_used, trained, time.perf_counter() - started)


def _row(
    accuracy: float,
    reads: dict[str, dict[str, int]],
    labels: int,
    trained: int,
    seconds: float,
) -> dict[str, Any]:
    """One method's result with the inputs each model read, split by purpose."""
    return {
        "accuracy": accuracy,
        "inputs": reads,
        "inputs_total": sum(n for model in reads.values() for n in model.values()),
        "task_inputs": sum(model["task"] for model in reads.values()),
        "anchor_inputs": sum(model["anchor"] for model in reads.values()),
        "probe_inputs": sum(model["probe"] for model in reads.values()),
        "labels": labels,
        "trained_params": trained,
        "seconds": seconds,
    }


def screened_ingest(
    view: ModelView,
    packet: Packet,
    settings: IngestSettings,
    auditor: ModelView | None = None,
) -> tuple[Ingestion, str]:
    """`ingest` with the safety screen on (its probes judged by `auditor` where one is given,
    `m2kt ingest --auditor`); when the screen leaves fewer than 2 concepts, the same without
    it (`--no-screen`), saying so: a screen that flags ordinary sentiment or emotion concepts
    is a finding to report, not a reason to measure nothing."""
    try:
        return ingest(view, packet, settings, auditor=auditor), "on"
    except UnsafePacketError as exc:  # ingestion raises it only when fewer than 2 would be left
        return ingest(view, packet, replace(settings, screen=False)), f"off: {exc.message}"


def _counted_views(
    views: dict[str, ModelView], work: Callable[[], T]
) -> tuple[T, dict[str, dict[str, int]]]:
    """`work`'s result and the texts each view read during it, by purpose."""
    before = {key: Counter(view.reads) for key, view in views.items()}
    result = work()
    return result, {key: view.reads_since(before[key]) for key, view in views.items()}


def _read(view: ModelView, texts: list[str], purpose: Purpose) -> torch.Tensor:
    """Pooled last-layer states (what the heads and ingestion read), counted under `purpose`."""
    assert purpose in PURPOSES
    layer = view.num_layers
    if not texts:
        return torch.zeros(0, view.width)
    with view.reading(purpose):
        readings = read_probes(view, texts, [layer], truncate=True)
    return readings.states[(view.pooling, layer)].float()


def _prompts(task: TextClassificationTask) -> list[str]:
    return [t.format(c) for c in task.class_names for t in task.templates]


def _texts(
    task: TextClassificationTask, split: str, index: Sequence[int] | None = None
) -> list[str]:
    """A split's texts (those at `index`), cut to what a packet may carry; the models read
    far fewer characters than that."""
    texts = getattr(task, split).texts
    return [texts[i][:MAX_TEXT] for i in (range(len(texts)) if index is None else index)]


def _class_vectors(prompts: torch.Tensor) -> torch.Tensor:
    """[K, T, d] prompt states → [K, d] unit class vectors (the mean of unit prompts)."""
    return F.normalize(F.normalize(prompts, dim=-1).mean(1), dim=-1)
