"""Progress on long work reaches stderr as plain lines when stderr is not a terminal (logs, CI)."""

from __future__ import annotations

from pathlib import Path

from m2kt.cli import main
from m2kt.cli._common import progress_bars


def test_plain_lines_at_each_tenth(capsys) -> None:
    with progress_bars() as progress:
        for done in range(1001):
            progress("encode", done, 1000)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"encode: {100 * k}/1000" for k in range(11)]


def test_extract_logs_its_stages(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "pets.yaml"
    spec.write_text(
        "concepts:\n"
        "  - {name: cats, probes: [A cat purrs., The kitten sleeps., Cats chase mice.]}\n"
        "  - {name: dogs, probes: [A dog barks., The puppy runs., Dogs fetch sticks.]}\n"
    )
    argv = ["extract", "--teacher", "e1", "--concepts", str(spec), "--out", str(tmp_path / "p")]
    assert main([*argv, "--no-safety-screen"]) == 0
    err = capsys.readouterr().err
    assert "loading e1" in err and "read probes: 6/6" in err
