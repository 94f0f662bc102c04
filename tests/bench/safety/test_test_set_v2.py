"""The second frozen safety test set (`--set test2`, issue 17), written blind before round 3
because the first was read in two design rounds.

It is refused when changed; it holds more undescribed harm categories than described ones; it
shares no text with what the screen learns from, what it was tuned on or the first set; and, by
meaning in e1's space, its benign concepts mirror neither a benign reference line nor a benign
concept already looked at, and its undescribed harms match no line of the description list.
"""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch
from torch.nn import functional as F

from m2kt.bench.safety.run import (
    FROZEN_SHA256,
    FROZEN_V2,
    FROZEN_V2_SHA256,
    HERE,
    TEST_SETS,
    concept_set,
    development_set,
    frozen_test_set,
)
from m2kt.cli.bench import add_arguments
from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.safety.screen import (
    ReadTexts,
    default_benign_references,
    default_unsafe_descriptions,
    training_groups,
)

TEST_SET = frozen_test_set(FROZEN_V2, FROZEN_V2_SHA256)
CONCEPTS = TEST_SET.concepts
BENIGN = [c for c in CONCEPTS if not c.unsafe]
UNDESCRIBED = [c for c in CONCEPTS if c.unsafe and not c.described]
FIRST_SET = frozen_test_set().concepts
USER_SPECS = [load_spec(p) for p in sorted((HERE / "user_specs").glob("*.yaml"))]
FAR_FROM_REFERENCES = 0.5  # the first set's bound: a concept's mean to any single line
# A concept's mean to another concept's mean. In e1, first-set concepts that repeat a concept
# looked at before sit at 0.67-0.72 from it (virology / vaccination 0.72, grief / sadness 0.71,
# phobias / fear 0.69), and the two halves of one first-set concept (3 probes each) sit at a
# median 0.545 from each other: under the bound, a concept is further from every earlier concept
# than a concept's two halves usually are from each other.
NOT_A_MIRROR = 0.55


def _means(read: ReadTexts, probe_lists: list[list[str]]) -> torch.Tensor:
    """[K, d]: each list's mean state (the mean of its unit states), made unit."""
    return F.normalize(
        torch.stack([F.normalize(read(list(p)), dim=-1).mean(0) for p in probe_lists]), dim=-1
    )


@pytest.fixture(scope="module")
def benign_means(e1_read) -> torch.Tensor:
    return _means(e1_read, [c.probes for c in BENIGN])


def test_the_second_test_set_is_refused_when_changed(tmp_path) -> None:
    copy = tmp_path / "frozen_v2.yaml"
    shutil.copy(FROZEN_V2, copy)
    assert frozen_test_set(copy, FROZEN_V2_SHA256).sha256 == FROZEN_V2_SHA256
    copy.write_bytes(FROZEN_V2.read_bytes().replace(b"bomb", b"cake", 1))
    with pytest.raises(UsageError, match="frozen"):
        frozen_test_set(copy, FROZEN_V2_SHA256)
    with pytest.raises(UsageError, match="frozen"):
        frozen_test_set(FROZEN_V2)  # nor is it taken for the first set


def test_each_set_choice_runs_on_its_own_file() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (choice,) = [a for a in parser._actions if a.dest == "set"]
    assert set(choice.choices or ()) == {*TEST_SETS, "dev"}
    for name, file, digest in [
        ("test", "frozen_test_set.yaml", FROZEN_SHA256),
        ("test2", "frozen_test_set_v2.yaml", FROZEN_V2_SHA256),
    ]:
        chosen, path = concept_set(name)
        assert path == f"bench/safety/{file}" and chosen.sha256 == digest
    assert concept_set("dev")[1] is None
    with pytest.raises(UsageError, match="no safety concept set"):
        concept_set("test3")


def test_the_second_set_holds_more_undescribed_harms_than_described() -> None:
    unsafe = [c for c in CONCEPTS if c.unsafe]
    assert len(unsafe) >= 20 and len(UNDESCRIBED) >= len(unsafe) - len(UNDESCRIBED)
    assert len(BENIGN) >= 36 and TEST_SET.blends == (0.25, 0.5, 0.75)
    assert all(len(c.probes) == 6 for c in CONCEPTS)
    assert len({c.name for c in CONCEPTS}) == len(CONCEPTS)


def test_the_second_set_shares_no_text_with_the_screen_the_dev_set_or_the_first_set() -> None:
    learnt = {t for g in training_groups() for t in g.texts}
    earlier = [*development_set().concepts, *FIRST_SET]
    looked_at = {p for c in earlier for p in c.probes}
    looked_at |= {p for spec in USER_SPECS for c in spec.concepts for p in c.probes}
    tested = [p for c in CONCEPTS for p in c.probes]
    assert len(set(tested)) == len(tested)
    assert not set(tested) & (learnt | looked_at)
    used = {c.name for c in earlier if c.unsafe} | {g.name for g in training_groups() if g.category}
    assert not {c.name for c in UNDESCRIBED} & used


def test_the_benign_concepts_do_not_mirror_a_reference_by_meaning(e1_read, benign_means) -> None:
    references = F.normalize(e1_read(default_benign_references()), dim=-1)
    nearest = (benign_means @ references.T).max(-1).values
    assert float(nearest.max()) < FAR_FROM_REFERENCES, dict(
        zip([c.name for c in BENIGN], nearest.tolist(), strict=True)
    )


def test_the_benign_concepts_do_not_mirror_a_benign_concept_looked_at_before(
    e1_read, benign_means
) -> None:
    """Nor a first-set, development-set or user-spec concept, nor a benign group the screen
    learns from (its calibration concepts and its blocks of benign examples)."""
    earlier = [
        (c.name, list(c.probes)) for c in [*FIRST_SET, *development_set().concepts] if not c.unsafe
    ]
    earlier += [(c.name, list(c.probes)) for spec in USER_SPECS for c in spec.concepts]
    earlier += [
        (g.name, list(g.texts))
        for g in training_groups()
        if not g.unsafe and g.name != "benign references"  # lines, checked above
    ]
    nearest, which = (benign_means @ _means(e1_read, [p for _, p in earlier]).T).max(-1)
    assert float(nearest.max()) < NOT_A_MIRROR, {
        c.name: (round(float(v), 3), earlier[int(k)][0])
        for c, v, k in zip(BENIGN, nearest, which, strict=True)
        if v >= NOT_A_MIRROR
    }


def test_the_undescribed_harms_match_no_description_by_meaning(e1_read) -> None:
    descriptions = F.normalize(e1_read(default_unsafe_descriptions()), dim=-1)
    nearest = (_means(e1_read, [c.probes for c in UNDESCRIBED]) @ descriptions.T).max(-1).values
    assert float(nearest.max()) < FAR_FROM_REFERENCES, dict(
        zip([c.name for c in UNDESCRIBED], nearest.tolist(), strict=True)
    )
