"""docs/python-api.md runs as written: its examples, in order, in an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import m2kt

DOC = Path(__file__).parents[1] / "docs" / "python-api.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_every_public_name_is_documented_and_loads() -> None:
    text = DOC.read_text()
    for name in m2kt.PUBLIC:
        assert f"m2kt.{name}" in text, name
        assert callable(getattr(m2kt, name))


def test_the_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for code in examples():
        exec(compile(code, str(DOC), "exec"), namespace)
    ingestion = namespace["ingestion"]
    assert ingestion.accepted, ingestion.verdict.reasons()  # type: ignore[attr-defined]
    found = namespace["found"]
    assert found.concept in namespace["adapted"].concepts  # type: ignore[attr-defined]
    assert (tmp_path / "adapters" / "topics" / "adapter_config.json").is_file()
    assert len(capsys.readouterr().out.splitlines()) >= 6


def test_ingest_packet_opens_an_unsigned_file_only_when_told(tmp_path: Path) -> None:
    """As `m2kt ingest --allow-unsigned`: refused by default; allowed, the file is opened and
    judged for what it is (here a patch packet, which ingestion refuses by kind)."""
    from m2kt.errors import UnsignedPacketError, UsageError

    from conftest import patch_packet

    path = patch_packet().save(tmp_path / "patch.m2kt")
    with pytest.raises(UnsignedPacketError):
        m2kt.ingest_packet("e2", path)
    with pytest.raises(UsageError, match="patch packet without concepts"):
        m2kt.ingest_packet("e2", path, allow_unsigned=True)
