"""The user's own labelled sentences, held out from the packet: `m2kt ingest --verify-on FILE`.

A packet's verification probes are set aside from the spec author's list, so they share the
extraction probes' style and favour the student's own anchors (docs/ingest.md). What a user
has that the packet does not is sentences of their task written apart from the spec. They are
read like `m2kt evaluate --split all` reads them (the same CSV reader and by-name matching of
classes to concepts), and verification judges the packet on them; they are never fitted to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from m2kt.errors import UsageError
from m2kt.inputs import read_bounded
from m2kt.tasks import Split, by_concept, labelled_rows
from m2kt.tasks.text_classification import MAX_CSV_BYTES


@dataclass(frozen=True)
class UserSentences:
    """The distinct sentences of the user's file, each with its concept's name: a sentence
    the file repeats is judged once, since every copy would be one more paired outcome for the
    gate's test and could make a small set look large enough to verify a packet."""

    source: str
    sha256: str  # of the file's bytes, for the report
    texts: list[str]
    concepts: list[str]  # each row's concept, by name
    repeated: int = 0  # rows that repeated an earlier sentence, left out

    def kept(self, concepts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """The rows whose concept is among `concepts` (the safety screen may have dropped
        some), labelled by their index there."""
        index = [i for i, c in enumerate(self.concepts) if c in concepts]
        labels = [list(concepts).index(self.concepts[i]) for i in index]
        return [self.texts[i] for i in index], torch.tensor(labels, dtype=torch.long)

    def report(self, n: int) -> dict[str, str | int]:
        return {
            "file": self.source,
            "sha256": self.sha256,
            "rows": len(self.texts),
            "repeated": self.repeated,
            "n": n,
        }


def read_user_sentences(path: str | Path, concepts: Sequence[str]) -> UserSentences:
    """A CSV of `text,label` rows whose labels are concept names; refused in one line (exit 2)
    when it cannot be read, a label names no concept of the packet, or a sentence is given
    two labels."""
    source = str(path)
    hint = "pass a UTF-8 CSV with a header row `text,label`, the labels the concept names"
    if not source.endswith(".csv"):
        raise UsageError(f"--verify-on takes a CSV file, got {source}", hint)
    data = read_bounded(Path(source), "--verify-on file", MAX_CSV_BYTES, hint)
    texts, labels, classes = labelled_rows(data, Path(source))
    split = Split(texts, torch.tensor(labels, dtype=torch.long))
    matched = by_concept(split, classes, concepts, source)
    digest = hashlib.sha256(data).hexdigest()  # of the bytes judged, read once
    first: dict[str, str] = {}
    for text, label in zip(matched.texts, matched.labels.tolist(), strict=True):
        concept = first.setdefault(text, concepts[label])
        if concept != concepts[label]:
            raise UsageError(
                f"{source}: the sentence {text[:60]!r} is labelled both {concept!r} and "
                f"{concepts[label]!r}",
                "keep one label per sentence",
            )
    return UserSentences(
        source, digest, list(first), list(first.values()), len(matched.texts) - len(first)
    )
