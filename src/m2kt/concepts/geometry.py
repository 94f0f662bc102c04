"""How well concept embeddings tell concepts apart: the measurements every method shares.

All comparisons are cosines after subtracting the mean of the concept embeddings. Pooled states
of one model share a large common direction (and decoder LMs a few huge outlier units); without
centering, every pair of concepts looks alike. The centre is computed from the embeddings alone,
so a consumer of the packet can reproduce it.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def centroids(vectors: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Mean vector of each class: [classes, d]; a class without rows gets zeros."""
    sums = torch.zeros(classes, vectors.shape[1]).index_add_(0, labels, vectors)
    counts = torch.bincount(labels, minlength=classes).clamp(min=1).unsqueeze(1)
    return sums / counts


def concept_scores(vectors: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Centred cosine of each vector [N, d] with each concept embedding [K, d] → [N, K]."""
    centre = embeddings.mean(dim=0, keepdim=True)
    return F.normalize(vectors - centre, dim=-1) @ F.normalize(embeddings - centre, dim=-1).T


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows of `scores` [N, K] whose highest score is at their label [N]."""
    return float((scores.argmax(dim=-1) == labels).float().mean())


LEAVE_ONE_OUT_ROWS = 256  # rows of vectors scored at once by `leave_one_out_hits`


def leave_one_out_hits(vectors: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Whether each vector [N, d] lands nearest its own class's mean (centred cosine, as
    `concept_scores`) when that mean is recomputed without it: [N] booleans.

    Classes without vectors take no part; a vector alone in its class has nothing to be near
    and counts as a miss.
    """
    vectors = vectors.float()
    sums = torch.zeros(classes, vectors.shape[1]).index_add_(0, labels, vectors)
    counts = torch.bincount(labels, minlength=classes).float()
    full = sums / counts.clamp(min=1).unsqueeze(1)
    present = (counts > 0).float()
    own = counts[labels] - 1
    # Each vector sees its own set of means; a block of rows at a time keeps [rows, K, d] small
    # however many probes a spec has.
    hits = []
    for start in range(0, len(vectors), LEAVE_ONE_OUT_ROWS):
        block = slice(start, start + LEAVE_ONE_OUT_ROWS)
        v, y, alone = vectors[block], labels[block], own[block]
        means = full.unsqueeze(0).repeat(len(v), 1, 1)
        means[torch.arange(len(v)), y] = (sums[y] - v) / alone.clamp(min=1).unsqueeze(1)
        centre = (means * present[None, :, None]).sum(1, keepdim=True) / present.sum()
        scores = torch.einsum(
            "nd,nkd->nk",
            F.normalize(v - centre[:, 0], dim=-1),
            F.normalize(means - centre, dim=-1),
        )
        scores[:, counts == 0] = float("-inf")
        hits.append((scores.argmax(1) == y) & (alone > 0))
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def leave_one_out_confidence(
    vectors: torch.Tensor, labels: torch.Tensor, classes: int
) -> torch.Tensor:
    """Per concept, the share of its probes that land nearest their own concept's embedding
    when that embedding is recomputed without them: probe consistency in [0, 1].

    A concept with a single probe has nothing to be consistent with and scores 0.
    """
    hits = leave_one_out_hits(vectors, labels, classes).float()
    counts = torch.bincount(labels, minlength=classes).clamp(min=1)
    return torch.zeros(classes).index_add_(0, labels, hits) / counts


def linear_probe_accuracy(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    classes: int,
    weight_decay: float = 1e-2,
) -> float:
    """Accuracy of a logistic-regression probe trained on `train` rows, tested on `test` rows.

    Features are standardised with the training rows' statistics; L-BFGS, full batch, so the
    result is deterministic.
    """
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    x, x_test = (train - mean) / std, (test - mean) / std
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, train_labels)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (x_test @ weight + bias).argmax(1)
    return float((predicted == test_labels).float().mean())
