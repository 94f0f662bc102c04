"""Judging a map on held-out anchors: a true linear relation scores high, broken pairs do not."""

from __future__ import annotations

import torch

from m2kt.align.quality import anchor_alignment


def _pairs(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n, 24, generator=g)
    student = teacher @ torch.randn(24, 16, generator=g) + 0.1 * torch.randn(n, 16, generator=g)
    return teacher, student


def test_a_real_relation_is_found_on_held_out_anchors() -> None:
    teacher, student = _pairs()
    found = anchor_alignment(teacher, student)
    assert found.r2 > 0.8 and found.retrieval > 0.9
    assert (found.fitted, found.heldout) == (320, 80)


def test_broken_pairs_score_near_nothing() -> None:
    teacher, student = _pairs()
    shuffled = student[torch.randperm(len(student), generator=torch.Generator().manual_seed(1))]
    found = anchor_alignment(teacher, shuffled)
    assert found.r2 < 0.1 and found.retrieval < 0.1


def test_the_ridge_is_chosen_on_held_out_anchors_not_fitted_ones() -> None:
    """With fewer anchors than dimensions, no ridge fits held-out anchors like the smallest
    fits its own: the choice must be a larger one."""
    teacher, student = _pairs(n=30)
    assert anchor_alignment(teacher, student).ridge > 0.001
