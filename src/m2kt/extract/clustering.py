"""Clustering: discover concepts in the teacher's activations instead of naming them first.

Spherical k-means (k-means++ start, seeded) on the centred, unit-length pooled states of all
probe inputs; each cluster becomes a concept named after the probe nearest its centre. Its
confidence is the share of its members that are closer to their own cluster than to the next
one (a positive silhouette).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from m2kt.concepts.geometry import centroids
from m2kt.concepts.sets import ConceptSet, Group, labelled_probes
from m2kt.errors import UsageError

NAME = "clustering"
_ITERATIONS = 100


def cluster(
    vectors: torch.Tensor,
    texts: list[str],
    indices: list[int],
    clusters: int,
    layer: int,
    seed: int = 0,
) -> ConceptSet:
    """Cluster the rows `indices` of `vectors` [N, d] into `clusters` concepts."""
    if not 2 <= clusters <= len(indices):
        raise UsageError(
            f"cannot make {clusters} clusters from {len(indices)} probe inputs",
            "pass --clusters between 2 and the number of probes, or add probes or texts",
        )
    points = vectors[indices]
    unit = F.normalize(points - points.mean(0, keepdim=True), dim=-1)
    assignment = _spherical_kmeans(unit, clusters, seed)
    silhouette = _silhouette(unit, assignment, clusters)
    groups = []
    order = sorted(range(clusters), key=lambda c: int(torch.nonzero(assignment == c)[0]))
    for rank, c in enumerate(order):
        members = torch.nonzero(assignment == c).flatten()
        centre = F.normalize(unit[members].mean(0), dim=0)
        closeness = unit[members] @ centre
        ranked = [int(members[i]) for i in closeness.argsort(descending=True)]
        nearest = texts[indices[ranked[0]]]
        label = nearest if len(nearest) <= 48 else nearest[:45] + "..."
        groups.append(
            Group(f"cluster {rank}: {label}", f"cluster-{rank}", [indices[i] for i in ranked])
        )
    index, labels = labelled_probes(groups)
    confidence = torch.tensor(
        [float((silhouette[assignment == c] > 0).float().mean()) for c in order]
    )
    return ConceptSet(
        groups=groups,
        embeddings=centroids(vectors[index], labels, clusters),
        confidence=confidence,
        layer=layer,
        method=NAME,
    )


def _spherical_kmeans(unit: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(unit.shape[0], (1,), generator=generator))
    centres = [unit[first]]
    for _ in range(1, k):
        distance = (1 - unit @ torch.stack(centres).T).min(dim=1).values.clamp(min=0)
        weights = distance**2 if float(distance.sum()) > 0 else torch.ones_like(distance)
        centres.append(unit[int(torch.multinomial(weights, 1, generator=generator))])
    centre = torch.stack(centres)
    assignment = torch.full((unit.shape[0],), -1)
    for _ in range(_ITERATIONS):
        new = (unit @ centre.T).argmax(dim=1)
        if torch.equal(new, assignment):
            break
        assignment = new
        for c in range(k):
            members = unit[assignment == c]
            if len(members) == 0:  # re-seed an empty cluster at the worst-served point
                worst = int((unit * centre[assignment]).sum(1).argmin())
                centre[c] = unit[worst]
                assignment[worst] = c
            else:
                centre[c] = F.normalize(members.mean(0), dim=0)
    return assignment


def _silhouette(unit: torch.Tensor, assignment: torch.Tensor, k: int) -> torch.Tensor:
    distance = 1 - unit @ unit.T
    result = torch.zeros(unit.shape[0])
    for i in range(unit.shape[0]):
        own = assignment == assignment[i]
        own[i] = False
        if not own.any():
            continue
        a = distance[i, own].mean()
        others = [distance[i, assignment == c].mean() for c in range(k) if c != assignment[i]]
        others = [o for o in others if not torch.isnan(o)]
        if not others:
            continue
        b = torch.stack(others).min()
        result[i] = (b - a) / torch.maximum(a, b).clamp(min=1e-12)
    return result
