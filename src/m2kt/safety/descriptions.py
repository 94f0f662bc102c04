"""The shipped list of unsafe-concept descriptions; users extend it with their own file."""

from __future__ import annotations

from pathlib import Path

from m2kt.errors import UsageError


def default_unsafe_descriptions() -> list[str]:
    return _lines(Path(__file__).parent / "unsafe_concepts.txt")


def read_descriptions(path: str | Path) -> list[str]:
    """One description a line; blank lines and lines starting with # are skipped."""
    try:
        return _lines(Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read unsafe-concept descriptions {path}: {exc}") from None


def _lines(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]
