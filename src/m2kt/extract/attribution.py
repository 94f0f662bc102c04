"""Gradient attribution: which probe tokens and hidden units carry a concept.

For each probe, integrated gradients (Sundararajan et al., 2017) of the concept's score, its
centred cosine with its own target minus the mean with the other concepts' targets, along a
straight path from zero token embeddings to the real ones (positions kept). Where probes are
mean-pooled, the probe's vector is its layer states pooled with the positive token attributions
as weights instead: the concept as read where the teacher carries it. A last-token reading
(decoders) has nothing to reweight and keeps its state; the tokens are then evidence only.
Unit attribution is gradient × activation on the pooled state. The targets are bottleneck
embeddings, so this method refines bottleneck probing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from m2kt.concepts.sets import ConceptSet, Group, from_groups
from m2kt.models.view import ModelView, Pooling
from m2kt.progress import Progress

NAME = "attribution"
TOP_TOKENS = 8
TOP_UNITS = 16


@dataclass(frozen=True)
class Attributions:
    """Per probe: attribution-pooled vector [N, d], normalised token scores, unit scores [N, d]."""

    vectors: torch.Tensor
    tokens: list[dict[str, float]]
    units: torch.Tensor


def attribute(
    view: ModelView,
    texts: list[str],
    labels: list[int],
    targets: torch.Tensor,
    layer: int,
    *,
    steps: int = 16,
    pooling: Pooling | None = None,
    truncate: bool = False,
    progress: Progress | None = None,
) -> Attributions:
    """Attribute each text's score for concept `labels[i]` against `targets` [K, d]."""
    centre = targets.mean(0, keepdim=True)
    directions = F.normalize(targets - centre, dim=-1)
    special = set(getattr(view.tokenizer, "all_special_ids", []) or [])
    vectors, tokens, units = [], [], []
    alphas = torch.cat([(torch.arange(steps) + 0.5) / steps, torch.ones(1)])
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        with torch.enable_grad():
            capture = view.run(
                [text] * (steps + 1),
                hidden_layers=[layer],
                embedding_scale=alphas,
                truncate=truncate,
            )
            hidden = capture.hidden[layer]
            pooled = view.pool(hidden, capture.mask, pooling).float()
            pooled.retain_grad()
            cosines = F.normalize(pooled - centre, dim=-1) @ directions.T
            others = torch.cat([cosines[:, :label], cosines[:, label + 1 :]], dim=1)
            score = cosines[:, label] - (others.mean(1) if others.shape[1] else 0.0)
            score.sum().backward()
        embedded = capture.token_embeddings
        assert embedded is not None and embedded.grad is not None and pooled.grad is not None
        per_token = (embedded[-1] * embedded.grad[:-1].mean(0)).sum(-1).detach()
        real = capture.mask[0].bool() & ~_is_special(capture.input_ids[0], special)
        weights = per_token.clamp(min=0) * real
        states = hidden[-1].detach().float()
        if (pooling or view.pooling) == "mean" and float(weights.sum()) > 0:
            vectors.append((weights.unsqueeze(1) * states).sum(0) / weights.sum())
        else:  # a last-token state has no tokens to reweight; nor has a probe with no credit
            vectors.append(pooled[-1].detach())
        tokens.append(_token_scores(view, capture.input_ids[0], weights))
        units.append((pooled[-1] * pooled.grad[-1]).abs().detach())
        if progress is not None:
            progress(i + 1, len(texts))
    return Attributions(torch.stack(vectors), tokens, torch.stack(units))


def attributed_concepts(attributions: Attributions, groups: list[Group], layer: int) -> ConceptSet:
    """Concepts from attribution-pooled vectors, with each concept's top tokens and units."""
    base = from_groups(attributions.vectors, groups, layer, NAME)
    tokens, units = [], []
    for group in groups:
        totals: dict[str, float] = {}
        for i in group.probes:
            for token, score in attributions.tokens[i].items():
                totals[token] = totals.get(token, 0.0) + score / len(group.probes)
        best = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOKENS]
        tokens.append([(token, round(score, 6)) for token, score in best])
        share = attributions.units[group.probes]
        share = (share / share.sum(1, keepdim=True).clamp(min=1e-12)).mean(0)
        top = share.argsort(descending=True)[:TOP_UNITS]
        units.append([(int(u), round(float(share[u]), 6)) for u in top])
    return ConceptSet(
        groups=base.groups,
        embeddings=base.embeddings,
        confidence=base.confidence,
        layer=layer,
        method=NAME,
        tokens=tokens,
        units=units,
    )


def _is_special(ids: torch.Tensor, special: set[int]) -> torch.Tensor:
    return torch.tensor([int(t) in special for t in ids], dtype=torch.bool)


def _token_scores(view: ModelView, ids: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    """Positive attributions per token string, normalised to sum to 1 over the probe."""
    total = float(weights.sum())
    if total <= 0:
        return {}
    pieces = view.tokenizer.convert_ids_to_tokens([int(t) for t in ids])
    scores: dict[str, float] = {}
    for piece, weight in zip(pieces, weights.tolist(), strict=True):
        if weight > 0:
            token = piece.replace("##", "").replace("Ġ", "").replace("▁", "").strip() or piece
            scores[token] = scores.get(token, 0.0) + weight / total
    return scores
