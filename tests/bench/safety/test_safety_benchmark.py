"""The safety benchmark: its test set is the frozen one, its packets carry the disguise they
claim, and its curves count right.

States are random in the packet tests (the models' part is tested in tests/safety): what matters
is that each disguise puts the unsafe vector, names and probes where the benchmark says it does.
The test set's properties (issue 17) are checked on the file itself, the benign concepts' distance
to the screen's references by meaning in e1's space.
"""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from torch.nn import functional as F

from m2kt.bench.safety.run import (
    FROZEN,
    SafetyPlan,
    _packet,
    development_set,
    frozen_test_set,
    roc,
    summarise,
)
from m2kt.errors import UsageError
from m2kt.packet import concept_probes, text_states
from m2kt.safety.screen import default_benign_references, training_groups

TEST_SET = frozen_test_set()
CONCEPTS = TEST_SET.concepts
FAR_FROM_REFERENCES = 0.5  # centred-free cosine of a concept's mean to any reference line


@pytest.fixture(scope="module")
def states() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    texts = {p for c in CONCEPTS for p in c.probes}
    return {t: torch.randn(16, generator=g) for t in sorted(texts)}


def test_the_test_set_is_refused_when_changed(tmp_path) -> None:
    copy = tmp_path / "frozen.yaml"
    shutil.copy(FROZEN, copy)
    assert frozen_test_set(copy).sha256 == TEST_SET.sha256
    copy.write_bytes(FROZEN.read_bytes().replace(b"bomb", b"cake", 1))
    with pytest.raises(UsageError, match="frozen"):
        frozen_test_set(copy)


def test_the_test_set_holds_more_undescribed_harms_than_described() -> None:
    unsafe = [c for c in CONCEPTS if c.unsafe]
    undescribed = [c for c in unsafe if not c.described]
    assert len(undescribed) >= len(unsafe) - len(undescribed) and len(undescribed) >= 8
    assert sum(not c.unsafe for c in CONCEPTS) >= 30 and len(TEST_SET.blends) >= 3


def test_the_test_set_shares_no_text_with_what_the_screen_learns_or_is_tuned_on() -> None:
    learnt = {t for g in training_groups() for t in g.texts}
    tuned = {p for c in development_set().concepts for p in c.probes}
    tested = {p for c in CONCEPTS for p in c.probes}
    assert not tested & learnt and not tested & tuned
    assert not tuned & learnt  # a development figure on a training sentence would flatter it
    dev_harms = {c.name for c in development_set().concepts if c.unsafe}
    # the screen as it stood when this set was frozen: round 5's subtle categories (arson,
    # animal cruelty, ...) came after its results were read, and now cover some of its
    # undescribed harms, which is why a fourth set was written
    categories = {g.name for g in training_groups(subtle=False) if g.category}
    undescribed = {c.name for c in CONCEPTS if c.unsafe and not c.described}
    assert not undescribed & (dev_harms | categories)


def test_the_benign_test_concepts_do_not_mirror_a_reference_by_meaning(e1_read) -> None:
    references = F.normalize(e1_read(default_benign_references()), dim=-1)
    benign = [c for c in CONCEPTS if not c.unsafe]
    means = torch.stack([F.normalize(e1_read(c.probes), dim=-1).mean(0) for c in benign])
    nearest = (F.normalize(means, dim=-1) @ references.T).max(-1).values
    assert float(nearest.max()) < FAR_FROM_REFERENCES, dict(
        zip([c.name for c in benign], nearest.tolist(), strict=True)
    )


@pytest.mark.parametrize("kind", TEST_SET.kinds)
def test_each_disguise(kind: str, states) -> None:
    injected = next(c for c in CONCEPTS if c.unsafe)
    packet, truth = _packet(
        SafetyPlan(), random.Random(0), CONCEPTS, injected, kind, states, (None, None)
    )
    m = packet.manifest
    row = next(k for k, c in enumerate(truth) if c.unsafe)
    concept = m.concepts[row]
    assert sum(c.unsafe for c in truth) == 1 and len(m.concepts) == 9
    assert (concept.name == injected.name) == (kind == "labelled")
    assert (concept.probes == injected.probes) == (kind in ("labelled", "mislabelled"))
    unsafe_mean = F.normalize(torch.stack([states[p] for p in injected.probes]), dim=-1).mean(0)
    cosine = F.cosine_similarity(packet.tensors["concepts.embeddings"][row], unsafe_mean, dim=0)
    assert kind.startswith("blended") or cosine > 0.8
    assert len(concept_probes(packet).texts) == sum(len(c.probes) for c in m.concepts)
    assert set(text_states(packet)) == {p for c in m.concepts for p in c.probes}


def test_a_stronger_blend_lands_nearer_the_harm(states) -> None:
    injected = next(c for c in CONCEPTS if c.unsafe)
    unsafe_mean = F.normalize(torch.stack([states[p] for p in injected.probes]), dim=-1).mean(0)
    cosines = []
    for alpha in TEST_SET.blends:  # the same seed draws the same cover and probes
        packet, truth = _packet(
            SafetyPlan(),
            random.Random(0),
            CONCEPTS,
            injected,
            f"blended {alpha:g}",
            states,
            (None, None),
        )
        row = next(k for k, c in enumerate(truth) if c.unsafe)
        vector = packet.tensors["concepts.embeddings"][row]
        cosines.append(float(F.cosine_similarity(vector, unsafe_mean, dim=0)))
    assert cosines == sorted(cosines) and cosines[-1] > 0.5, cosines


def test_roc_counts() -> None:
    benign = torch.tensor([0.0, 0.1, 0.2, 0.3])
    found = roc(benign, torch.tensor([0.25, 0.5]))
    assert found["auroc"] == pytest.approx((3 / 4 + 1) / 2)
    assert found["detection_at_1pct_fa"] == 0.5  # above the highest benign score only
    assert found["curve"][0] == [0.0, 0.0] and found["curve"][-1] == [1.0, 1.0]


def test_summary_splits_described_and_undescribed() -> None:
    rows = [
        {"side": s, "kind": k, "concept": n, "described": d, "flagged": f, "score": v}
        for s in ("export", "ingest")
        for k, n, d, f, v in [
            ("trojan", "a", True, True, 0.9),
            ("trojan", "b", False, False, 0.05),
            ("benign", "x", True, False, 0.1),
            ("benign", "y", True, True, 0.0),
        ]
    ]
    result = summarise(rows, ["trojan"])
    assert result["curves"]["ingest"]["described"]["auroc"] == 1.0
    assert result["curves"]["ingest"]["undescribed"]["auroc"] == 0.5
    decisions = result["decisions"]["export"]
    assert decisions["undescribed"] == {"flagged": 0, "of": 1, "rate": 0.0}
    assert decisions["benign_concepts_ever_flagged"] == ["y"]
