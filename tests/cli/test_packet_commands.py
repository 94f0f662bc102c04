"""The packet commands as a user runs them: exit codes and one-line errors, never tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m2kt.cli import main
from m2kt.packet import Packet, make_provenance
from m2kt.packet.example import CREATED
from m2kt.packet.summary import reading_lines

from conftest import knowledge_packet


def _m2kt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "m2kt", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path]:
    assert main(["keygen", "--out", str(tmp_path), "--name", "me"]) == 0
    path = knowledge_packet().save(tmp_path / "p.m2kt")
    assert main(["sign", str(path), "--sign", str(tmp_path / "me.key")]) == 0
    return path, tmp_path / "me.pub"


def test_keygen_sign_verify_inspect(signed, capsys) -> None:
    path, public = signed
    capsys.readouterr()
    assert main(["verify", str(path), "--key", str(public)]) == 0
    assert knowledge_packet().digest in capsys.readouterr().out
    assert main(["inspect", str(path), "--key", str(public)]) == 0
    out = capsys.readouterr().out
    assert "concept c0" in out and "verified" in out and "attention.patterns" in out


def test_inspect_json(signed, capsys) -> None:
    path, _ = signed
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["digest"] == knowledge_packet().digest
    assert summary["signature"] == {
        "signed": True,
        "verified": False,
        "claimed_key": summary["signature"]["claimed_key"],
    }
    assert [c["id"] for c in summary["concepts"]] == ["c0", "c1", "c2"]
    assert summary["parts"]["traces"] == 1


def test_verify_flipped_byte_exits_1_with_one_line(signed) -> None:
    path, public = signed
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = _m2kt("verify", str(path), "--key", str(public))
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: verification failed") and "hint:" in result.stderr


def test_inspect_truncated_exits_2_with_one_line(signed) -> None:
    path, _ = signed
    path.write_bytes(path.read_bytes()[:300])
    result = _m2kt("inspect", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "truncated" in result.stderr


@pytest.mark.parametrize(
    ("settings", "ranked"),
    [
        ({"reading_scores": ["x", 0.5]}, False),
        ({"reading_scores": [0.5]}, False),
        ({"reading_scores": [0.5, 0.6], "reading_losses": [True, "?"]}, True),  # by accuracy
    ],
)
def test_inspect_shows_a_packet_whose_reading_figures_are_malformed(
    settings: dict, ranked: bool, tmp_path: Path
) -> None:
    """The runners-up line reads figures a packet's author wrote: malformed ones (a string, a
    list shorter than the readings) were a traceback; they are left out of the line."""
    packet = Packet.create(
        kind="knowledge",
        provenance=make_provenance(
            method="test",
            created_at=CREATED,
            settings={"candidate_readings": ["mean@1", "mean@2"], "pooling": "mean", "layer": 1}
            | settings,
        ),
        tensors={"concepts.embeddings": torch.zeros(1, 4)},
        concepts=[
            {"id": "a", "name": "a", "probes": ["p"], "method": "bottleneck", "confidence": 1.0}
        ],
    )
    path = packet.save(tmp_path / "p.m2kt")
    assert main(["inspect", str(path)]) == 0
    lines = reading_lines(packet)
    assert lines == (
        [
            "reading mean@1, centroid readout (cross-validated on extraction "
            "probes: 50.0%); runners-up: mean@2 60.0%"
        ]
        if ranked
        else []
    )


def test_unsigned_and_untrusted(tmp_path: Path, signed, capsys) -> None:
    path, _ = signed
    assert main(["keygen", "--out", str(tmp_path), "--name", "stranger"]) == 0
    assert main(["verify", str(path), "--key", str(tmp_path / "stranger.pub")]) == 1
    assert "do not trust" in capsys.readouterr().err
    unsigned = knowledge_packet().save(tmp_path / "u.m2kt")
    assert main(["verify", str(unsigned), "--key", str(tmp_path / "stranger.pub")]) == 1
    assert "not signed" in capsys.readouterr().err


def test_bad_key_file_is_bad_input(signed, tmp_path: Path, capsys) -> None:
    path, _ = signed
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    assert main(["verify", str(path), "--key", str(junk)]) == 2
    assert "not a PEM public key" in capsys.readouterr().err


def test_keygen_refuses_to_overwrite(signed, capsys) -> None:
    _, public = signed
    assert main(["keygen", "--out", str(public.parent), "--name", "me"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_help_lists_commands() -> None:
    result = _m2kt("--help")
    assert result.returncode == 0
    for command in ("inspect", "sign", "verify", "keygen", "demo"):
        assert f"    {command}" in result.stdout


def test_a_missing_optional_package_is_one_line_with_a_hint(monkeypatch, capsys) -> None:
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name.startswith("transformers"):
            raise ModuleNotFoundError("No module named 'transformers'", name="transformers")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    assert main(["bench", "patch", "--out", "/nonexistent-never-written"]) == 2
    err = capsys.readouterr().err
    assert "needs the package transformers" in err and "models extra" in err
