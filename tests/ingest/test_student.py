"""The student's reading of a packet: the teacher's distribution comes from the packet's readout."""

from __future__ import annotations

import torch

from m2kt.concepts.spec import parse_spec
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.ingest.loss import concept_probabilities
from m2kt.ingest.student import read_student
from m2kt.packet import Packet, concept_probes, make_provenance
from m2kt.packet.example import CREATED

SPEC = parse_spec(
    """
layers: [1, 2]
concepts:
  - name: apple
    probes: ["apple apple apple", "an apple apple pie", "apple juice apple", "red apple apple"]
  - name: zebra
    probes: ["zebra zebra zebra", "a zebra zebra runs", "zebra stripes zebra", "old zebra zebra"]
  - name: cloud
    probes: ["cloud cloud cloud", "a grey cloud cloud", "cloud rain cloud", "white cloud cloud"]
"""
)


def test_the_teacher_distribution_follows_a_linear_readout(tiny_bert) -> None:
    settings = ExtractionSettings(readout="linear", anchors=None, attention=False)
    packet = extract_packet(tiny_bert, SPEC, settings).packet
    assert packet.manifest.readout is not None
    reading = read_student(tiny_bert, packet, layer=2)
    states = concept_probes(packet).states
    assert states is not None and reading.targets.teacher_probs is not None
    weight, bias = packet.tensors["readout.weight"], packet.tensors["readout.bias"]
    expected = torch.softmax(states @ weight.T + bias, dim=-1)
    assert torch.allclose(reading.targets.teacher_probs, expected, atol=1e-5)
    assert float(expected.max(1).values.mean()) < 0.999  # calibrated, not one-hot
    cosine = concept_probabilities(states, packet.tensors["concepts.embeddings"], 20.0)
    assert not torch.allclose(reading.targets.teacher_probs, cosine, atol=1e-3)


def test_without_a_readout_the_distribution_is_the_scaled_cosine(tiny_bert) -> None:
    settings = ExtractionSettings(readout="centroid", anchors=None, attention=False)
    packet = extract_packet(tiny_bert, SPEC, settings).packet
    assert packet.manifest.readout is None and "readout.weight" not in packet.tensors
    reading = read_student(tiny_bert, packet, layer=2)
    states = concept_probes(packet).states
    assert states is not None
    cosine = concept_probabilities(states, packet.tensors["concepts.embeddings"], 20.0)
    assert torch.allclose(reading.targets.teacher_probs, cosine, atol=1e-6)


def test_a_readout_over_several_layers_scores_part_p_from_part_l(tiny_bert) -> None:
    """The readout's weight reads two layers side by side ([K, 2·d]): part P's rows are scored
    from part L's states, not from part P's one layer (which does not fit the weight at all)."""
    generator = torch.Generator().manual_seed(0)
    k, d = 2, 4
    concepts = [
        {"id": f"c{i}", "name": f"c{i}", "probes": [f"c{i} text {j}" for j in range(3)]}
        for i in range(k)
    ]
    packet = Packet.create(
        kind="knowledge",
        provenance=make_provenance(method="test", created_at=CREATED),
        tensors={
            "concepts.embeddings": torch.randn(k, d, generator=generator),
            "probes.states": torch.randn(6, d, generator=generator),
            "layers.embeddings": torch.randn(2, k, d, generator=generator),
            "layers.states": torch.randn(2, 6, d, generator=generator),
            "readout.weight": torch.randn(k, 2 * d, generator=generator),
            "readout.bias": torch.randn(k, generator=generator),
        },
        concepts=[c | {"method": "bottleneck", "confidence": 1.0} for c in concepts],
        probes={"layer": 2, "pooling": "mean", "logit_scale": 20.0},
        layers={"layers": [1, 2], "pooling": "mean"},
        readout={"kind": "linear", "layers": [2, 1]},
    )
    reading = read_student(tiny_bert, packet, layer=2)
    side = torch.cat([packet.tensors["layers.states"][n] for n in (1, 0)], -1)
    weight, bias = packet.tensors["readout.weight"], packet.tensors["readout.bias"]
    expected = torch.softmax(side @ weight.T + bias, dim=-1)
    assert reading.targets.teacher_probs is not None
    assert torch.allclose(reading.targets.teacher_probs, expected, atol=1e-6)
