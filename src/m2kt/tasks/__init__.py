"""Benchmark tasks: real labelled data that PyPI packages carry, with fixed splits."""

from m2kt.tasks.text_classification import TASKS, Split, TextClassificationTask, load_task

__all__ = ["TASKS", "Split", "TextClassificationTask", "load_task"]
