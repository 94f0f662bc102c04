import re

import pytest
import torch

from m2kt.errors import UsageError
from m2kt.tasks import FAMILIES, SymbolicSplit, SymbolicTask, symbolic_task

SMALL = {"train": 300, "val": 51, "test": 101}


def modsum_answer(text: str) -> str:
    match = re.fullmatch(r"(\d+) \+ (\d+) \+ (\d+) mod (\d+) =", text)
    assert match, text
    a, b, c, p = map(int, match.groups())
    assert max(a, b, c) < p
    return str((a + b + c) % p)


def addition_answer(text: str) -> str:
    match = re.fullmatch(r"(\d\d) \+ (\d\d) =", text)  # two digits by default, zero-padded
    assert match, text
    return str(int(match[1]) + int(match[2]))


def boolean_answer(text: str) -> str:
    assignment, formula = text.split(" ; ")
    values = {}
    for part in assignment.split(", "):
        name, value = part.split(" = ")
        assert value in ("0", "1")
        values[name] = value == "1"
    assert list(values) == ["a", "b", "c"]
    assert set(re.findall(r"[a-z]+", formula)) <= {"a", "b", "c", "and", "or", "not"}
    return str(bool(eval(formula, {"__builtins__": {}}, values)))


def binding_answer(text: str) -> str:
    *statements, query = text.split(" ; ")
    assert len(statements) == 5 and re.fullmatch(r"\? [a-z]", query)
    values: dict[str, str] = {}
    copies = 0
    for statement in statements:
        name, source = statement.split(" = ")
        assert name not in values  # every variable assigned once
        if source.isdigit():
            values[name] = source
        else:
            copies += 1
            values[name] = values[source]  # KeyError if read before it is assigned
    assert copies == 2  # a chain of three: one digit, two copies
    return values[query[2:]]


ANSWERS = {
    "modsum": modsum_answer,
    "addition": addition_answer,
    "boolean": boolean_answer,
    "binding": binding_answer,
}


def splits(task: SymbolicTask) -> list[SymbolicSplit]:
    return [task.train, task.val, task.test]


def rows(split: SymbolicSplit) -> set[tuple[int, ...]]:
    return {tuple(row) for row in split.tokens.tolist()}


def test_every_family_is_tested() -> None:
    assert set(FAMILIES) == set(ANSWERS)


@pytest.mark.parametrize("family", list(ANSWERS))
def test_same_seed_same_tensors_other_seed_other_problems(family: str) -> None:
    task, again = symbolic_task(family, **SMALL), symbolic_task(family, **SMALL)
    other = symbolic_task(family, seed=1, **SMALL)
    for a, b, c in zip(splits(task), splits(again), splits(other), strict=True):
        assert a.texts == b.texts
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
        assert a.tokens.dtype == a.labels.dtype == torch.long
        assert not torch.equal(a.tokens, c.tokens)
    assert (len(task.train), len(task.val), len(task.test)) == (300, 51, 101)


@pytest.mark.parametrize("family", list(ANSWERS))
def test_splits_hold_distinct_problems(family: str) -> None:
    task = symbolic_task(family, **SMALL)
    train, val, test = map(rows, splits(task))
    assert (len(train), len(val), len(test)) == (300, 51, 101)  # no repeat inside a split
    assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)
    assert len(set(task.train.texts) | set(task.val.texts) | set(task.test.texts)) == 452


@pytest.mark.parametrize("family", list(ANSWERS))
def test_labels_are_the_answers_and_tokens_spell_the_text(family: str) -> None:
    task = symbolic_task(family, **SMALL)
    assert task.vocabulary[0] == "<pad>" and len(set(task.vocabulary)) == len(task.vocabulary)
    for split in splits(task):
        assert split.tokens.shape == (len(split), task.sequence_length)
        assert split.tokens.min() >= 0 and split.tokens.max() < len(task.vocabulary)
        for text, row, label in zip(
            split.texts, split.tokens.tolist(), split.labels.tolist(), strict=True
        ):
            assert task.classes[label] == ANSWERS[family](text)
            length = sum(1 for t in row if t != 0)
            assert all(t == 0 for t in row[length:])  # padding only at the end
            assert "".join(task.vocabulary[t] for t in row[:length]) == text.replace(" ", "")


