"""How a packet's concepts classify a state: one centroid each, a linear readout, or both.

A concept's mean state (its centroid) is the simplest reading, and where the teacher keeps a
concept in one compact region it is as good as anything. Where it does not (a decoder's
arithmetic operations share most of their tokens, and a few huge units dominate every cosine),
one vector per concept loses what a linear probe still finds. The linear readout gives each
concept its own direction and bias: shrinkage linear discriminant analysis on the extraction
probes, with features standardised, folded back to the raw space so that a reader needs no
statistics but `weight` [K, d] and `bias` [K] (part D of the packet format).

The form is chosen per concept: a concept keeps its centroid unless its linear row tells it
apart better on left-out extraction probes (a `mixed` readout, each concept scored by the
log-probability of its own form). Where no single layer holds a concept set well, the linear
readout may read the states of several layers side by side (`layers`). Which readout a packet
carries, and at which layer and pooling, is chosen by stratified cross-validation on the
extraction probes alone. Verification probes take no part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch.nn import functional as F

from m2kt.concepts.geometry import accuracy, centroids, concept_scores
from m2kt.packet import Packet, concept_readout
from m2kt.packet.manifest import CONCEPTS_TENSOR

Kind = Literal["centroid", "linear"]  # the form of one concept (and of a readout fitted whole)
Readouts = Literal["centroid", "linear", "mixed"]  # a packet's readout: one form, or per concept
KINDS: tuple[Kind, ...] = ("centroid", "linear")
SHRINKAGE = 0.8  # weight of the identity in the pooled covariance, tuned on the shipped specs
FOLDS = 6  # with six extraction probes a concept, leave one out of each concept


@dataclass(frozen=True)
class Readout:
    """A concept classifier. `linear`: logits = states @ weight.T + bias; `centroid`: the
    centred cosine with each concept's embedding (`m2kt.concepts.geometry.concept_scores`);
    `mixed`: concept k scored by the log-probability of its own form `forms[k]`, the centroid
    family's logits being `centroid_scale` times the cosines. `layers`, when given, are the
    layers whose states (one pooling), concatenated in that order, a linear readout reads."""

    kind: Readouts
    weight: torch.Tensor | None = None  # [K, d · max(1, len(layers))]
    bias: torch.Tensor | None = None  # [K]
    forms: tuple[Kind, ...] = ()  # mixed only
    centroid_scale: float = 1.0  # mixed only
    layers: tuple[int, ...] = ()

    def scores(self, states: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """[N, d] states (or the `layers`' states side by side) → [N, K] scores whose arg-max
        is the predicted concept; a mixed readout's are log-probabilities."""
        if self.weight is None or self.bias is None:
            return concept_scores(states, embeddings)
        logits = states.float() @ self.weight.T + self.bias
        if self.kind != "mixed":
            return logits
        centroid = self.centroid_scale * concept_scores(states.float(), embeddings)
        return mix(self.forms, logits, centroid)


def mix(forms: Sequence[Kind], linear: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """Concept k's log-probability under its own form's logits [N, K]: each family normalised
    on its own, so the two can share one arg-max whatever their offsets."""
    own = torch.tensor([form == "linear" for form in forms])
    return torch.where(own, F.log_softmax(linear, dim=-1), F.log_softmax(centroid, dim=-1))


def packet_readout(packet: Packet) -> Readout:
    """The readout a packet carries: part D when present, else its centroids."""
    found = concept_readout(packet)
    if found is None:
        return Readout("centroid")
    part = packet.manifest.readout
    assert part is not None
    return Readout(
        part.kind,
        *found,
        forms=tuple(part.forms or ()),
        centroid_scale=part.centroid_scale or 1.0,
        layers=tuple(part.layers or ()),
    )


def packet_scores(packet: Packet, states: torch.Tensor) -> torch.Tensor:
    """The teacher's concept scores [N, K] of states read at the packet's pooling: [N, d_T] at
    its layer, or for a readout over several layers those layers' states side by side. What
    `m2kt inspect`, the benchmark and a student's targets classify by."""
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
    directions = _shrunk_solve(residual, max(1, len(z) - classes), means.T)  # [d, K]
    bias = -0.5 * (means * directions.T).sum(1)
    weight = directions / std[:, None]
    return Readout(
        "linear", (temperature * weight.T).float(), (temperature * (bias - mean @ weight)).float()
    )


def _shrunk_solve(residual: torch.Tensor, dof: int, right: torch.Tensor) -> torch.Tensor:
    """Σ⁻¹ · right for the shrunk pooled covariance Σ = (1 − s) RᵀR / dof + s · v · I (v the
    mean variance), by the Woodbury identity through an N × N system where there are fewer
    probes than features (several layers side by side run to thousands)."""
    n, d = residual.shape
    scale = (residual.pow(2).sum() / dof / d).clamp(min=1e-12)
    a, b = SHRINKAGE * scale, (1 - SHRINKAGE) / dof
    if d <= n:
        covariance = b * residual.T @ residual + a * torch.eye(d, dtype=residual.dtype)
        return torch.linalg.solve(covariance, right)
    inner = torch.eye(n, dtype=residual.dtype) * (a / b) + residual @ residual.T
    return (right - residual.T @ torch.linalg.solve(inner, residual @ right)) / a


def folds(labels: torch.Tensor, count: int = FOLDS) -> list[torch.Tensor]:
    """Stratified folds: the i-th probe of each concept goes to fold i mod `count`."""
    seen: dict[int, int] = {}
    fold = torch.empty(len(labels), dtype=torch.long)
    for n, label in enumerate(labels.tolist()):
        fold[n] = seen.get(label, 0) % count
        seen[label] = seen.get(label, 0) + 1
    return [torch.nonzero(fold == f).flatten() for f in range(count)]


def left_out_scores(
    kind: Kind, states: torch.Tensor, labels: torch.Tensor, classes: int
) -> torch.Tensor:
    """[N, K] scores of each extraction probe by a `kind` readout fitted without its fold."""
    scores = torch.empty(len(labels), classes)
    for held in folds(labels):
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held] = False
        train, train_labels = states[keep], labels[keep]
        readout = fit_readout(kind, train, train_labels, classes)
        scores[held] = readout.scores(states[held], centroids(train.float(), train_labels, classes))
    return scores


def calibrate(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The factor t (on a log grid, 10⁻⁴ to 10³) whose softmax(t · scores) gives left-out
    probes the highest likelihood, each label smoothed by 1/N as if one more probe of unknown
    concept had been left out: N probes cannot show a readout is surer than about 1 − 1/N, and
    where they are all classified right the plain likelihood would push t without bound. With
    it, that likelihood's mean negative log (the calibrated left-out loss).

    Discriminant logits fitted on a few probes in hundreds of dimensions are far too sure of
    themselves (±200 on e1); a student matching them would learn one-hot targets. Cosines
    (within ±1) need factors above 10."""
    grid = torch.logspace(-4, 3, 141)
    losses = [left_out_loss(t * scores, labels) for t in grid]
    best = min(range(len(grid)), key=lambda i: (losses[i], i))
    return float(grid[best]), losses[best]


def left_out_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean negative log-likelihood of left-out probes' concepts, labels smoothed by 1/N
    (`calibrate` says why): what readouts and readings are compared on."""
    smoothing = 1 / max(1, len(labels))
    return float(F.cross_entropy(logits, labels, label_smoothing=smoothing))


def f1_by_concept(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """[K] F1 of each concept's predictions: how well it is told apart, both ways."""
    hit = torch.zeros(classes).index_add_(0, labels, (predicted == labels).float())
    said = torch.bincount(predicted, minlength=classes).float()
    true = torch.bincount(labels, minlength=classes).float()
    return 2 * hit / (said + true).clamp(min=1)


@dataclass(frozen=True)
class Fit:
    """One readout's fit on left-out extraction probes: accuracy and calibrated loss."""

    accuracy: float
    loss: float
    temperature: float = 1.0


NOT_TRIED = Fit(-1.0, float("inf"))


@dataclass(frozen=True)
class ReadingScore:
    """How each readout at one reading classifies left-out extraction probes.

    The readings and readouts are compared on the calibrated left-out loss (the negative log
    likelihood of the right concept, `calibrate`): it tracks held-out accuracy better than the
    accuracy itself, which on 36-48 left-out probes moves in steps of 2-3 points and ties at
    several layers. `forms` are each concept's form in the mixed readout."""

    centroid: Fit = NOT_TRIED
    linear: Fit = NOT_TRIED
    mixed: Fit = NOT_TRIED
    forms: tuple[Kind, ...] = ()

    @property
    def fits(self) -> dict[Readouts, Fit]:
        """Each readout's fit, in the order ties are broken (fewest linear rows first)."""
        return {"centroid": self.centroid, "mixed": self.mixed, "linear": self.linear}

    @property
    def kind(self) -> Readouts:
        """The readout with the lowest loss; on a tie the fewer linear rows (a single vector a
        concept stays the default where it is as good)."""
        fits = self.fits
        return min(fits, key=lambda k: fits[k].loss)

    @property
    def chosen(self) -> Fit:
        """The fit of `kind`, the readout this reading would carry."""
        return self.fits[self.kind]


def score_reading(
    states: torch.Tensor, labels: torch.Tensor, classes: int, kinds: Sequence[Kind] = KINDS
) -> ReadingScore:
    """Each readout of `kinds` fitted without each fold and judged on it.

    With both kinds allowed, each concept takes the linear form where its left-out F1 is
    strictly higher with the linear readout than with the centroids; when that leaves some
    concepts in each form, the mixed readout is judged on the same left-out probes."""
    left_out = {k: left_out_scores(k, states, labels, classes) for k in KINDS if k in kinds}
    fits = {}
    for kind, scores in left_out.items():
        temperature, loss = calibrate(scores, labels)
        fits[kind] = Fit(accuracy(scores, labels), loss, temperature)
    found = ReadingScore(fits.get("centroid", NOT_TRIED), fits.get("linear", NOT_TRIED))
    if len(left_out) < 2:
        return found
    f1 = {k: f1_by_concept(s.argmax(1), labels, classes) for k, s in left_out.items()}
    forms: tuple[Kind, ...] = tuple(
        "linear" if f1["linear"][k] > f1["centroid"][k] else "centroid" for k in range(classes)
    )
    if len(set(forms)) < 2:
        return found
    combined = mix(
        forms,
        fits["linear"].temperature * left_out["linear"],
        fits["centroid"].temperature * left_out["centroid"],
    )
    loss = left_out_loss(combined, labels)
    return replace(found, mixed=Fit(accuracy(combined, labels), loss), forms=forms)
