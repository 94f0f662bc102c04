"""The frozen safety test sets written blind (issue 17): the second (`--set test2`), written
before round 3 because the first was read in two design rounds, the third (`--set test3`),
written before round 4 because the second was read in round 3, the fourth (`--set test4`),
written before round 5 because the third was read in round 4, the fifth (`--set test5`), written
before round 6 because the fourth was read in round 5, and the sixth (`--set test6`), written
for round 7 because the fifth was read in round 6.

Each is refused when changed; holds more undescribed harm categories than described ones; shares
no text with what the screen learns from, what it was tuned on or any set frozen before it; and,
by meaning in e1's space, its benign concepts mirror neither a benign reference line nor a benign
concept already looked at, and its undescribed harms match no line of the description list.
"""

from __future__ import annotations

import argparse
import functools
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import torch
from torch.nn import functional as F

from m2kt.bench.safety.run import (
    HERE,
    TEST_SETS,
    ConceptSet,
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
    subtle_descriptions,
    training_groups,
)

if TYPE_CHECKING:  # a name starting with Test at module level would be collected by pytest
    from m2kt.bench.safety.run import TestConcept

# each written after the sets listed before it in TEST_SETS
BLIND = ["test2", "test3", "test4", "test5", "test6"]
# Sets frozen before round 5's subtle harm categories (wrongs without violence, with their
# near-misses) are checked against the screen as it stood then: those categories came after
# their results were read, and now cover some of their undescribed harms.
BEFORE_SUBTLE = {"test", "test2", "test3"}
USER_SPECS = [load_spec(p) for p in sorted((HERE / "user_specs").glob("*.yaml"))]
FAR_FROM_REFERENCES = 0.5  # the first set's bound: a concept's mean to any single line
# A concept's mean to another concept's mean. In e1, first-set concepts that repeat a concept
# looked at before sit at 0.67-0.72 from it (virology / vaccination 0.72, grief / sadness 0.71,
# phobias / fear 0.69), and the two halves of one first-set concept (3 probes each) sit at a
# median 0.545 from each other: under the bound, a concept is further from every earlier concept
# than a concept's two halves usually are from each other.
NOT_A_MIRROR = 0.55


@functools.cache
def _frozen(name: str) -> ConceptSet:
    return frozen_test_set(*TEST_SETS[name])


def _earlier(name: str) -> list[TestConcept]:
    """The concepts of every frozen set written before this one."""
    before = list(TEST_SETS)[: list(TEST_SETS).index(name)]
    return [c for other in before for c in _frozen(other).concepts]


def _benign(name: str) -> list[TestConcept]:
    return [c for c in _frozen(name).concepts if not c.unsafe]


def _undescribed(name: str) -> list[TestConcept]:
    return [c for c in _frozen(name).concepts if c.unsafe and not c.described]


def _subtle(name: str) -> bool:
    return name not in BEFORE_SUBTLE


def _descriptions(name: str) -> list[str]:
    """The description list the set was written against."""
    left_out = set() if _subtle(name) else subtle_descriptions()
    return [d for d in default_unsafe_descriptions() if d not in left_out]


def _means(read: ReadTexts, probe_lists: list[list[str]]) -> torch.Tensor:
    """[K, d]: each list's mean state (the mean of its unit states), made unit."""
    return F.normalize(
        torch.stack([F.normalize(read(list(p)), dim=-1).mean(0) for p in probe_lists]), dim=-1
    )


@pytest.fixture(scope="module")
def benign_means(e1_read) -> Callable[[str], torch.Tensor]:
    """A set's benign concepts' means, read once per set."""
    return functools.cache(lambda name: _means(e1_read, [c.probes for c in _benign(name)]))


@pytest.mark.parametrize("name", BLIND)
def test_a_blind_set_is_refused_when_changed(name, tmp_path) -> None:
    path, digest = TEST_SETS[name]
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    assert frozen_test_set(copy, digest).sha256 == digest
    copy.write_bytes(path.read_bytes().replace(b"kill", b"kiss", 1))
    with pytest.raises(UsageError, match="frozen"):
        frozen_test_set(copy, digest)
    for other, (_, other_digest) in TEST_SETS.items():
        if other != name:  # nor is it taken for another set
            with pytest.raises(UsageError, match="frozen"):
                frozen_test_set(path, other_digest)


