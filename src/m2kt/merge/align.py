"""Bring one teacher's concepts into another teacher's space, to compare what they mean.

The pairs a map is fitted on must mean the same thing by construction, not by name: they are
the texts both teachers read, extraction probes (part P) and anchor texts (part N). Names are
what the comparison then judges, so they take no part in the fit. The map is the linear
Concept Alignment Layer's closed form (ridge least squares on unit vectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from m2kt.align import CALConfig, ConceptAlignmentLayer
from m2kt.packet import Packet, text_states
from m2kt.packet.manifest import CONCEPTS_TENSOR

MIN_ANCHORS = 4  # fewer shared probe texts than this leave a map too loose to judge meaning
RIDGE = 0.1


@dataclass(frozen=True)
class Alignment:
    """A map from `other`'s space into `reference`'s, and what it was fitted on."""

    cal: ConceptAlignmentLayer | None  # None: too few shared probe texts to fit one
    anchors: int
    fit_cosine: float | None  # mean cosine of mapped anchors with their targets
    center: torch.Tensor | None = None  # mean of the anchors' unit states, reference space

    def map(self, vectors: torch.Tensor) -> torch.Tensor:
        assert self.cal is not None
        with torch.no_grad():
            return self.cal(F.normalize(vectors.float(), dim=-1))


def align(reference: Packet, other: Packet) -> Alignment:
    """Fit the map other → reference on the texts (probes, anchors) both hold a state for."""
    mine, theirs = text_states(reference), text_states(other)
    shared = [text for text in theirs if text in mine]
    if len(shared) < MIN_ANCHORS:
        return Alignment(None, len(shared), None)
    source = F.normalize(torch.stack([theirs[t] for t in shared]), dim=-1)
    target = F.normalize(torch.stack([mine[t] for t in shared]), dim=-1)
    config = CALConfig(kind="linear", d_in=source.shape[1], d_out=target.shape[1])
    cal = ConceptAlignmentLayer.fit(config, source, target, ridge=RIDGE)
    alignment = Alignment(cal, len(shared), None)
    fit = F.cosine_similarity(alignment.map(source), target, dim=-1).mean()
    return Alignment(cal, len(shared), round(float(fit), 4), target.mean(0))


def similarity(reference: Packet, other: Packet, alignment: Alignment) -> torch.Tensor:
    """Cosine [K_ref, K_other] between reference concepts and mapped `other` concepts.

    Both are centred on the anchors' mean first: a model's states share one dominant direction
    (a narrow cone), under which unrelated concepts look alike by raw cosine.
    """
    assert alignment.center is not None
    mapped = alignment.map(other.tensors[CONCEPTS_TENSOR]) - alignment.center
    ref = F.normalize(reference.tensors[CONCEPTS_TENSOR].float(), dim=-1) - alignment.center
    return F.normalize(ref, dim=-1) @ F.normalize(mapped, dim=-1).T
