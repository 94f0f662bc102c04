"""The progress callbacks every long step takes: a rich bar in the CLI, silent in tests."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]  # (done, total) of one step
StageProgress = Callable[[str, int, int], None]  # (stage, done, total) of a multi-step workflow


def quiet(stage: str, done: int, total: int) -> None:
    """The StageProgress of callers who want none."""
    return None
