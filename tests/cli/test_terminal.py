"""Text from outside is data: no packet, store or `--text` string drives the terminal.

Every string field of a signed packet holds rich markup, emoji codes and control sequences
(ESC, OSC, BEL, CR, a bidi override, a line separator); each command that shows packet text
prints it, and the raw output must hold none of those bytes and show the markup literally.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m2kt.cli import main
from m2kt.cli._common import console, error_console, shown
from m2kt.packet import Packet, make_provenance
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.config import PatchConfig
from m2kt.patch.packet_io import ClassAxes, patch_to_packet

# Markup without spaces, so that a table cell cannot wrap it; each control sequence would
# redraw the screen, retitle the window, ring, return to the line start or reverse the text.
MARKUP = "[/x][red]✔ok[/red][link=x]:warning:"
CONTROLS = "\x1b[2J\x1b]0;pwned\x07\r\u202e\u2028\x9b31m"
HOSTILE = MARKUP + CONTROLS


def _hostile(tag: str) -> str:
    return f"{tag}{HOSTILE}"


def hostile_knowledge_packet() -> Packet:
    ids = ["c0", "c1"]
    return Packet.create(
        kind="knowledge",
        provenance=make_provenance(
            method=_hostile("method"),
            created_at=_hostile("2026"),
            models=[{"id": _hostile("model"), "architecture": _hostile("arch")}],
            settings={_hostile("setting"): _hostile("value")},
            license=_hostile("licence"),
        ),
        tensors={"concepts.embeddings": torch.ones(2, 4), "traces.t0": torch.ones(1, 4)},
        concepts=[
            {
                "id": i,
                "name": _hostile(f"name {i}"),
                "probes": [_hostile("probe")],
                "layer": 1,
                "method": _hostile("method"),
                "confidence": 0.5,
            }
            for i in ids
        ],
        graph={
            "nodes": [{"id": i, "name": _hostile("node"), "kind": "concept"} for i in ids],
            "edges": [],
        },
        traces=[{"id": "t0", "probe": _hostile("p"), "answer": _hostile("a"), "steps": ["s"]}],
    )


def hostile_patch_packet() -> Packet:
    axes = ClassAxes(
        (_hostile("sport"), _hostile("politics")), (_hostile("aux"),), ("a text about {}.",)
    )
    provenance = make_provenance(method=_hostile("transmiter"), created_at=_hostile("2026"))
    return patch_to_packet(LogitPatch(PatchConfig(logit_dim=3)), axes, provenance, {})


def assert_inert(output: str, *, escapes: str = CONTROLS) -> None:
    """No control byte reached the output; markup and controls are shown as written."""
    for ch in "\x1b\x07\r\u202e\u2028\x9b":
        assert ch not in output, f"{ch!r} reached the terminal"
    assert MARKUP in output
    assert shown(escapes) in output
    assert "Traceback" not in output
    assert shown(CONTROLS) == "\\x1b[2J\\x1b]0;pwned\\x07\\x0d\\u202e\\u2028\\x9b31m"


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that no table cell folds a hostile string over two lines."""
    for c in (console, error_console):
        monkeypatch.setattr(c, "width", 2000)


@pytest.fixture
def signed_hostile(tmp_path: Path, keys) -> Path:
    return hostile_knowledge_packet().signed(keys[0]).save(tmp_path / "hostile.m2kt")


def test_inspect_shows_packet_text_as_data(signed_hostile: Path, keys, capsys) -> None:
    assert main(["inspect", str(signed_hostile), "--key", str(keys[1]), "--all"]) == 0
    out = capsys.readouterr()
    assert_inert(out.out + out.err)
    assert "name c0" in out.out and "verified, key" in out.out


def test_inspect_raw_bytes_of_a_real_process(signed_hostile: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "m2kt", "inspect", str(signed_hostile)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "2000"},
    )
    assert result.returncode == 0, result.stderr
    assert_inert((result.stdout + result.stderr).decode("utf-8"))


def test_patch_apply_shows_labels_and_text_as_data(tmp_path: Path, keys, capsys) -> None:
    path = hostile_patch_packet().signed(keys[0]).save(tmp_path / "patch.m2kt")
    command = ["patch", "apply", str(path), "--model", "e1", "--key", str(keys[1])]
    assert main([*command, "--text", _hostile("The striker scored twice.")]) == 0
    out = capsys.readouterr()
    assert_inert(out.out)
    assert "\x1b" not in out.err  # stderr holds transformers' own \r progress lines
    assert "The striker scored twice." in out.out


def test_search_shows_store_text_as_data(signed_hostile: Path, keys, tmp_path: Path, capsys):
    store = ["--store", str(tmp_path / "store")]
    publish = ["publish", str(signed_hostile), *store, "--key", str(keys[1])]
    assert main([*publish, "--publisher", _hostile("alice"), "--tag", _hostile("tag")]) == 0
    assert main(["search", *store]) == 0
    out = capsys.readouterr()
    assert_inert(out.out + out.err)
    assert "1 packet(s)" in out.out


def test_an_error_naming_outside_text_is_one_inert_line(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / f"missing{HOSTILE}.m2kt")]) == 2
    err = capsys.readouterr().err
    assert_inert(err, escapes="\x1b[2J\x1b]0;pwned\x07")  # error lines fold other whitespace
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