def test_addition_tokens_are_digits_most_significant_first() -> None:
    task = symbolic_task("addition", digits=3, train=50, val=0, test=0)
    assert task.sequence_length == 8 and len(task.classes) == 1999
    for text, row in zip(task.train.texts, task.train.tokens.tolist(), strict=True):
        match = re.fullmatch(r"(\d{3}) \+ (\d{3}) =", text)
        assert match, text
        assert [task.vocabulary[t] for t in row] == [*match[1], "+", *match[2], "="]


def test_boolean_classes_are_balanced_in_every_split() -> None:
    task = symbolic_task("boolean", train=301, val=50, test=99)
    assert task.classes == ("False", "True")
    for split, size in zip(splits(task), (301, 50, 99), strict=True):
        assert split.labels.bincount(minlength=2).tolist() == [(size + 1) // 2, size // 2]
    task = symbolic_task("boolean", variables=1, depth=0, train=2, val=0, test=2)
    assert sorted(task.train.texts + task.test.texts) == [
        "a = 0 ; a",
        "a = 0 ; not a",
        "a = 1 ; a",
        "a = 1 ; not a",
    ]
    with pytest.raises(UsageError, match="answer False"):  # 3 False wanted, 2 exist
        symbolic_task("boolean", variables=1, depth=0, train=1, val=1, test=2)


def test_whole_problem_space_and_stable_test_split() -> None:
    task = symbolic_task("modsum", p=5, train=100, val=10, test=15)
    assert len(rows(task.train) | rows(task.val) | rows(task.test)) == 125
    assert task.options == {"p": 5} and task.classes == ("0", "1", "2", "3", "4")
    other = symbolic_task("modsum", p=5, train=30, val=20, test=15)
    assert other.test.texts == task.test.texts  # the test split ignores the other sizes


def test_default_sizes_fit_the_problem_space() -> None:
    task = symbolic_task("modsum")
    assert (len(task.train), len(task.val), len(task.test)) == (8_000, 1_000, 2_000)
    assert task.options == {"p": 23} and len(task.classes) == 23
    assert symbolic_task("binding", train=10, val=10, test=10).sequence_length == 22


def test_subset_keeps_rows_together() -> None:
    split = symbolic_task("binding", **SMALL).val
    part = split.subset([4, 0])
    assert part.texts == [split.texts[4], split.texts[0]] and len(part) == 2
    assert torch.equal(part.tokens, split.tokens[[4, 0]])
    assert torch.equal(part.labels, split.labels[[4, 0]])


def test_bad_requests_say_what_is_valid() -> None:
    with pytest.raises(UsageError, match="unknown symbolic family 'sorting'") as error:
        symbolic_task("sorting")
    assert "modsum, addition, boolean, binding" in error.value.hint
    with pytest.raises(UsageError, match="unknown option 'q'") as error:
        symbolic_task("modsum", q=7)
    assert "p (2..1000, default 23)" in error.value.hint
    for bad in (1, 2.5, True):
        with pytest.raises(UsageError, match="must be an integer in 2..1000"):
            symbolic_task("modsum", p=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="depth=9"):
        symbolic_task("boolean", depth=9)
    with pytest.raises(UsageError, match="val size -1"):
        symbolic_task("binding", val=-1)
    with pytest.raises(UsageError, match="modsum with p=5 has 125 distinct problems") as error:
        symbolic_task("modsum", p=5, train=100, val=20, test=20)
    assert "140 were asked for" in str(error.value) and "train=" in error.value.hint
    with pytest.raises(UsageError, match="has 10,000 distinct problems"):
        symbolic_task("addition", train=9_000)
