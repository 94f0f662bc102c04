"""Fixtures shared across the suite: small but complete packets and a signing key pair."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m2kt.packet import Packet, generate_keypair, make_provenance

CREATED = "2026-01-01T00:00:00+00:00"


def knowledge_packet(seed: int = 0, concepts: int = 3, width: int = 8) -> Packet:
    """A knowledge packet with every part (C, G, A, R, M) filled from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    ids = [f"c{i}" for i in range(concepts)]
    return Packet.create(
        kind="knowledge",
        provenance=make_provenance(
            method="bottleneck",
            created_at=CREATED,
            models=[{"id": "tiny", "architecture": "Bert", "hidden_size": width, "num_layers": 2}],
            settings={"seed": seed, "layers": [1, 2]},
            inputs_seen={"teacher": 6},
        ),
        tensors={
            "concepts.embeddings": torch.randn(concepts, width, generator=g),
            "attention.patterns": torch.rand(concepts, 2, 4, 4, generator=g),
            "traces.t0": torch.randn(3, width, generator=g),
        },
        concepts=[
            {
                "id": i,
                "name": f"concept {i}",
                "probes": [f"probe of {i}"],
                "layer": 2,
                "method": "bottleneck",
                "confidence": 0.5,
            }
            for i in ids
        ],
        graph={
            "nodes": [{"id": i, "name": i, "kind": "concept"} for i in ids]
            + [{"id": "root", "name": "root", "kind": "abstract"}],
            "edges": [{"source": i, "target": "root", "type": "is-a", "weight": 1.0} for i in ids],
        },
        attention={"layers": [1, 2], "length": 4},
        traces=[{"id": "t0", "probe": "2+3=?", "answer": "5", "steps": ["l0", "l1", "l2"]}],
    )


def patch_packet(seed: int = 0) -> Packet:
    g = torch.Generator().manual_seed(seed)
    return Packet.create(
        kind="patch",
        provenance=make_provenance(method="transmiter", created_at=CREATED),
        tensors={"patch.W": torch.randn(5, 5, generator=g), "patch.b": torch.zeros(5)},
        patch={
            "adapter": "logit-residual-mlp",
            "task_classes": ["neg", "pos"],
            "aux_classes": ["cat", "dog", "car"],
            "templates": ["a {} text"],
            "config": {"lambda": 500.0},
        },
    )


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"), "alice")


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"), "mallory")


@pytest.fixture(scope="session")
def signed_packet_bytes(keys: tuple[Path, Path]) -> bytes:
    return knowledge_packet().signed(keys[0]).to_bytes()
