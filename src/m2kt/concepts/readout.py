"""How a packet's concepts classify a state: one centroid each, or a linear readout.

A concept's mean state (its centroid) is the simplest reading, and where the teacher keeps a
concept in one compact region it is as good as anything. Where it does not (a decoder's
arithmetic operations share most of their tokens, and a few huge units dominate every cosine),
one vector per concept loses what a linear probe still finds. The linear readout gives each
concept its own direction and bias: shrinkage linear discriminant analysis on the extraction
probes, with features standardised, folded back to the raw space so that a reader needs no
statistics but `weight` [K, d] and `bias` [K] (part D of the packet format).

Which reading a packet carries, and at which layer and pooling, is chosen by stratified
cross-validation on the extraction probes alone: the centroid stays unless the linear readout
classifies the left-out extraction probes better. Verification probes take no part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from m2kt.concepts.geometry import accuracy, centroids, concept_scores
from m2kt.packet import Packet, concept_readout
from m2kt.packet.manifest import CONCEPTS_TENSOR

Kind = Literal["centroid", "linear"]
KINDS: tuple[Kind, ...] = ("centroid", "linear")
SHRINKAGE = 0.5  # weight of the identity in the pooled covariance, tuned on the shipped specs
FOLDS = 6  # with six extraction probes a concept, leave one out of each concept


@dataclass(frozen=True)
class Readout:
    """A concept classifier. `linear`: logits = states @ weight.T + bias; `centroid`: the
    centred cosine with each concept's embedding (`m2kt.concepts.geometry.concept_scores`)."""

    kind: Kind
    weight: torch.Tensor | None = None  # [K, d]
    bias: torch.Tensor | None = None  # [K]

    def scores(self, states: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """[N, d] states → [N, K] scores whose arg-max is the predicted concept."""
        if self.weight is None or self.bias is None:
            return concept_scores(states, embeddings)
        return states.float() @ self.weight.T + self.bias


def packet_readout(packet: Packet) -> Readout:
    """The readout a packet carries: part D when present, else its centroids."""
    found = concept_readout(packet)
    return Readout("centroid") if found is None else Readout("linear", *found)


def packet_scores(packet: Packet, states: torch.Tensor) -> torch.Tensor:
    """The teacher's concept scores [N, K] of states [N, d_T] read at the packet's layer and
    pooling: what `m2kt inspect`, the benchmark and a student's targets classify by."""
    embeddings = packet.tensors[CONCEPTS_TENSOR].float()
    return packet_readout(packet).scores(states.float(), embeddings)


def fit_readout(
    kind: Kind, states: torch.Tensor, labels: torch.Tensor, classes: int, temperature: float = 1.0
) -> Readout:
    """A readout of `kind` fitted on extraction probes' states [N, d] with labels [N]; a linear
    one's logits are multiplied by `temperature` (its arg-max does not change)."""
    if kind == "centroid":
        return Readout("centroid")
    x = states.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    means = centroids(z.float(), labels, classes).double()
    residual = z - means[labels]
    covariance = residual.T @ residual / max(1, len(z) - classes)
    scale = covariance.diagonal().mean().clamp(min=1e-12)
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * torch.eye(z.shape[1]).double()
    directions = torch.linalg.solve(covariance, means.T)  # [d, K] in standardised units
    bias = -0.5 * (means * directions.T).sum(1)
    weight = directions / std[:, None]
    return Readout(
        "linear", (temperature * weight.T).float(), (temperature * (bias - mean @ weight)).float()
    )


def folds(labels: torch.Tensor, count: int = FOLDS) -> list[torch.Tensor]:
    """Stratified folds: the i-th probe of each concept goes to fold i mod `count`."""
    seen: dict[int, int] = {}
    fold = torch.empty(len(labels), dtype=torch.long)
    for n, label in enumerate(labels.tolist()):
        fold[n] = seen.get(label, 0) % count
        seen[label] = seen.get(label, 0) + 1
    return [torch.nonzero(fold == f).flatten() for f in range(count)]


def cross_validated(
    kind: Kind, states: torch.Tensor, labels: torch.Tensor, classes: int
) -> tuple[float, float, float]:
    """A `kind` readout fitted without each fold, judged on it: the share of extraction probes
    classified right, the mean margin (own concept's score minus the best other's), and the
    temperature that makes its softmax honest on the left-out probes (`calibrate`)."""
    scores = torch.empty(len(labels), classes)
    for held in folds(labels):
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held] = False
        train, train_labels = states[keep], labels[keep]
        readout = fit_readout(kind, train, train_labels, classes)
        scores[held] = readout.scores(states[held], centroids(train.float(), train_labels, classes))
    own = scores.gather(1, labels[:, None])
    others = scores.scatter(1, labels[:, None], float("-inf")).max(1, keepdim=True).values
    margin = float((own - others).mean()) if len(labels) else 0.0
    return accuracy(scores, labels), margin, calibrate(scores, labels)


def calibrate(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The factor t (on a log grid, 10⁻⁴ to 10) whose softmax(t · scores) gives left-out probes
    the highest likelihood, each label smoothed by 1/N as if one more probe of unknown concept
    had been left out: N probes cannot show a readout is surer than about 1 − 1/N, and where
    they are all classified right the plain likelihood would push t without bound.
    Discriminant logits fitted on a few probes in hundreds of dimensions are far too sure of
    themselves (±200 on e1); a student matching them would learn one-hot targets."""
    grid = torch.logspace(-4, 1, 101)
    smoothing = 1 / max(1, len(labels))
    losses = [float(F.cross_entropy(t * scores, labels, label_smoothing=smoothing)) for t in grid]
    return float(grid[min(range(len(grid)), key=lambda i: (losses[i], i))])


@dataclass(frozen=True)
class ReadingScore:
    """Cross-validated accuracy of each readout kind at one (pooling, layer), and a mean margin
    that breaks ties between readings of equal accuracy (a few probes a concept often classify
    every left-out probe right at several layers)."""

    centroid: float
    linear: float
    margin: float = 0.0
    temperature: float = 1.0  # the linear readout's calibration factor

    @property
    def kind(self) -> Kind:
        """The centroid unless the linear readout is strictly better on left-out probes."""
        return "linear" if self.linear > self.centroid else "centroid"

    @property
    def best(self) -> float:
        return max(self.centroid, self.linear)


def score_reading(
    states: torch.Tensor, labels: torch.Tensor, classes: int, kinds: Sequence[Kind] = KINDS
) -> ReadingScore:
    """Both readouts' cross-validated accuracy (a kind not in `kinds` scores -1), the margin
    that breaks ties (the centroids', cosines on one scale at every layer, where they compete)
    and the linear readout's calibration."""
    found = {
        k: cross_validated(k, states, labels, classes) if k in kinds else (-1.0, 0.0, 1.0)
        for k in KINDS
    }
    margin = found["centroid" if "centroid" in kinds else "linear"][1]
    return ReadingScore(found["centroid"][0], found["linear"][0], margin, found["linear"][2])
