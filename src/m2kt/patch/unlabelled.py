"""A task with no labels anywhere: the user's texts, class names and prompt templates.

`patch train` and `patch transfer` take one in place of a labelled task (`--inputs FILE
--classes a,b,c [--templates ...]`). It has no label field, so nothing downstream can read one:
the patch is learned against the user's fine-tuned weak model, and the transfer's settings are
chosen on unlabelled agreement (see `workflow.select_transfer_unlabelled`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m2kt.errors import UsageError
from m2kt.inputs import read_bounded
from m2kt.tasks.text_classification import (
    MAX_CLASSES,
    MAX_CSV_BYTES,
    MAX_CSV_ROWS,
    MAX_LABEL_CHARS,
)

DEFAULT_TEMPLATES = ("{}.", "This text is about {}.", "It is {}.")
MIN_INPUTS = 10
_HINT = "pass a UTF-8 text file with one input a line, or a CSV file with a `text` column"


@dataclass(frozen=True)
class UnlabelledTask:
    """Unlabelled inputs of a classification task; `texts` are all the inputs there are."""

    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    texts: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) < MIN_INPUTS:
            raise UsageError(
                f"{self.name} has {len(self.texts)} inputs; a patch needs at least {MIN_INPUTS}",
                _HINT,
            )

    def limited(self, limit: int | None) -> UnlabelledTask:
        """At most `limit` inputs, every k-th one (as `TextClassificationTask.limited`)."""
        if limit is None or limit >= len(self.texts):
            return self
        step = len(self.texts) / limit
        index = sorted({int(i * step) for i in range(limit)})
        return UnlabelledTask(
            self.name, self.class_names, self.templates, [self.texts[i] for i in index]
        )


def load_unlabelled(
    path: Path, classes: str, templates: Sequence[str] | None = None
) -> UnlabelledTask:
    """Texts from `path` (one a line; or the `text` column of a `.csv`, every other column,
    a label column included, left unread), with comma-separated `classes`."""
    return UnlabelledTask(
        path.stem, parse_classes(classes), parse_templates(templates), read_texts(path)
    )


def read_texts(path: Path) -> list[str]:
    data = read_bounded(path, "inputs file", MAX_CSV_BYTES, _HINT)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {path}: {exc}", _HINT) from None
    if path.suffix.lower() == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if "text" not in (reader.fieldnames or ()):
                raise UsageError(f"{path} needs a header with a `text` column", _HINT)
            lines = []
            for row in reader:
                lines.append(row["text"] if isinstance(row["text"], str) else "")
                if len(lines) > MAX_CSV_ROWS:
                    break
        except csv.Error as exc:
            raise UsageError(f"cannot read {path}: {exc}", _HINT) from None
    else:
        lines = text.splitlines()
    if len(lines) > MAX_CSV_ROWS:
        raise UsageError(f"{path} has over {MAX_CSV_ROWS:,} inputs", _HINT)
    texts = [" ".join(line.split()) for line in lines]
    return [t for t in texts if t]


def parse_classes(text: str) -> tuple[str, ...]:
    """`a,b,c` → ("a", "b", "c"): two or more distinct, non-empty names."""
    hint = "pass --classes with two or more distinct names separated by commas, e.g. sport,tech"
    names = tuple(name.strip() for name in text.split(","))
    if any(not name for name in names):
        raise UsageError(f"--classes {text!r} has an empty class name", hint)
    if len(names) < 2 or len(set(names)) != len(names):
        raise UsageError(f"--classes {text!r} needs two or more distinct names", hint)
    if len(names) > MAX_CLASSES or max(map(len, names)) > MAX_LABEL_CHARS:
        raise UsageError(
            f"--classes: at most {MAX_CLASSES:,} names of at most {MAX_LABEL_CHARS} characters",
            hint,
        )
    return names


def parse_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    """Prompt templates, each with exactly one `{}` where the class name goes."""
    if not templates:
        return DEFAULT_TEMPLATES
    for template in templates:
        rest = template.replace("{}", "", 1)
        if "{" in rest or "}" in rest or rest == template:
            raise UsageError(
                f"template {template!r} needs exactly one {{}} for the class name and no other "
                "braces",
                'e.g. --templates "A news story about {}." "{} news."',
            )
    return tuple(templates)
