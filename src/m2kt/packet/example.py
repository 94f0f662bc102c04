"""A small, valid knowledge packet drawn from a seeded generator: distinct bytes for each seed.

The one factory of packets that no model made: the tests, the broker's load test and the fuzz
harnesses all start from it, so they agree on what a well-formed packet is.
"""

from __future__ import annotations

import torch

from m2kt.packet.packet import Packet, make_provenance

CREATED = "2026-01-01T00:00:00+00:00"


def example_packet(seed: int = 0, concepts: int = 3, width: int = 8) -> Packet:
    """A knowledge packet with every part a teacher fills (C, G, A, R, M) at random."""
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
