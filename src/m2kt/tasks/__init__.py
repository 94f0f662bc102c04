"""Benchmark tasks: real labelled data that PyPI packages carry, with fixed splits."""

from m2kt.tasks.symbolic import FAMILIES, SymbolicFamily, SymbolicSplit, SymbolicTask, symbolic_task
from m2kt.tasks.text_classification import (
    TASKS,
    Split,
    TextClassificationTask,
    by_concept,
    labelled_rows,
    load_labelled,
    load_task,
)

__all__ = [
    "TASKS",
    "Split",
    "TextClassificationTask",
    "by_concept",
    "labelled_rows",
    "load_labelled",
    "load_task",
]
__all__ += ["FAMILIES", "SymbolicFamily", "SymbolicSplit", "SymbolicTask", "symbolic_task"]
