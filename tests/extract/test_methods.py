"""Each extraction method on tiny real transformers, on probes whose concepts are unmistakable."""

from __future__ import annotations

import pytest
import torch

from m2kt.concepts.geometry import leave_one_out_confidence
from m2kt.concepts.probing import aggregate_attention, read_probes
from m2kt.concepts.sets import Group
from m2kt.extract.attribution import (
    TOLERANCE,
    attribute,
    attributed_concepts,
    completeness_by_concept,
)
from m2kt.extract.bottleneck import bottleneck
from m2kt.extract.clustering import cluster

APPLES = ["apple apple apple", "an apple apple pie", "apple juice apple", "red apple apple"]
ZEBRAS = ["zebra zebra zebra", "a zebra zebra runs", "zebra stripes zebra", "old zebra zebra"]
TEXTS = APPLES + ZEBRAS
GROUPS = [Group("apple", "apple", [0, 1, 2, 3]), Group("zebra", "zebra", [4, 5, 6, 7])]


def test_bottleneck_is_the_mean_pooled_state_of_each_concept(tiny_bert) -> None:
    readings = read_probes(tiny_bert, TEXTS, [2], batch_size=3)
    concepts = bottleneck(readings.states[("mean", 2)], 2, GROUPS)
    for k, probes in enumerate((APPLES, ZEBRAS)):
        capture = tiny_bert.run(probes, hidden_layers=[2])
        expected = tiny_bert.pool(capture.hidden[2], capture.mask).mean(0)
        assert torch.allclose(concepts.embeddings[k], expected, atol=1e-5)
    assert concepts.confidence.tolist() == [1.0, 1.0]


def test_leave_one_out_confidence_drops_for_mixed_concepts() -> None:
    vectors = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [1.0, 0.05], [0.05, 1]])
    tidy = leave_one_out_confidence(vectors, torch.tensor([0, 0, 1, 1, 0, 1]), 2)
    mixed = leave_one_out_confidence(vectors, torch.tensor([0, 1, 0, 1, 0, 1]), 2)
    assert tidy.tolist() == [1.0, 1.0] and float(mixed.mean()) < 0.7


def test_clustering_finds_the_two_concepts_unnamed(tiny_llama) -> None:
    states = read_probes(tiny_llama, TEXTS, [2], poolings=["mean"]).states[("mean", 2)]
    concepts = cluster(states, TEXTS, list(range(8)), 2, 2, seed=0)
    found = sorted(sorted(g.probes) for g in concepts.groups)
    assert found == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(g.name.startswith("cluster ") for g in concepts.groups)
    assert concepts.embeddings.shape == (2, 32)
    again = cluster(states, TEXTS, list(range(8)), 2, 2, seed=0)
    assert torch.equal(again.embeddings, concepts.embeddings)


def test_attribution_points_at_the_distinguishing_token(tiny_bert) -> None:
    states = read_probes(tiny_bert, TEXTS, [2]).states[("mean", 2)]
    targets = bottleneck(states, 2, GROUPS).embeddings
    found = attribute(tiny_bert, TEXTS, [0] * 4 + [1] * 4, targets, 2, steps=8)
    concepts = attributed_concepts(found, GROUPS, 2)
    assert concepts.tokens is not None and concepts.units is not None
    assert concepts.tokens[0][0][0] == "apple" and concepts.tokens[1][0][0] == "zebra"
    assert all(0 <= unit < 32 for unit, _ in concepts.units[0])
    assert concepts.embeddings.shape == (2, 32) and concepts.method == "attribution"


def test_attention_maps_lose_heads_and_length_but_stay_distributions() -> None:
    weights = torch.rand(2, 3, 7, 7).softmax(-1)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    maps = aggregate_attention(weights, mask, 5)
    assert maps.shape == (2, 5, 5)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 5), atol=1e-5)


def test_attribution_starts_from_a_mask_baseline_and_sums_to_the_score_change(tiny_bert) -> None:
    states = read_probes(tiny_bert, TEXTS, [2]).states[("mean", 2)]
    targets = bottleneck(states, 2, GROUPS).embeddings
    found = attribute(tiny_bert, TEXTS, [0] * 4 + [1] * 4, targets, 2, steps=16)
    assert found.baseline == tiny_bert.tokenizer.mask_token
    # the path starts at the probe with its words masked, not at zero embeddings
    pooled = read_probes(tiny_bert, [TEXTS[0], "[MASK] [MASK] [MASK]"], [2]).states[("mean", 2)]
    centre = targets.mean(0, keepdim=True)
    cosines = (
        torch.nn.functional.normalize(pooled - centre, dim=-1)
        @ torch.nn.functional.normalize(targets - centre, dim=-1).T
    )
    score = cosines[:, 0] - cosines[:, 1]
    assert float(found.change[0]) == pytest.approx(float(score[0] - score[1]), abs=1e-4)
    gaps = completeness_by_concept(found, GROUPS)
    assert len(gaps) == 2 and max(gaps) < TOLERANCE


def test_words_every_concept_shares_are_no_concept_evidence(tiny_bert) -> None:
    texts = [f"the {t}" for t in TEXTS]
    states = read_probes(tiny_bert, texts, [2]).states[("mean", 2)]
    targets = bottleneck(states, 2, GROUPS).embeddings
    found = attribute(tiny_bert, texts, [0] * 4 + [1] * 4, targets, 2, steps=8)
    concepts = attributed_concepts(found, GROUPS, 2)
    assert concepts.tokens is not None
    assert concepts.tokens[0][0][0] == "apple" and concepts.tokens[1][0][0] == "zebra"
    shared = [dict(tokens).get("the", 0.0) for tokens in concepts.tokens]
    raw = [sum(found.tokens[i].get("the", 0.0) for i in g.probes) / 4 for g in GROUPS]
    assert min(shared) == 0.0  # credited to at most one concept, by its excess over the other
    assert max(shared) == pytest.approx(abs(raw[0] - raw[1]), abs=1e-5)
