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
from m2kt.tasks import by_concept, load_labelled


@dataclass(frozen=True)
class UserSentences:
    source: str
    sha256: str  # of the file's bytes, for the report
    texts: list[str]
    concepts: list[str]  # each row's concept, by name

    def kept(self, concepts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """The rows whose concept is among `concepts` (the safety screen may have dropped
        some), labelled by their index there."""
        index = [i for i, c in enumerate(self.concepts) if c in concepts]
        labels = [list(concepts).index(self.concepts[i]) for i in index]
        return [self.texts[i] for i in index], torch.tensor(labels, dtype=torch.long)

    def report(self, n: int) -> dict[str, str | int]:
        return {"file": self.source, "sha256": self.sha256, "rows": len(self.texts), "n": n}


def read_user_sentences(path: str | Path, concepts: Sequence[str]) -> UserSentences:
    """A CSV of `text,label` rows whose labels are concept names; refused in one line (exit 2)
    when it cannot be read or a label names no concept of the packet."""
    source = str(path)
    if not source.endswith(".csv"):
        raise UsageError(
            f"--verify-on takes a CSV file, got {source}",
            "pass a UTF-8 CSV with a header row `text,label`, the labels the concept names",
        )
    _, classes, split = load_labelled(source)
    matched = by_concept(split, classes, concepts, source)
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    return UserSentences(
        source, digest, list(matched.texts), [concepts[i] for i in matched.labels.tolist()]
    )
