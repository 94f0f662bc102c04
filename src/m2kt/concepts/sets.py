"""A set of extracted concepts: the rows of part C before they become a packet."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from m2kt.concepts.geometry import centroids, leave_one_out_confidence


@dataclass(frozen=True)
class Group:
    """A concept to read out: its name and the indices of its probes among the probe texts."""

    name: str
    id: str
    probes: list[int]


@dataclass(frozen=True)
class ConceptSet:
    """K concepts: embeddings [K, d] read at `layer`, a confidence each, optional evidence.

    `tokens` and `units` are what the attribution method found: per concept, the probe tokens
    and hidden units that carry it most, with their scores.
    """

    groups: list[Group]
    embeddings: torch.Tensor
    confidence: torch.Tensor
    layer: int
    method: str
    tokens: list[list[tuple[str, float]]] | None = None
    units: list[list[tuple[int, float]]] | None = field(default=None)


def labelled_probes(groups: list[Group]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every probe of `groups` in order [N] and the group it belongs to [N]: the rows and
    labels a readout or a centroid is fitted on."""
    index = torch.tensor([i for g in groups for i in g.probes], dtype=torch.long)
    labels = torch.tensor([k for k, g in enumerate(groups) for _ in g.probes], dtype=torch.long)
    return index, labels


def from_groups(vectors: torch.Tensor, groups: list[Group], layer: int, method: str) -> ConceptSet:
    """Each concept's embedding is the mean of its probes' vectors [N, d]; confidence is the
    leave-one-out consistency of those probes."""
    index, labels = labelled_probes(groups)
    rows = vectors[index]
    return ConceptSet(
        groups=groups,
        embeddings=centroids(rows, labels, len(groups)),
        confidence=leave_one_out_confidence(rows, labels, len(groups)),
        layer=layer,
        method=method,
    )
