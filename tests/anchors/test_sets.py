"""The shipped anchor set is frozen, reproducible from its build script, and read like any
user file: limits and encoding checked, one line per text."""

from __future__ import annotations

import hashlib
import runpy
from pathlib import Path

import pytest

from m2kt.anchors import SHIPPED_ANCHORS, load_anchor_set
from m2kt.errors import UsageError

WORDS_V1_SHA256 = "dc536a7712504b4a123ab610cd26f45c6eb0cdf5d0dc3779d9b0d6f5bb9ef07d"
ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_set_is_frozen_and_its_build_reproduces_it() -> None:
    shipped = load_anchor_set(SHIPPED_ANCHORS)
    assert (shipped.name, shipped.version, shipped.sha256) == ("words", "1", WORDS_V1_SHA256)
    assert len(shipped.texts) == 4096
    build = runpy.run_path(str(ROOT / "benchmarks/build_anchor_set.py"))
    assert tuple(build["sentences"]()) == shipped.texts
    data = (ROOT / "src/m2kt/anchors/words-v1.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == WORDS_V1_SHA256


def test_a_subset_is_seeded_and_nested_in_the_set() -> None:
    shipped = load_anchor_set(SHIPPED_ANCHORS)
    first = shipped.subset(100, seed=0)
    assert first == shipped.subset(100, seed=0) != shipped.subset(100, seed=1)
    assert set(first) <= set(shipped.texts) and len(set(first)) == 100
    assert len(shipped.subset(10**6)) == 4096


def test_a_users_file_is_read_with_its_own_hash(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my anchors\nFirst text.\n\nSecond text.\nFirst text.\n")
    mine = load_anchor_set(path)
    assert mine.texts == ("First text.", "Second text.") and mine.version == "file"
    assert mine.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"# only a comment\n", "no anchor texts"), (b"\xff\xfe bad", "not UTF-8")],
)
def test_bad_anchor_files_are_one_line_errors(tmp_path: Path, content: bytes, message) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_anchor_set(path)
    with pytest.raises(UsageError, match="no such anchor file"):
        load_anchor_set(tmp_path / "missing.txt")
