"""The student's own anchor of a concept: its probes' mean, pulled toward its reading of the name.

A handful of probes is a noisy estimate of where a concept sits in the student's space, and
the probes of a spec often share a style (scenes someone lives through) that new inputs do
not; the concept's name is one more reading of it that the student gets for free. So the
anchor is a blend, normalize((1 - w) · mean of the unit probe states + w · the unit name
state), with w chosen per packet by leave-one-out on the extraction probes: each probe is
assigned to the nearest blended anchor, its own class's mean computed without it. The
verification probes play no part (they judge the result). On the extraction probes of the
shipped `topics` spec and of the efficiency suite's fresh specs, read by e2, a blend beat both
ends (topics 0.90 → 0.93 leave-one-out; emotions 0.65 → 0.80; animals 0.58 → 0.64-0.67):
docs/ingest.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # ties go to the smaller weight: the probes are evidence


@dataclass(frozen=True)
class NamePrior:
    """The student's own anchors, blended with its reading of the names, and why that blend."""

    anchors: torch.Tensor  # [K, d] unit: the blended anchors of all probes
    weight: float  # the chosen w
    scores: dict[float, float]  # leave-one-out accuracy of each w on the extraction probes

    def as_dict(self) -> dict[str, object]:
        """The weight and its evidence, for the ingestion report (JSON keys are strings)."""
        return {"weight": self.weight, "leave_one_out": {str(w): s for w, s in self.scores.items()}}


def blend_with_names(states: torch.Tensor, labels: torch.Tensor, names: torch.Tensor) -> NamePrior:
    """`states` [N, d] the student's probe states, `labels` [N] their concepts, `names` [K, d]
    its reading of the concept names; every concept needs at least one probe."""
    k = len(names)
    unit = F.normalize(states.float(), dim=-1)
    named = F.normalize(names.float(), dim=-1)
    onehot = F.one_hot(labels, k).float()  # [N, K]
    sums = onehot.T @ unit  # [K, d]
    counts = onehot.sum(0)  # [K]
    # each probe's view of the class means: its own class without it (when it has company)
    alone = counts[labels] <= 1
    own_sum = sums[labels] - unit * (~alone)[:, None]
    own_count = (counts[labels] - (~alone).float())[:, None]
    scores: dict[float, float] = {}
    blended: dict[float, torch.Tensor] = {}
    for w in WEIGHTS:
        anchors = blended[w] = _blend(sums / counts[:, None], named, w)  # [K, d]
        mine = _blend(own_sum / own_count, named[labels], w)  # [N, d]
        cosines = unit @ anchors.T
        cosines[torch.arange(len(unit)), labels] = (unit * mine).sum(-1)
        scores[w] = float((cosines.argmax(-1) == labels).float().mean())
    best = max(WEIGHTS, key=lambda w: (scores[w], -w))
    return NamePrior(blended[best], best, scores)


def _blend(means: torch.Tensor, names: torch.Tensor, w: float) -> torch.Tensor:
    return F.normalize((1 - w) * F.normalize(means, dim=-1) + w * names, dim=-1)
