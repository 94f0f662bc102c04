from pathlib import Path

import pytest
import torch

from m2kt.errors import UsageError
from m2kt.packet import make_provenance, read_packet
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.aux_classes import pick_aux_classes, shipped_aux_names
from m2kt.patch.config import PatchConfig
from m2kt.patch.packet_io import ClassAxes, patch_from_packet, patch_to_packet

from conftest import knowledge_packet


def _axes(k: int) -> ClassAxes:
    task = ("negative", "neutral", "positive")
    return ClassAxes(task, tuple(pick_aux_classes(task, k, seed=1)), ("This tweet is {}.",))


def test_patch_round_trips_through_a_packet_bit_exactly(tmp_path: Path) -> None:
    patch = LogitPatch(PatchConfig(logit_dim=16), seed=4)
    with torch.no_grad():
        patch.mlp[3].weight.normal_()  # make the patch non-trivial
    packet = patch_to_packet(patch, _axes(16), make_provenance(method="t", created_at="t"), {})
    loaded, axes = patch_from_packet(read_packet(packet.save(tmp_path / "p.m2kt")))
    z = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(loaded(z), patch(z))
    assert axes == _axes(16)


def test_class_mismatch_is_named() -> None:
    with pytest.raises(UsageError, match="missing \\['neutral'\\]"):
        _axes(16).check_matches(("negative", "positive"))


def test_a_knowledge_packet_is_not_a_patch() -> None:
    with pytest.raises(UsageError, match="not a model patch"):
        patch_from_packet(knowledge_packet())


def test_aux_classes_are_seeded_disjoint_and_shipped() -> None:
    names = shipped_aux_names()
    assert len(names) == 4096 and len(set(names)) == 4096
    task = (names[0], "business")
    aux = pick_aux_classes(task, 64, seed=0)
    assert len(aux) == 62 and names[0] not in aux and "business" not in aux
    assert aux == pick_aux_classes(task, 64, seed=0) != pick_aux_classes(task, 64, seed=1)
    with pytest.raises(UsageError):
        pick_aux_classes(task, 1)
