"""Auxiliary class names: extra named logit axes shared by every model in a transfer.

With only a handful of task classes, two models' logits share too few axes for a basis change
to be well determined. Appending the same seeded list of auxiliary names to every model's head
gives all logits K named axes with the same meaning (TransMiter's auxiliary class expansion).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from importlib.resources import files

from m2kt.errors import UsageError


@cache
def shipped_aux_names() -> tuple[str, ...]:
    """The 4,096 names shipped with m2kt (package data `aux_class_names.txt`)."""
    text = files("m2kt.patch").joinpath("aux_class_names.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line and not line.startswith("#"))


def pick_aux_classes(
    task_classes: Sequence[str],
    total: int,
    seed: int = 0,
    pool: Sequence[str] | None = None,
) -> list[str]:
    """`total - len(task_classes)` names from `pool`, disjoint from the task's, in seeded order."""
    lowered = {c.lower() for c in task_classes}
    candidates = [n for n in (pool or shipped_aux_names()) if n.lower() not in lowered]
    needed = total - len(task_classes)
    if needed < 0:
        raise UsageError(
            f"total logit width {total} is smaller than the {len(task_classes)} task classes"
        )
    if needed > len(candidates):
        raise UsageError(
            f"asked for {needed} auxiliary names, only {len(candidates)} are available"
        )
    return random.Random(seed).sample(candidates, needed)
