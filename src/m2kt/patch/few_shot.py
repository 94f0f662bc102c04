"""Patch+: tune a transferred patch on a few labels, choosing the epoch on a validation split.

Cross-entropy on 16 labels a class alone overfits them: the plain patch's validation accuracy
was the best epoch in nearly every run (README, "Model patches"). Patch+ can therefore also
keep the patch agreeing with a teacher on the unlabelled inputs the transfer already read
(`Agreement`: a KL term, the semi-supervised half), and its selection never returns a patch
that scores below the untouched one on validation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from m2kt.concepts.geometry import accuracy
from m2kt.errors import UsageError
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.train import distillation_loss

Tunes = Literal["all", "bias"]
AGREEMENT_GRID = (0.0, 0.5, 0.9)


@dataclass(frozen=True)
class Agreement:
    """Unlabelled inputs for the KL half of Patch+: the target model's K logits on them, and the
    teacher's C task logits on the same inputs (sharpened as the patch's own training does).
    `weight` β mixes the losses: (1 − β) · CE(shots) + β · KL(teacher ‖ patched)."""

    logits: torch.Tensor
    teacher: torch.Tensor
    weight: float

    def __post_init__(self) -> None:
        if len(self.logits) != len(self.teacher) or len(self.logits) == 0:
            raise UsageError("agreement logits and teacher logits must cover the same inputs")
        if not 0 <= self.weight <= 1:
            raise UsageError(f"agreement weight {self.weight} is outside [0, 1]")


@dataclass(frozen=True)
class TunedChoice:
    """What Patch+ kept: the agreement weight β and epoch (0: the untouched patch), with the
    validation accuracy before and after and every candidate's score."""

    agreement: float
    epoch: int
    val_accuracy_before: float
    val_accuracy: float
    scores: dict[str, float]


def select_tuned_patch(
    patch: LogitPatch,
    logits: torch.Tensor,
    labels: torch.Tensor,
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    unlabelled: torch.Tensor,
    teacher: torch.Tensor,
    *,
    weights: Sequence[float] = AGREEMENT_GRID,
    epochs: int = 20,
    lr: float | None = None,
    seed: int = 0,
    tunes: Tunes = "all",
) -> tuple[LogitPatch, TunedChoice]:
    """Patch+ with the agreement weight β chosen on validation, with the epoch, among `weights`.

    Ties go to the untouched patch, then to the larger β (the patch kept nearer its teacher),
    then to the earlier epoch. `unlabelled` [N, K] and `teacher` [N, C]: see `Agreement`.
    With no shots (`labels` empty) only β = 1 can be tuned: agreement alone, which is how the
    label-free path refines a transfer (`workflow.refine_unlabelled`).
    """
    if len(labels) == 0 and any(weight < 1 for weight in weights):
        raise UsageError("Patch+ without shots can only tune on agreement (β = 1)")
    classes = teacher.shape[1]
    before = _val_score(patch, val_logits, val_labels, classes)
    best: tuple[tuple[float, int, float, int], LogitPatch, float, int] | None = None
    scores: dict[str, float] = {}
    for weight in weights:
        tuned, epoch, score, history = _tune(
            patch,
            logits,
            labels,
            val_logits,
            val_labels,
            epochs,
            lr,
            seed,
            tunes,
            Agreement(unlabelled, teacher, weight),
        )
        scores |= {f"β={weight} epoch {e}": s for e, s in enumerate(history) if e > 0}
        key = (score, int(epoch == 0), weight, -epoch)
        if best is None or key > best[0]:
            best = (key, tuned, weight, epoch)
    assert best is not None
    _, tuned, weight, epoch = best
    after = _val_score(tuned, val_logits, val_labels, classes)
    choice = TunedChoice(weight if epoch else 0.0, epoch, before, after, scores)
    return tuned, choice


