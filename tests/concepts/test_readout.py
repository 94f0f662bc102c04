"""The concept readout: a linear one where a centroid loses the concept, the centroid otherwise."""

from __future__ import annotations

import pytest
import torch

from m2kt.concepts.geometry import centroids
from m2kt.concepts.readout import fit_readout, packet_scores, score_reading
from m2kt.errors import SchemaError
from m2kt.packet import Packet, make_provenance, read_packet


def _states(seed: int, per_class: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Three concepts told apart by 4 quiet units, under 12 units of large shared noise and a
    huge common offset (what a decoder's outlier units do to every cosine)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(per_class)
    signal = torch.nn.functional.one_hot(labels, 4).float() + 0.15 * torch.randn(
        len(labels), 4, generator=generator
    )
    noise = spread * torch.randn(len(labels), 12, generator=generator)
    return torch.cat([signal, noise], dim=1) + 50.0, labels


def _accuracy(kind: str, train, labels, test, truth) -> float:
    readout = fit_readout(kind, train, labels, 3)  # type: ignore[arg-type]
    predicted = readout.scores(test, centroids(train, labels, 3)).argmax(1)
    return float((predicted == truth).float().mean())


def test_linear_readout_keeps_what_one_centroid_loses() -> None:
    train, labels = _states(0, 8, spread=3.0)
    test, truth = _states(1, 20, spread=3.0)
    assert score_reading(train, labels, 3).kind == "linear"
    assert _accuracy("linear", train, labels, test, truth) >= 0.95
    assert _accuracy("centroid", train, labels, test, truth) < 0.7


def test_the_centroid_stays_where_it_is_as_good() -> None:
    train, labels = _states(0, 8, spread=0.01)
    score = score_reading(train, labels, 3)
    assert score.centroid == 1.0 and score.kind == "centroid"


def _packet(readout_rows: int = 3) -> Packet:
    train, labels = _states(0, 8, spread=3.0)
    fitted = fit_readout("linear", train, labels, 3)
    assert fitted.weight is not None and fitted.bias is not None
    concepts = [
        {
            "id": f"c{k}",
            "name": f"c{k}",
            "probes": [f"p{k}-{i}" for i in range(8)],
            "verification": [],
            "layer": 1,
            "method": "bottleneck",
            "confidence": 1.0,
        }
        for k in range(3)
    ]
    return Packet.create(
        kind="knowledge",
        provenance=make_provenance(method="test", created_at="2026-01-01T00:00:00Z"),
        tensors={
            "concepts.embeddings": centroids(train, labels, 3),
            "probes.states": train,
            "readout.weight": fitted.weight[:readout_rows],
            "readout.bias": fitted.bias[:readout_rows],
        },
        concepts=concepts,
        probes={"layer": 1, "pooling": "mean", "logit_scale": 20.0},
        readout={"kind": "linear"},
    )


def test_a_packet_carries_its_readout_and_readers_classify_by_it(tmp_path) -> None:
    packet = read_packet(_packet().save(tmp_path / "p.m2kt"))
    test, truth = _states(1, 20, spread=3.0)
    assert packet.manifest.readout is not None
    assert float((packet_scores(packet, test).argmax(1) == truth).float().mean()) >= 0.95


def test_a_readout_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(SchemaError, match="readout.weight must have shape"):
        _packet(readout_rows=2)


def test_a_linear_readout_is_calibrated_on_left_out_probes() -> None:
    train, labels = _states(0, 8, spread=3.0)
    test, truth = _states(1, 20, spread=3.0)
    score = score_reading(train, labels, 3)
    raw = fit_readout("linear", train, labels, 3)
    tempered = fit_readout("linear", train, labels, 3, score.temperature)
    assert score.temperature < 1
    assert torch.equal(raw.scores(test, test).argmax(1), tempered.scores(test, test).argmax(1))
    sure = torch.softmax(raw.scores(test, test), -1).max(1).values.mean()
    honest = torch.softmax(tempered.scores(test, test), -1).max(1).values.mean()
    assert honest < sure and float(honest) < 0.99
