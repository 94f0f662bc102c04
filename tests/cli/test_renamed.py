"""Old spellings fail for one release with the new spelling as the hint (exit 2, one line)."""

from __future__ import annotations

import pytest

from m2kt.cli import main


@pytest.mark.parametrize(
    ("argv", "now"),
    [
        (["merge-bench", "--out", "x"], "m2kt bench merge"),
        (["serve", "--load-test"], "m2kt bench load"),
        (["sign", "p.m2kt", "--key", "k.key"], "--sign KEY"),
    ],
)
def test_an_old_spelling_names_the_new_one(
    argv: list[str], now: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert now in err and err.count("\n") == 1 and "Traceback" not in err
