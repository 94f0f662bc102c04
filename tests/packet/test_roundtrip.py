"""Round trips are bit-exact and packets are deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m2kt.packet import load_packet, read_packet

from conftest import knowledge_packet, patch_packet


@pytest.mark.parametrize("make", [knowledge_packet, patch_packet])
def test_round_trip_is_bit_exact(tmp_path: Path, make) -> None:
    packet = make()
    path = packet.save(tmp_path / "p.m2kt")
    again = read_packet(path)
    assert again.manifest == packet.manifest
    assert again.digest == packet.digest
    assert set(again.tensors) == set(packet.tensors)
    for name, tensor in packet.tensors.items():
        assert again.tensors[name].dtype == tensor.dtype
        assert torch.equal(again.tensors[name], tensor)
    assert again.to_bytes() == path.read_bytes()


def test_half_precision_tensors_survive(tmp_path: Path) -> None:
    from m2kt.packet import Packet, make_provenance

    values = torch.randn(2, 4)
    packet = Packet.create(
        kind="knowledge",
        provenance=make_provenance(method="m", created_at="t"),
        tensors={"concepts.embeddings": values.to(torch.bfloat16)},
        concepts=[{"id": f"c{i}", "name": "n", "method": "m", "confidence": 1.0} for i in range(2)],
    )
    again = read_packet(packet.save(tmp_path / "p.m2kt"))
    assert again.tensors["concepts.embeddings"].dtype == torch.bfloat16
    assert torch.equal(again.tensors["concepts.embeddings"], values.to(torch.bfloat16))


def test_same_input_gives_same_bytes_and_hash(tmp_path: Path) -> None:
    a = knowledge_packet(seed=3).save(tmp_path / "a.m2kt").read_bytes()
    b = knowledge_packet(seed=3).save(tmp_path / "b.m2kt").read_bytes()
    assert a == b
    assert knowledge_packet(seed=3).digest == knowledge_packet(seed=3).digest
    assert knowledge_packet(seed=4).digest != knowledge_packet(seed=3).digest


def test_signing_keeps_the_digest_and_verifies(tmp_path: Path, keys) -> None:
    private, public = keys
    packet = knowledge_packet()
    path = packet.signed(private).save(tmp_path / "s.m2kt")
    loaded = load_packet(path, trusted_keys=[public])
    assert loaded.digest == packet.digest
    assert loaded.signer is not None and loaded.signer.key_path == public


def test_save_is_atomic_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "p.m2kt"
    target.write_bytes(b"old")
    knowledge_packet().save(target)
    assert read_packet(target).digest == knowledge_packet().digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.m2kt"]
