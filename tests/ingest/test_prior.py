"""The student's own anchors, pulled toward its reading of the names by leave-one-out."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from m2kt.ingest.prior import WEIGHTS, blend_with_names


def _loop_scores(states: torch.Tensor, labels: torch.Tensor, names: torch.Tensor) -> list[float]:
    """Leave-one-out the slow way: each probe against anchors rebuilt without it."""
    unit, named, k = F.normalize(states, dim=-1), F.normalize(names, dim=-1), len(names)
    found = []
    for w in WEIGHTS:
        hits = 0
        for i in range(len(unit)):
            keep = torch.ones(len(unit), dtype=torch.bool)
            if int((labels == labels[i]).sum()) > 1:
                keep[i] = False
            means = torch.stack([unit[keep & (labels == c)].mean(0) for c in range(k)])
            anchors = F.normalize((1 - w) * F.normalize(means, dim=-1) + w * named, dim=-1)
            hits += int((anchors @ unit[i]).argmax() == labels[i])
        found.append(hits / len(unit))
    return found


def test_leave_one_out_matches_the_slow_way() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        states = torch.randn(23, 6, generator=generator)
        labels = torch.arange(23) % 4
        labels[22] = 3  # uneven classes
        names = torch.randn(4, 6, generator=generator)
        prior = blend_with_names(states, labels, names)
        assert list(prior.scores.values()) == pytest.approx(_loop_scores(states, labels, names))
        assert prior.scores[prior.weight] == max(prior.scores.values())


def test_names_pull_the_anchors_where_the_probes_mislead() -> None:
    """Each class's two probes straddle its name along a direction both classes share: left
    out in turn, a probe finds its classmate farther than the other class's mean, so the
    probes alone get every one wrong and the names get every one right."""
    names = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    states = torch.tensor([[1.0, 0.6, 1.0], [1.0, 0.6, -1.0], [0.6, 1.0, 1.0], [0.6, 1.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    prior = blend_with_names(states, labels, names)
    assert prior.scores[0.0] == 0.0 and prior.scores[1.0] == 1.0
    assert prior.weight == min(w for w, s in prior.scores.items() if s == 1.0)
    unit = F.normalize(states, dim=-1)
    mean = F.normalize(unit[:2].mean(0), dim=0)
    expected = F.normalize((1 - prior.weight) * mean + prior.weight * names[0], dim=0)
    assert torch.allclose(prior.anchors[0], expected, atol=1e-6)


def test_ties_keep_the_probes() -> None:
    """Probes that already sit on their names: every weight scores alike, none is taken."""
    names = torch.eye(3)
    states = torch.cat(
        [
            names + 0.01 * torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
            for _ in range(4)
        ]
    )
    labels = torch.arange(3).repeat(4)
    prior = blend_with_names(states, labels, names)
    assert len(set(prior.scores.values())) == 1
    assert prior.weight == 0.0
