"""The concept readout: a linear one where a centroid loses the concept, the centroid otherwise."""

from __future__ import annotations

import pytest
import torch

from m2kt.concepts.geometry import centroids
from m2kt.concepts.readout import SHRINKAGE, Readout, fit_readout, packet_scores, score_reading
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
    assert _accuracy("linear", train, labels, test, truth) >= 0.9
    assert _accuracy("centroid", train, labels, test, truth) < 0.7


def test_the_centroid_stays_where_it_is_as_good() -> None:
    train, labels = _states(0, 8, spread=0.01)
    score = score_reading(train, labels, 3)
    assert score.centroid.accuracy == 1.0 and score.kind == "centroid"


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
    assert float((packet_scores(packet, test).argmax(1) == truth).float().mean()) >= 0.9


def test_a_readout_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(SchemaError, match="readout.weight must have shape"):
        _packet(readout_rows=2)


def test_a_linear_readout_is_calibrated_on_left_out_probes() -> None:
    train, labels = _states(0, 8, spread=3.0)
    test, truth = _states(1, 20, spread=3.0)
    score = score_reading(train, labels, 3)
    raw = fit_readout("linear", train, labels, 3)
    tempered = fit_readout("linear", train, labels, 3, score.linear.temperature)
    assert score.linear.temperature < 1
    assert torch.equal(raw.scores(test, test).argmax(1), tempered.scores(test, test).argmax(1))
    sure = torch.softmax(raw.scores(test, test), -1).max(1).values.mean()
    honest = torch.softmax(tempered.scores(test, test), -1).max(1).values.mean()
    assert honest < sure and float(honest) < 0.99


def _two_kinds(seed: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four concepts: two far apart on loud units (one centroid each finds them), two told
    apart only by quiet units under loud noise (only a linear row finds them)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(per_class)
    states = 3.0 * torch.randn(len(labels), 16, generator=generator) + 50.0
    states[:, 0] += 40.0 * (labels == 0)
    states[:, 1] += 40.0 * (labels == 1)
    states[:, 2] = (
        50.0 + (labels == 2).float() + 0.15 * torch.randn(len(labels), generator=generator)
    )
    states[:, 3] = (
        50.0 + (labels == 3).float() + 0.15 * torch.randn(len(labels), generator=generator)
    )
    return states, labels


def test_each_concept_takes_the_form_that_tells_it_apart() -> None:
    train, labels = _two_kinds(0, 8)
    score = score_reading(train, labels, 4)
    assert score.forms == ("centroid", "centroid", "linear", "linear")
    assert score.kind == "mixed"
    assert score.mixed.accuracy >= max(score.centroid.accuracy, score.linear.accuracy)
    assert score.centroid.accuracy + 0.1 < score.mixed.accuracy
    # the packet carries the forms; a reader scores each concept by its own form
    fitted = fit_readout("linear", train, labels, 4, score.linear.temperature)
    assert fitted.weight is not None and fitted.bias is not None
    packet = _mixed_packet(train, labels, fitted, score.forms, score.centroid.temperature)
    test, truth = _two_kinds(1, 20)
    predicted = packet_scores(packet, test).argmax(1)
    assert float((predicted == truth).float().mean()) >= 0.9
    assert packet.manifest.readout is not None and packet.manifest.readout.forms == list(
        score.forms
    )


def _mixed_packet(train, labels, fitted: Readout, own, scale: float, **readout) -> Packet:
    """A packet whose readout scores concept k by its own form `own[k]`."""
    classes = len(own)
    concepts = [
        {
            "id": f"c{k}",
            "name": f"c{k}",
            "probes": [f"p{k}-{i}" for i in range(int((labels == k).sum()))],
            "method": "bottleneck",
            "confidence": 1.0,
        }
        for k in range(classes)
    ]
    return Packet.create(
        kind="knowledge",
        provenance=make_provenance(method="test", created_at="2026-01-01T00:00:00Z"),
        tensors={
            "concepts.embeddings": centroids(train, labels, classes),
            "probes.states": train,
            "readout.weight": fitted.weight,
            "readout.bias": fitted.bias,
        },
        concepts=concepts,
        probes={"layer": 1, "pooling": "mean", "logit_scale": 20.0},
        readout={"kind": "mixed", "forms": list(own), "centroid_scale": scale} | readout,
    )


def test_a_mixed_readout_without_its_forms_is_refused() -> None:
    train, labels = _two_kinds(0, 8)
    fitted = fit_readout("linear", train, labels, 4)
    with pytest.raises(SchemaError, match="needs 4 forms"):
        _mixed_packet(train, labels, fitted, ["linear"] * 4, 1.0, forms=["linear"] * 3)
    with pytest.raises(SchemaError, match="only a linear one has layers"):
        _mixed_packet(train, labels, fitted, ["linear"] * 4, 1.0, layers=[1, 2])


def test_the_shrunk_discriminant_is_the_same_with_more_features_than_probes() -> None:
    """Several layers side by side give thousands of features for a few dozen probes: the
    N × N route (Woodbury) must give the readout the d × d route gives."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(4)
    wide = torch.randn(12, 40, generator=generator) + labels[:, None].float()
    readout = fit_readout("linear", wide, labels, 3)
    x = wide.double()
    z = (x - x.mean(0)) / x.std(0)
    means = centroids(z.float(), labels, 3).double()
    residual = z - means[labels]
    covariance = residual.T @ residual / (12 - 3)
    scale = covariance.diagonal().mean()
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * torch.eye(40).double()
    direct = torch.linalg.solve(covariance, means.T) / x.std(0)[:, None]
    assert readout.weight is not None
    torch.testing.assert_close(readout.weight.double(), direct.T, rtol=1e-4, atol=1e-5)