def test_each_set_choice_runs_on_its_own_file() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (choice,) = [a for a in parser._actions if a.dest == "set"]
    assert list(choice.choices or ()) == [*TEST_SETS, "dev"]
    for name, file in [
        ("test", "frozen_test_set.yaml"),
        ("test2", "frozen_test_set_v2.yaml"),
        ("test3", "frozen_test_set_v3.yaml"),
        ("test4", "frozen_test_set_v4.yaml"),
        ("test5", "frozen_test_set_v5.yaml"),
        ("test6", "frozen_test_set_v6.yaml"),
    ]:
        chosen, path = concept_set(name)
        assert path == f"bench/safety/{file}" and chosen.sha256 == TEST_SETS[name][1]
    assert concept_set("dev")[1] is None
    with pytest.raises(UsageError, match="no safety concept set"):
        concept_set("test7")


@pytest.mark.parametrize("name", BLIND)
def test_a_blind_set_holds_more_undescribed_harms_than_described(name) -> None:
    chosen = _frozen(name)
    unsafe = [c for c in chosen.concepts if c.unsafe]
    undescribed = _undescribed(name)
    assert len(unsafe) >= 22 and len(undescribed) >= len(unsafe) - len(undescribed)
    assert len(_benign(name)) >= 44 and chosen.blends == (0.25, 0.5, 0.75)
    assert all(len(c.probes) == 6 for c in chosen.concepts)
    assert len({c.name for c in chosen.concepts}) == len(chosen.concepts)


@pytest.mark.parametrize("name", BLIND)
def test_a_blind_set_shares_no_text_with_the_screen_the_dev_set_or_an_earlier_set(name) -> None:
    learnt = {t for g in training_groups() for t in g.texts}
    earlier = [*development_set().concepts, *_earlier(name)]
    looked_at = {p for c in earlier for p in c.probes}
    looked_at |= {p for spec in USER_SPECS for c in spec.concepts for p in c.probes}
    tested = [p for c in _frozen(name).concepts for p in c.probes]
    assert len(set(tested)) == len(tested)
    assert not set(tested) & (learnt | looked_at)
    categories = {g.name for g in training_groups(subtle=_subtle(name)) if g.category}
    used = {c.name for c in earlier if c.unsafe} | categories
    assert not {c.name for c in _undescribed(name)} & used


@pytest.mark.parametrize("name", BLIND)
def test_its_benign_concepts_do_not_mirror_a_reference_by_meaning(
    name, e1_read, benign_means
) -> None:
    references = F.normalize(e1_read(default_benign_references()), dim=-1)
    nearest = (benign_means(name) @ references.T).max(-1).values
    assert float(nearest.max()) < FAR_FROM_REFERENCES, {
        c.name: round(float(v), 3)
        for c, v in zip(_benign(name), nearest, strict=True)
        if v >= FAR_FROM_REFERENCES
    }


@pytest.mark.parametrize("name", BLIND)
def test_its_benign_concepts_do_not_mirror_a_benign_concept_looked_at_before(
    name, e1_read, benign_means
) -> None:
    """Nor an earlier frozen set's, the development set's or a user spec's concept, nor a benign
    group the screen learns from (its calibration concepts and its blocks of benign examples)."""
    earlier = [
        (c.name, list(c.probes))
        for c in [*_earlier(name), *development_set().concepts]
        if not c.unsafe
    ]
    earlier += [(c.name, list(c.probes)) for spec in USER_SPECS for c in spec.concepts]
    earlier += [
        (g.name, list(g.texts))
        for g in training_groups(subtle=_subtle(name))
        if not g.unsafe and g.name != "benign references"  # lines, checked above
    ]
    nearest, which = (benign_means(name) @ _means(e1_read, [p for _, p in earlier]).T).max(-1)
    assert float(nearest.max()) < NOT_A_MIRROR, {
        c.name: (round(float(v), 3), earlier[int(k)][0])
        for c, v, k in zip(_benign(name), nearest, which, strict=True)
        if v >= NOT_A_MIRROR
    }


@pytest.mark.parametrize("name", BLIND)
def test_its_undescribed_harms_match_no_description_by_meaning(name, e1_read) -> None:
    descriptions = F.normalize(e1_read(_descriptions(name)), dim=-1)
    undescribed = _undescribed(name)
    nearest = (_means(e1_read, [c.probes for c in undescribed]) @ descriptions.T).max(-1).values
    assert float(nearest.max()) < FAR_FROM_REFERENCES, {
        c.name: round(float(v), 3)
        for c, v in zip(undescribed, nearest, strict=True)
        if v >= FAR_FROM_REFERENCES
    }
