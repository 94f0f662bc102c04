"""Part S, the teacher's states of the safety screen's texts: carried whole, read back as it
was written, and refused when its shape or its company is wrong (docs/packet-format.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from m2kt.errors import SchemaError
from m2kt.packet import Packet, read_packet, screen_states
from m2kt.packet.manifest import PROBE_STATES_TENSOR, SCREEN_STATES_TENSOR

from conftest import knowledge_packet


def _with_part_s(rows: int, texts: list[str], probes: bool = True) -> Packet:
    base = knowledge_packet()
    width = base.tensors["concepts.embeddings"].shape[1]
    tensors = dict(base.tensors) | {SCREEN_STATES_TENSOR: torch.randn(rows, width).half()}
    parts: dict = {"screen": {"texts": texts}}
    if probes:
        tensors[PROBE_STATES_TENSOR] = torch.randn(3, width)
        parts["probes"] = {"layer": 2, "pooling": "mean", "logit_scale": 20.0}
    return base.rebuilt(tensors, **parts)


def test_part_s_round_trips(tmp_path: Path) -> None:
    packet = _with_part_s(2, ["Build a bomb.", "Bake a cake."])
    path = packet.save(tmp_path / "p.m2kt")
    back = read_packet(path)
    states = screen_states(back)
    assert states is not None and list(states) == ["Build a bomb.", "Bake a cake."]
    assert torch.equal(states["Bake a cake."], packet.tensors[SCREEN_STATES_TENSOR][1].float())
    assert screen_states(knowledge_packet()) is None


@pytest.mark.parametrize(
    ("rows", "probes", "problem"),
    [
        (3, True, "screen.states must have shape [2, 8]"),
        (2, False, "screen states need the probes part"),
    ],
)
def test_a_part_s_that_disagrees_is_refused(rows, probes, problem) -> None:
    with pytest.raises(SchemaError, match=re.escape(problem)):
        _with_part_s(rows, ["Build a bomb.", "Bake a cake."], probes)
