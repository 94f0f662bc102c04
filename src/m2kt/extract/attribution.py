"""Gradient attribution: which probe tokens and hidden units carry a concept.

For each probe, integrated gradients (Sundararajan et al., 2017) of the concept's score, its
centred cosine with its own target minus the mean with the other concepts' targets, along a
straight path from a baseline to the real token embeddings (positions kept). The baseline is the
probe with every token but the special ones replaced by the tokenizer's mask token (its pad
token where it has no mask, zeros where it has neither): an input that says nothing, where a
zero embedding is no token at all and credits frequent words for the model's reaction to it.
Completeness is checked per probe: the attributions must sum to the score's change from the
baseline to the probe; the relative gap, averaged per concept, is reported (`TOLERANCE`).

Where probes are mean-pooled, the probe's vector is its layer states pooled with the positive
token attributions as weights instead: the concept as read where the teacher carries it. A
last-token reading (decoders) has nothing to reweight and keeps its state; the tokens are then
evidence only. A concept's tokens are those whose share of its attribution exceeds their mean
share in the other concepts. Unit attribution is gradient × activation on the pooled state. The
targets are bottleneck embeddings, so this method refines bottleneck probing.
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
TOLERANCE = 0.1  # a concept whose attributions miss the score change by more gets a note


@dataclass(frozen=True)
class Attributions:
    """Per probe: attribution-pooled vector [N, d], normalised token scores, unit scores [N, d],
    the score's change from the baseline to the probe [N], and the completeness gap [N]:
    |Σ attributions − change| / |change|."""

    vectors: torch.Tensor
    tokens: list[dict[str, float]]
    units: torch.Tensor
    change: torch.Tensor
    completeness: torch.Tensor
    baseline: str  # the token the baseline is made of, or "zeros"


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
    baseline_id, baseline_name = baseline_token(view)
    vectors, tokens, units, changes, gaps = [], [], [], [], []
    # the baseline itself, the midpoints of `steps` intervals, the probe
    alphas = torch.cat([torch.zeros(1), (torch.arange(steps) + 0.5) / steps, torch.ones(1)])
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        baseline = _baseline(view, text, baseline_id, special, truncate)
        with torch.enable_grad():
            capture = view.run(
                [text] * (steps + 2),
                hidden_layers=[layer],
                embedding_scale=alphas,
                embedding_baseline=baseline,
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
        moved = embedded[-1] - embedded[0]  # probe − baseline, zero at special tokens
        per_token = (moved * embedded.grad[1:-1].mean(0)).sum(-1).detach()
        change = float((score[-1] - score[0]).detach())
        changes.append(change)
        gaps.append(abs(float(per_token.sum()) - change) / max(abs(change), 1e-6))
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
    return Attributions(
        torch.stack(vectors),
        tokens,
        torch.stack(units),
        torch.tensor(changes),
        torch.tensor(gaps),
        baseline_name,
    )


def baseline_token(view: ModelView) -> tuple[int | None, str]:
    """The token a baseline is made of: mask, else pad, else none (zero embeddings)."""
    for name in ("mask_token", "pad_token"):
        token_id = getattr(view.tokenizer, f"{name}_id", None)
        if token_id is not None:
            return int(token_id), str(getattr(view.tokenizer, name))
    return None, "zeros"


def completeness_by_concept(attributions: Attributions, groups: list[Group]) -> list[float]:
    """Each concept's mean completeness gap over its probes (0 is exact)."""
    return [round(float(attributions.completeness[g.probes].mean()), 6) for g in groups]


def _baseline(
    view: ModelView, text: str, token_id: int | None, special: set[int], truncate: bool
) -> torch.Tensor | None:
    """[T, d] token embeddings of `text` with its non-special tokens replaced by `token_id`."""
    if token_id is None or view.token_embedding is None:
        return None
    ids = view.tokenize([text], truncate)["input_ids"][0]
    replaced = torch.where(_is_special(ids, special), ids, torch.full_like(ids, token_id))
    with torch.no_grad():
        return view.token_embedding(replaced.to(view.device)).detach()


def attributed_concepts(attributions: Attributions, groups: list[Group], layer: int) -> ConceptSet:
    """Concepts from attribution-pooled vectors, with each concept's top tokens and units."""
    base = from_groups(attributions.vectors, groups, layer, NAME)
    shares: list[dict[str, float]] = []
    for group in groups:
        totals: dict[str, float] = {}
        for i in group.probes:
            for token, score in attributions.tokens[i].items():
                totals[token] = totals.get(token, 0.0) + score / len(group.probes)
        shares.append(totals)
    tokens, units = [], []
    for k, group in enumerate(groups):
        # A token's share here minus its mean share in the other concepts: words that carry
        # every concept alike ("the", ".") are the model reading a sentence, not this concept.
        others = [shares[j] for j in range(len(groups)) if j != k]
        contrast = {
            token: share - sum(o.get(token, 0.0) for o in others) / max(1, len(others))
            for token, share in shares[k].items()
        }
        kept = [(t, v) for t, v in contrast.items() if v > 0]
        best = sorted(kept, key=lambda item: (-item[1], item[0]))[:TOP_TOKENS]
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
