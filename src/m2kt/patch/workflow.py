"""The model-patch recipe, step by step, shared by the CLI and the benchmark.

axes     = class_axes(task classes, templates, K, seed)         same named logits everywhere
z_weak   = zero_shot_head(weak, axes).logits(x_weak)            [N, K], unlabelled inputs
z_ft     = the weak fine-tuned model's task logits on them      [N, C]
patch    = learn_patch(z_weak, z_ft, config)                    no labels
z_strong = zero_shot_head(strong, axes).logits(x_strong)        same inputs, forward only
moved, _ = select_transfer(patch, z_weak, z_strong, val, ...)    map, λ, α picked on validation
  (no labels: select_transfer_unlabelled, then refine_unlabelled, both on held-out agreement)
predict(moved, zero_shot_head(strong, axes).logits(x_new))      task logits
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from m2kt.concepts.geometry import accuracy
from m2kt.models import ClassNameHead, TextEncoder
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.aux_classes import pick_aux_classes
from m2kt.patch.few_shot import TunedChoice, select_tuned_patch
from m2kt.patch.packet_io import ClassAxes
from m2kt.patch.transfer import TRANSFER_MAPS, TransferMap, transfer_patch

IDENTITY_WEIGHT_GRID = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
BLEND_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


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


@dataclass(frozen=True)
class TransferChoice:
    """The transfer picked on the validation split, and every candidate's score."""

    map: TransferMap
    identity_weight: float
    blend: float
    val_accuracy: float
    scores: dict[str, float]

    def settings(self) -> dict[str, str | float]:
        return {"map": self.map, "identity_weight": self.identity_weight, "blend": self.blend}


def select_transfer(
    patch: LogitPatch,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    classes: int,
    maps: Sequence[TransferMap] = TRANSFER_MAPS,
    grid: Sequence[float] = IDENTITY_WEIGHT_GRID,
    blends: Sequence[float] = BLEND_GRID,
) -> tuple[LogitPatch, TransferChoice]:
    """Transfer with every (map, λ, α) candidate and keep the best on the validation split.

    Ties go to the orthogonal map (TransMiter's), then to the larger λ, then to α nearest 1.
    """
    best: tuple[tuple[float, int, float, float], LogitPatch, TransferChoice] | None = None
    scores: dict[str, float] = {}
    for kind in maps:
        for weight in grid:
            moved = transfer_patch(patch, source_logits, target_logits, weight, map=kind)
            for blend in blends:
                moved.set_blend(blend)
                score = accuracy(predict(moved, val_logits, classes), val_labels)
                scores[f"{kind} λ={weight} α={blend}"] = score
                key = (score, int(kind == "orthogonal"), weight, -abs(blend - 1))
                if best is None or key > best[0]:
                    choice = TransferChoice(kind, weight, blend, score, scores)
                    best = (key, copy.deepcopy(moved), choice)
    assert best is not None
    return best[1], best[2]


HELD_OUT_EVERY = 5
REFINE_EPOCHS = 20


def held_out_rows(count: int) -> torch.Tensor:
    """The label-free path's held-out inputs: a mask of every `HELD_OUT_EVERY`-th row."""
    return torch.arange(count) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


def select_transfer_unlabelled(
    patch: LogitPatch,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    classes: int,
    maps: Sequence[TransferMap] = TRANSFER_MAPS,
) -> tuple[LogitPatch, TransferChoice]:
    """`select_transfer` without a label: the (map, λ, α) whose moved patch agrees best with
    the patch on its own model, on every `HELD_OUT_EVERY`-th unlabelled input, the map fitted on
    the others. The chosen settings are then refitted on all inputs.

    source_logits, target_logits: [N, K] both models' logits on the same unlabelled inputs.
    The returned choice's `val_accuracy` is that held-out agreement, not an accuracy.
    """
    held = held_out_rows(len(source_logits))
    agreed_on = predict(patch, source_logits[held], classes).argmax(dim=-1)
    _, choice = select_transfer(
        patch,
        source_logits[~held],
        target_logits[~held],
        target_logits[held],
        agreed_on,
        classes,
        maps=maps,
    )
    moved = transfer_patch(
        patch, source_logits, target_logits, choice.identity_weight, map=choice.map
    )
    moved.set_blend(choice.blend)
    return moved, choice


def refine_unlabelled(
    moved: LogitPatch,
    patch: LogitPatch,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    classes: int,
    seed: int = 0,
    epochs: int = REFINE_EPOCHS,
    lr: float | None = None,
) -> tuple[LogitPatch, TunedChoice]:
    """After a label-free transfer, refit the moved patch toward its teacher, the patch on its
    own model, by KL alone (Patch+ with β = 1 and no shot) on the unlabelled inputs.

    A transfer only moves the patch's basis; refitted on the target's own logits, the patch
    imitates its teacher more closely (on tweets this alone matched Patch+ with labels, README).
    The KL reads the inputs `select_transfer_unlabelled` fitted on; the epoch (0: `moved`
    untouched) is the one that agrees best with the teacher on the held-out inputs, so the
    result never agrees less there than `moved` does. The choice's `val_accuracy_before` and
    `val_accuracy` are that held-out agreement before and after, not accuracies.
    """
    held = held_out_rows(len(source_logits))
    teacher = predict(patch, source_logits, classes)
    return select_tuned_patch(
        moved,
        target_logits[:0],
        torch.zeros(0, dtype=torch.long),
        target_logits[held],
        teacher[held].argmax(dim=-1),
        target_logits[~held],
        teacher[~held],
        weights=(1.0,),
        epochs=epochs,
        lr=lr,
        seed=seed,
    )
