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
from m2kt.ingest.blocks import BlockAdapter, BlockSettings, base_weight_sha256, has_block_adapter
from m2kt.ingest.memory import ConceptMemory, MemoryConfig
from m2kt.ingest.pipeline import MEMORY_PREFIX, REPORT_FILE
from m2kt.models.view import ModelView
from m2kt.progress import Progress


@dataclass(frozen=True)
class Prediction:
    """The concept an adapted student assigns to a text, with its probability."""

    concept: str
    probability: float


@dataclass(frozen=True)
class Ingested:
    """A saved adapter and the student it was made for: a concept memory, and for an in-block
    adapter its LoRA config and matrices (as peft saved them)."""

    memory: ConceptMemory
    student: dict[str, Any]
    report: dict[str, Any]
    lora_config: dict[str, Any] | None = None
    lora_tensors: dict[str, torch.Tensor] | None = None

    @property
    def adapter(self) -> str:
        return "blocks" if self.lora_config is not None else "memory"

    @property
    def dropped(self) -> list[str]:
        """Names of the packet's concepts the safety auditor dropped at ingestion: the adapter
        cannot answer them, and whoever uses it must be told."""
        return [str(d.get("name")) for d in self.report.get("dropped_concepts") or []]

    def check_student(self, view: ModelView) -> None:
        want = self.student.get("weight_sha256")
        if want != base_weight_sha256(view.model):
            raise UsageError(
                f"this adapter was made for {self.student.get('id')} (weights {str(want)[:12]}), "
                f"not {view.name} (weights {view.weight_sha256[:12]})",
                "pass the student named in the adapter's ingestion_report.json",
            )

    def apply(self, view: ModelView) -> BlockAdapter:
        """Put the in-block adapter into the student (in place); `.remove()` takes it out."""
        if self.lora_config is None or self.lora_tensors is None:
            raise UsageError("this adapter is a concept memory; it has nothing inside the blocks")
        if has_block_adapter(view.model):
            raise UsageError(f"{view.name} already carries an adapter inside its blocks")
        try:
            targets = [str(t) for t in self.lora_config["target_modules"]]
            settings = BlockSettings(
                rank=int(self.lora_config["r"]), alpha=float(self.lora_config["lora_alpha"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"adapter_config.json is malformed: {exc}") from None
        adapter = BlockAdapter(view.model, targets, settings)
        adapter.load_tensors(self.lora_tensors)
        return adapter

    def states(
        self,
        view: ModelView,
        texts: Sequence[str],
        progress: Progress | None = None,
        *,
        adapted: bool = True,
    ) -> torch.Tensor:
        """The states the memory reads; with `adapted` (and an in-block adapter) read through
        the adapted student, which is put back as it was afterwards."""
        layer, pooling = int(self.student["layer"]), self.student["pooling"]
        inside = self.apply(view) if adapted and self.lora_config is not None else None
        try:
            readings = read_probes(
                view, texts, [layer], poolings=[pooling], truncate=True, progress=progress
            )
        finally:
            if inside is not None:
                inside.remove()
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
    lora_config = lora_tensors = None
    if "peft_type" in config:  # an in-block adapter: peft's config with m2kt's inside
        own = config.get("m2kt")
        if not isinstance(own, dict):
            raise UsageError(f"{directory}: a peft adapter without m2kt's concept memory")
        lora_config = {k: v for k, v in config.items() if k != "m2kt"}
        lora_tensors = {k: v for k, v in tensors.items() if not k.startswith(MEMORY_PREFIX)}
        tensors = {
            k[len(MEMORY_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MEMORY_PREFIX)
        }
        config = own
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
    return Ingested(memory, student, report, lora_config, lora_tensors)


def score(
    ingested: Ingested,
    states: torch.Tensor,
    labels: torch.Tensor,
    names: torch.Tensor | None = None,
    before: torch.Tensor | None = None,
) -> dict[str, float]:
    """Accuracy with the student's own concept anchors (before, on the frozen student's states
    `before`, default `states`), with the adapter (after, on `states`) and, given the frozen
    student's states of the concept names [K, d_S], with its zero-shot reading of the names
    alone: what a packet has to beat to be worth anything."""
    memory = ingested.memory
    frozen = states if before is None else before
    with torch.no_grad():
        own = F.normalize(frozen, dim=-1) @ memory.anchors.T
        own_accuracy = float((own.argmax(-1) == labels).float().mean())
        after = float((memory(states).argmax(-1) == labels).float().mean())
    found = {"before": own_accuracy, "after": after, "count": float(len(labels))}
    if names is not None:
        zero = F.normalize(frozen, dim=-1) @ F.normalize(names, dim=-1).T
        found["zero_shot"] = float((zero.argmax(-1) == labels).float().mean())
    return found
