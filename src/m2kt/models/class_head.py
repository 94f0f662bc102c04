"""Classifiers made of class names: logits are scaled cosines to label-prompt embeddings.

This is how CLIP-style models classify, and how a sentence encoder classifies text zero-shot:
each class is the mean embedding of its name in a few prompt templates. Fine-tuning such a head
on labels is the "expensive adaptation" a model patch captures and carries elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.models.text_encoder import TextEncoder

ZERO_SHOT_SCALE = 50.0


@dataclass(frozen=True)
class ClassNameHead:
    """`weights` [C, d] unit rows, one per class name; logits = scale · x · weightsᵀ."""

    class_names: tuple[str, ...]
    weights: torch.Tensor
    scale: float = ZERO_SHOT_SCALE

    @classmethod
    def from_names(
        cls, encoder: TextEncoder, class_names: Sequence[str], templates: Sequence[str]
    ) -> ClassNameHead:
        """Embed every name in every template; a class is the normalised mean of its prompts."""
        if not templates or any("{}" not in t for t in templates):
            raise UsageError("every prompt template needs a {} where the class name goes")
        if len(set(class_names)) != len(class_names):
            raise UsageError("class names must be unique")
        prompts = [t.format(name) for name in class_names for t in templates]
        embedded = encoder.encode(prompts).view(len(class_names), len(templates), -1)
        weights = F.normalize(embedded.mean(dim=1), dim=-1)
        return cls(class_names=tuple(class_names), weights=weights)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * embeddings @ self.weights.T

    def first(self, classes: int) -> ClassNameHead:
        """The head restricted to its first `classes` names (the task's, before auxiliaries)."""
        return ClassNameHead(self.class_names[:classes], self.weights[:classes], self.scale)


def fine_tune_head(
    head: ClassNameHead,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> ClassNameHead:
    """Tune the class rows and the scale on labelled embeddings (cross-entropy, full batch).

    The rows start at the zero-shot prompts, so the tuned head stays a class-name classifier
    whose logits remain comparable with the zero-shot ones.
    """
    classes = len(head.class_names)
    if labels.numel() == 0 or int(labels.max()) >= classes or int(labels.min()) < 0:
        raise UsageError(f"labels must lie in [0, {classes}) and there must be some")
    generator = torch.Generator().manual_seed(seed)
    weights = head.weights.clone().requires_grad_(True)
    log_scale = torch.tensor(float(torch.log(torch.tensor(head.scale))), requires_grad=True)
    optimizer = torch.optim.AdamW([weights, log_scale], lr=lr, weight_decay=0.0)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for batch in order.split(256):
            logits = log_scale.exp() * embeddings[batch] @ F.normalize(weights, dim=-1).T
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return ClassNameHead(
        class_names=head.class_names,
        weights=F.normalize(weights.detach(), dim=-1),
        scale=float(log_scale.detach().exp()),
    )
