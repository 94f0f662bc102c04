"""The share of a gap a method closes: one formula for every suite's tables."""

from __future__ import annotations


def gap_closed(accuracy: float, before: float, target: float) -> float:
    """(accuracy - before) / (target - before): the share of what the model lacked that it now
    has (NaN when there was no gap). Patches: target = the strong model fine-tuned; packets:
    target = the teacher."""
    return (accuracy - before) / (target - before) if target != before else float("nan")
