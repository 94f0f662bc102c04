"""The model-patch recipe, step by step, shared by the CLI and the benchmark.

axes     = class_axes(task classes, templates, K, seed)         same named logits everywhere
z_weak   = zero_shot_head(weak, axes).logits(x_weak)            [N, K], unlabelled inputs
z_ft     = the weak fine-tuned model's task logits on them      [N, C]
patch    = learn_patch(z_weak, z_ft, config)                    no labels
z_strong = zero_shot_head(strong, axes).logits(x_strong)        same inputs, forward only
moved    = transfer_patch(patch, z_weak, z_strong, λ)           one SVD
predict(moved, zero_shot_head(strong, axes).logits(x_new))      task logits
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from m2kt.models import ClassNameHead, TextEncoder
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.aux_classes import pick_aux_classes
from m2kt.patch.few_shot import accuracy
from m2kt.patch.packet_io import ClassAxes
from m2kt.patch.transfer import transfer_patch

IDENTITY_WEIGHT_GRID = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def class_axes(
    task_classes: Sequence[str], templates: Sequence[str], logit_dim: int, seed: int = 0
) -> ClassAxes:
    aux = pick_aux_classes(task_classes, logit_dim, seed=seed)
    return ClassAxes(tuple(task_classes), tuple(aux), tuple(templates))


def zero_shot_head(encoder: TextEncoder, axes: ClassAxes) -> ClassNameHead:
    return ClassNameHead.from_names(encoder, axes.names, axes.templates)


@torch.no_grad()
def predict(patch: LogitPatch, logits: torch.Tensor, classes: int) -> torch.Tensor:
    """Task logits [N, C] of the patched model from its zero-shot logits [N, K]."""
    return patch(logits)[:, :classes]


def select_identity_weight(
    patch: LogitPatch,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    classes: int,
    grid: Sequence[float] = IDENTITY_WEIGHT_GRID,
) -> tuple[LogitPatch, float, dict[float, float]]:
    """Transfer once per λ in `grid`; keep the best on the validation split (ties: larger λ)."""
    scores: dict[float, float] = {}
    best: tuple[float, float, LogitPatch] | None = None
    for weight in grid:
        moved = transfer_patch(patch, source_logits, target_logits, weight)
        scores[weight] = accuracy(predict(moved, val_logits, classes), val_labels)
        if best is None or scores[weight] >= best[0]:
            best = (scores[weight], weight, moved)
    assert best is not None
    return best[2], best[1], scores
