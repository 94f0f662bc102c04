"""Train a concept memory on seeded synthetic targets; run alone or under torchrun.

`python fit_worker.py OUT` (one process, or each process of a torchrun group): process 0
writes OUT/memory.safetensors and OUT/history.json. Every loss term is on, step selection is
off, so the data-parallel training path runs for every step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from m2kt import distributed
from m2kt.ingest.fit import FitSettings, fit_memory
from m2kt.ingest.loss import LossWeights, Targets, concept_probabilities


def synthetic_targets(probes: int = 13, concepts: int = 4, d_t: int = 12, d_s: int = 10) -> Targets:
    """An odd probe count, so the two processes' shares differ in size."""
    g = torch.Generator().manual_seed(0)
    teacher_concepts = torch.randn(concepts, d_t, generator=g)
    teacher_states = torch.randn(probes, d_t, generator=g)
    return Targets(
        student_anchors=torch.nn.functional.normalize(
            torch.randn(concepts, d_s, generator=g), dim=-1
        ),
        student_states=torch.randn(probes, d_s, generator=g),
        teacher_concepts=teacher_concepts,
        teacher_states=teacher_states,
        teacher_probs=concept_probabilities(teacher_states, teacher_concepts, 20.0),
        unsafe=torch.randn(3, d_s, generator=g),
        safety_margin=0.0,
    )


def train() -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    settings = FitSettings(steps=30, lr=1e-2, select_steps=False, residual_rank=2)
    result = fit_memory(("a", "b", "c", "d"), synthetic_targets(), LossWeights(), settings)
    return result.memory.tensors(), result.history


if __name__ == "__main__":
    with distributed.joined("cpu") as world:
        tensors, history = train()
    if world.is_writer:
        out = Path(sys.argv[1])
        save_file({k: v.contiguous() for k, v in tensors.items()}, out / "memory.safetensors")
        (out / "history.json").write_text(json.dumps(history))
