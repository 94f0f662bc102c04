"""Read an anchor set: the shipped one by name, or a user's text file, and draw a subset.

An anchor set is a UTF-8 text file, one text per line (lines starting with `#` and blank
lines are skipped). Its identity is (name, version, SHA-256 of the file's bytes); a packet
records the three beside the texts it used, so a reader knows where they came from.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

from m2kt.errors import UsageError
from m2kt.inputs import read_bounded

SHIPPED_ANCHORS = "words"  # 4,096 sentences built by benchmarks/build_anchor_set.py
_SHIPPED = {"words": ("1", "words-v1.txt")}
MAX_ANCHOR_TEXTS = 100_000
MAX_ANCHOR_LENGTH = 4096


@dataclass(frozen=True)
class AnchorSet:
    name: str
    version: str
    sha256: str
    texts: tuple[str, ...]

    def subset(self, count: int, seed: int = 0) -> list[str]:
        """`count` texts in a seeded order (all of them when `count` ≥ the set's size)."""
        if count < 1:
            raise UsageError(f"the anchor count must be at least 1, got {count}")
        order = list(range(len(self.texts)))
        random.Random(seed).shuffle(order)
        return [self.texts[i] for i in sorted(order[:count])]


def load_anchor_set(source: str | Path) -> AnchorSet:
    """The shipped set by name (`words`), or a text file of the user's (version `file`)."""
    if str(source) in _SHIPPED:
        version, filename = _SHIPPED[str(source)]
        return _shipped(str(source), version, filename)
    path = Path(source)
    hint = f"pass a text file with one anchor text per line, or the shipped set {SHIPPED_ANCHORS!r}"
    raw = read_bounded(path, "anchor file", 64 << 20, hint)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"anchor file {path} is not UTF-8 (byte {exc.start})", hint) from None
    return _parse(path.stem, "file", raw, text, str(path))


@cache
def _shipped(name: str, version: str, filename: str) -> AnchorSet:
    raw = files("m2kt.anchors").joinpath(filename).read_bytes()
    return _parse(name, version, raw, raw.decode("utf-8"), filename)


def _parse(name: str, version: str, raw: bytes, text: str, where: str) -> AnchorSet:
    texts = tuple(
        dict.fromkeys(
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        )
    )
    if not texts:
        raise UsageError(f"{where} holds no anchor texts", "write one text per line")
    if len(texts) > MAX_ANCHOR_TEXTS:
        raise UsageError(f"{where} holds {len(texts):,} texts; the limit is {MAX_ANCHOR_TEXTS:,}")
    long = next((i for i, t in enumerate(texts) if len(t) > MAX_ANCHOR_LENGTH), None)
    if long is not None:
        raise UsageError(
            f"{where}: text {long + 1} is over {MAX_ANCHOR_LENGTH} characters",
            "anchors are sentences; split long texts",
        )
    return AnchorSet(name, version, hashlib.sha256(raw).hexdigest(), texts)
