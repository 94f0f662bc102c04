"""Patch+: tune a transferred patch on a few labels, choosing the epoch on a validation split."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch.nn import functional as F

from m2kt.concepts.geometry import accuracy
from m2kt.errors import UsageError
from m2kt.patch.adapter import LogitPatch


def tune_patch(
    patch: LogitPatch,
    logits: torch.Tensor,
    labels: torch.Tensor,
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    epochs: int = 50,
    lr: float | None = None,
    seed: int = 0,
    tunes: Literal["all", "bias"] = "all",
) -> tuple[LogitPatch, int]:
    """Cross-entropy on the task logits of (few) labelled target-model logits.

    `tunes`: "all" the patch's weights (lr 1e-4), or "bias" only the bias of its MLP's last
    layer (K values, lr 1e-2): a shift of the patch's output that a few labels can fit without
    rewriting what the patch carried. Returns the patch of the epoch (0 = untouched, so the result
    never scores below the plain patch on validation) with the best validation accuracy, and
    that epoch. The test split is never seen.
    """
    classes = int(max(labels.max(), val_labels.max())) + 1
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
        with torch.no_grad():
            return accuracy(tuned(val_logits)[:, :classes], val_labels)

    best_score, best_epoch, best_state = score(), 0, copy.deepcopy(tuned.state_dict())
    for epoch in range(1, epochs + 1):
        tuned.train()
        for batch in torch.randperm(len(labels), generator=generator).split(64):
            loss = F.cross_entropy(tuned(logits[batch])[:, :classes], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        tuned.eval()
        current = score()
        if current > best_score:
            best_score, best_epoch, best_state = current, epoch, copy.deepcopy(tuned.state_dict())
    tuned.load_state_dict(best_state)
    tuned.freeze_rotation()
    return tuned.eval(), best_epoch
