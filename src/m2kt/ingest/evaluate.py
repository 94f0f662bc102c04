"""Use an ingested adapter: load it, check it belongs to this student, score or predict."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.adapter_files import load_adapter_dir
from m2kt.concepts.probing import read_probes
from m2kt.errors import UsageError
from m2kt.ingest.memory import ConceptMemory, MemoryConfig
from m2kt.ingest.pipeline import REPORT_FILE
from m2kt.models.view import ModelView
from m2kt.progress import Progress


@dataclass(frozen=True)
class Prediction:
    """The concept an adapted student assigns to a text, with its probability."""

    concept: str
    probability: float


@dataclass(frozen=True)
class Ingested:
    """A saved concept memory and the student it was made for."""

    memory: ConceptMemory
    student: dict[str, Any]
    report: dict[str, Any]

    @property
    def dropped(self) -> list[str]:
        """Names of the packet's concepts the safety auditor dropped at ingestion: the adapter
        cannot answer them, and whoever uses it must be told."""
        return [str(d.get("name")) for d in self.report.get("dropped_concepts") or []]

    def check_student(self, view: ModelView) -> None:
        want = self.student.get("weight_sha256")
        if want != view.weight_sha256:
            raise UsageError(
                f"this adapter was made for {self.student.get('id')} (weights {str(want)[:12]}), "
                f"not {view.name} (weights {view.weight_sha256[:12]})",
                "pass the student named in the adapter's ingestion_report.json",
            )

    def states(
        self, view: ModelView, texts: Sequence[str], progress: Progress | None = None
    ) -> torch.Tensor:
        layer, pooling = int(self.student["layer"]), self.student["pooling"]
        readings = read_probes(
            view, texts, [layer], poolings=[pooling], truncate=True, progress=progress
        )
        return readings.states[(pooling, layer)].float()

    def predict(
        self, view: ModelView, texts: Sequence[str], progress: Progress | None = None
    ) -> list[Prediction]:
        """The concept the student with this adapter assigns to each text."""
        self.check_student(view)
        with torch.no_grad():
            probabilities = torch.softmax(self.memory(self.states(view, texts, progress)), -1)
        concepts = self.memory.config.concepts
        best = probabilities.max(-1)
        return [
            Prediction(concepts[int(k)], float(p))
            for p, k in zip(best.values, best.indices, strict=True)
        ]


def load_ingested(directory: str | Path) -> Ingested:
    config, tensors = load_adapter_dir(Path(directory))
    memory = ConceptMemory.from_tensors(MemoryConfig.from_dict(config), tensors)
    memory.eval()
    student = config.get("student")
    if not isinstance(student, dict) or not {"layer", "pooling", "weight_sha256"} <= set(student):
        raise UsageError(f"{directory}: adapter_config.json does not name its student")
    report_path = Path(directory) / REPORT_FILE
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    return Ingested(memory, student, report)


def score(
    ingested: Ingested,
    states: torch.Tensor,
    labels: torch.Tensor,
    names: torch.Tensor | None = None,
) -> dict[str, float]:
    """Accuracy with the student's own concept anchors (before), with the memory (after) and,
    given the student's states of the concept names [K, d_S], with its zero-shot reading of
    the names alone: what a packet has to beat to be worth anything."""
    memory = ingested.memory
    with torch.no_grad():
        own = F.normalize(states, dim=-1) @ memory.anchors.T
        before = float((own.argmax(-1) == labels).float().mean())
        after = float((memory(states).argmax(-1) == labels).float().mean())
    found = {"before": before, "after": after, "count": float(len(labels))}
    if names is not None:
        zero = F.normalize(states, dim=-1) @ F.normalize(names, dim=-1).T
        found["zero_shot"] = float((zero.argmax(-1) == labels).float().mean())
    return found
