"""The student's reading of a packet: the teacher's distribution comes from the packet's readout."""

from __future__ import annotations

import torch

from m2kt.concepts.spec import parse_spec
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.ingest.loss import concept_probabilities
from m2kt.ingest.student import read_student
from m2kt.packet import concept_probes

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
