"""Reasoning traces: the teacher's states on its way to an answer.

Two kinds, both [m, d] tensors of the teacher's width:
- across layers: the state at the answer position (the last token of a causal LM's prompt, the
  mean over tokens for an encoder) after each block, s_0 … s_L;
- across explicit steps: for a worked solution given as steps, the state at the packet's layer
  after reading the problem and the first i steps, i = 1 … m.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from m2kt.concepts.spec import TraceEntry
from m2kt.models.view import ModelView
from m2kt.progress import Progress


def read_traces(
    view: ModelView,
    entries: Sequence[TraceEntry],
    layer: int,
    truncate: bool = False,
    progress: Progress | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], int]:
    """Both kinds of trace for every entry: tensors, manifest entries, inputs the teacher read."""
    tensors: dict[str, torch.Tensor] = {}
    manifest: list[dict[str, Any]] = []
    inputs = 0
    for i, entry in enumerate(entries):
        common = {"probe": entry.probe, "answer": entry.answer}
        tensors[f"traces.{entry.id}.layers"] = layer_trace(view, entry.probe, truncate)
        steps = [f"layer {n}" for n in range(view.num_layers + 1)]
        manifest.append({"id": f"{entry.id}.layers", "steps": steps} | common)
        inputs += 1
        if entry.steps:
            tensors[f"traces.{entry.id}.steps"] = step_trace(view, entry, layer, truncate)
            steps = [f"step {n + 1}: {step}"[:256] for n, step in enumerate(entry.steps)]
            manifest.append({"id": f"{entry.id}.steps", "steps": steps} | common)
            inputs += len(entry.steps)
        if progress is not None:
            progress(i + 1, len(entries))
    return tensors, manifest, inputs


def layer_trace(view: ModelView, probe: str, truncate: bool = False) -> torch.Tensor:
    layers = list(range(view.num_layers + 1))
    with torch.no_grad():
        capture = view.run([probe], hidden_layers=layers, truncate=truncate)
        return torch.cat([view.pool(capture.hidden[i], capture.mask) for i in layers]).float()


def step_trace(
    view: ModelView, trace: TraceEntry, layer: int, truncate: bool = False
) -> torch.Tensor:
    texts = step_texts(trace)
    with torch.no_grad():
        capture = view.run(texts, hidden_layers=[layer], truncate=truncate)
        return view.pool(capture.hidden[layer], capture.mask).float()


def step_texts(trace: TraceEntry) -> list[str]:
    """The problem followed by the first i steps, for i = 1 … m."""
    return [" ".join([trace.probe, *trace.steps[: i + 1]]) for i in range(len(trace.steps))]