def _tune(
    patch: LogitPatch,
    logits: torch.Tensor,
    labels: torch.Tensor,
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    epochs: int,
    lr: float | None,
    seed: int,
    tunes: Tunes,
    agreement: Agreement,
) -> tuple[LogitPatch, int, float, list[float]]:
    """Cross-entropy on the task logits of (few) labelled target-model logits and, weighted by
    β = `agreement.weight`, a KL term toward a teacher on unlabelled inputs.

    `tunes`: "all" the patch's weights (lr 1e-4), or "bias" only the bias of its MLP's last
    layer (K values, lr 1e-2): a shift of the patch's output that a few labels can fit without
    rewriting what the patch carried. An epoch is one pass over the shots, or, with β > 0, over
    the unlabelled inputs (batches of 256, each step with a batch of up to 64 shots).
    Returns the patch of the epoch (0 = untouched) with the best validation accuracy, that
    epoch, its validation accuracy and every epoch's. The test split is never seen.
    """
    classes = max(int(torch.cat([labels, val_labels]).max()) + 1, agreement.teacher.shape[1])
    if classes > patch.config.logit_dim:
        raise UsageError("labels exceed the patch's logit width")
    generator = torch.Generator().manual_seed(seed)
    tuned = copy.deepcopy(patch)
    if tunes == "all":
        tuned.keep_orthogonal()
        optimizer = torch.optim.AdamW(tuned.parameters(), lr=lr or 1e-4, weight_decay=1e-3)
    elif tunes == "bias":
        bias = tuned.mlp[-1].bias
        assert isinstance(bias, torch.nn.Parameter)
        optimizer = torch.optim.AdamW([bias], lr=lr or 1e-2, weight_decay=0.0)
    else:
        raise UsageError(f"unknown Patch+ restriction {tunes!r}", "choose all or bias")

    def score() -> float:
        return _val_score(tuned, val_logits, val_labels, classes)

    history = [score()]
    best_epoch, best_state = 0, copy.deepcopy(tuned.state_dict())
    for epoch in range(1, epochs + 1):
        tuned.train()
        for shots, unlabelled in _batches(len(labels), agreement, generator):
            loss = torch.zeros(())
            if agreement.weight < 1:
                ce = F.cross_entropy(tuned(logits[shots])[:, :classes], labels[shots])
                loss = loss + (1 - agreement.weight) * ce
            if unlabelled is not None:
                kl = distillation_loss(
                    tuned(agreement.logits[unlabelled])[:, : agreement.teacher.shape[1]],
                    agreement.teacher[unlabelled],
                    patch.config,
                )
                loss = loss + agreement.weight * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        tuned.eval()
        history.append(score())
        if history[-1] > history[best_epoch]:
            best_epoch, best_state = epoch, copy.deepcopy(tuned.state_dict())
    tuned.load_state_dict(best_state)
    tuned.freeze_rotation()
    return tuned.eval(), best_epoch, history[best_epoch], history


def _batches(
    shots: int, agreement: Agreement, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """One epoch's (shot rows, unlabelled rows) per step: shots in batches of 64 alone, or with
    β > 0 one step per 256 unlabelled inputs, each with the next 64 shots in a cycle (none when
    there are no shots)."""
    if agreement.weight == 0:
        return [(b, None) for b in torch.randperm(shots, generator=generator).split(64)]
    unlabelled = torch.randperm(len(agreement.logits), generator=generator).split(256)
    if shots == 0:
        return [(torch.zeros(0, dtype=torch.long), u) for u in unlabelled]
    order = torch.randperm(shots, generator=generator).repeat(
        math.ceil(64 * len(unlabelled) / shots)
    )
    return [(order[i * 64 : (i + 1) * 64], u) for i, u in enumerate(unlabelled)]


def _val_score(
    patch: LogitPatch, val_logits: torch.Tensor, val_labels: torch.Tensor, classes: int
) -> float:
    with torch.no_grad():
        return accuracy(patch(val_logits)[:, :classes], val_labels)
