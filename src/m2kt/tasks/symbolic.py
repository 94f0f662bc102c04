"""Seeded symbolic reasoning problems: computations a small student cannot yet do.

Knowledge transfer is easiest to judge on a skill the student lacks and the teacher has, with
answers that can be checked exactly. Four families, each a classification over fixed-length
token sequences:

- `modsum`: `(a + b + c) mod p`, option `p` (default 23); answers `"0"` .. `"p-1"`.
- `addition`: two `digits`-digit numbers (default 2), one token per digit, most significant
  first and zero-padded, so carries matter; answers `"0"` .. `"2·(10^digits - 1)"`.
- `boolean`: a formula of exact depth `depth` (default 2) over `variables` variables
  (default 3) with and / or / not, after an assignment; answers `"False"`, `"True"`, balanced
  in every split.
- `binding`: a chain of `length` assignments (default 3) among `distractors` constant
  assignments (default 2), statements shuffled with the chain kept in order, so every
  variable is assigned before it is read; the answer is the queried variable's digit.

Every family numbers all its distinct problems, so a task draws distinct problem numbers with
`random.Random(seed)`: splits never share a token sequence, requests larger than the problem
space fail with the exact count, and the same seed and options give the same tensors. The test
split is drawn first, then validation, then training, so the test set depends only on the
seed, the options and its own size.

Default split sizes (train / val / test) differ by family because the problem spaces do:
modsum 8,000 / 1,000 / 2,000 (12,167 problems at p = 23), addition 6,000 / 1,000 / 2,000
(10,000 at 2 digits), boolean and binding 10,000 / 1,000 / 2,000.

Token id 0 is `<pad>` in every vocabulary; only boolean formulas, whose length varies with
their negations, are padded, at the end.
"""

from __future__ import annotations

import itertools
import math
import random
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch

from m2kt.errors import UsageError

PAD = "<pad>"
_SHUFFLE_LIMIT = 1 << 18
"""Problem spaces up to this size are shuffled whole; larger ones are sampled with rejection."""


@dataclass(frozen=True)
class SymbolicSplit:
    """`texts[i]` is the readable problem, `tokens[i]` its ids ([N, T], long) and `labels[i]`
    the index of its answer in the task's classes ([N], long)."""

    texts: list[str]
    tokens: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.labels.shape != (len(self.texts),):
            raise ValueError(
                f"texts, tokens {tuple(self.tokens.shape)} and labels "
                f"{tuple(self.labels.shape)} disagree on the number of problems"
            )
        if self.tokens.shape[0] != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {self.tokens.shape[0]} token rows")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int]) -> SymbolicSplit:
        return SymbolicSplit([self.texts[i] for i in index], self.tokens[index], self.labels[index])


@dataclass(frozen=True)
class SymbolicTask:
    """Three disjoint splits of one family; `options` are the family's options, defaults
    included, so the task can be recorded and drawn again with `symbolic_task`."""

    name: str
    vocabulary: tuple[str, ...]
    classes: tuple[str, ...]
    train: SymbolicSplit
    val: SymbolicSplit
    test: SymbolicSplit
    seed: int = 0
    options: Mapping[str, int] = field(default_factory=dict)

    @property
    def sequence_length(self) -> int:
        return int(self.train.tokens.shape[1])


class Problem(NamedTuple):
    text: str
    tokens: tuple[str, ...]
    answer: str


class SymbolicFamily:
    """One kind of problem, with a numbering of all its distinct problems: `problem(i)` for
    `0 <= i < count` gives different token sequences for different `i`, which is what makes
    disjoint splits and exact counts cheap."""

    name: ClassVar[str]
    OPTIONS: ClassVar[dict[str, tuple[int, int, int]]]
    """Option name -> (default, lowest, highest)."""
    SIZES: ClassVar[tuple[int, int, int]] = (10_000, 1_000, 2_000)
    """Default train, val and test sizes."""
    BALANCED: ClassVar[bool] = False
    """Whether every split holds each class equally often."""

    vocabulary: tuple[str, ...]
    classes: tuple[str, ...]
    count: int
    length: int

    def __init__(self, **options: int) -> None:
        for key, value in options.items():
            if key not in self.OPTIONS:
                raise UsageError(
                    f"{self.name}: unknown option {key!r}", f"valid options: {self.describe()}"
                )
            low, high = self.OPTIONS[key][1:]
            if type(value) is not int or not low <= value <= high:
                raise UsageError(
                    f"{self.name}: option {key}={value!r} must be an integer in {low}..{high}",
                    f"valid options: {self.describe()}",
                )
        self.options = {key: options.get(key, spec[0]) for key, spec in self.OPTIONS.items()}

    @classmethod
    def describe(cls) -> str:
        return ", ".join(
            f"{key} ({low}..{high}, default {default})"
            for key, (default, low, high) in cls.OPTIONS.items()
        )

    def problem(self, index: int) -> Problem:
        raise NotImplementedError


def _digits(index: int, radices: list[int]) -> Iterator[int]:
    """`index` in mixed radix, least significant digit first."""
    for radix in radices:
        index, digit = divmod(index, radix)
        yield digit


class ModularSum(SymbolicFamily):
    """`(a + b + c) mod p`: the answer depends on all three operands at once."""

    name = "modsum"
    OPTIONS = {"p": (23, 2, 1000)}
    SIZES = (8_000, 1_000, 2_000)

    def __init__(self, **options: int) -> None:
        super().__init__(**options)
        self.p = self.options["p"]
        self.vocabulary = (PAD, *(str(i) for i in range(self.p + 1)), "+", "mod", "=")
        self.classes = tuple(str(i) for i in range(self.p))
        self.count = self.p**3
        self.length = 8

    def problem(self, index: int) -> Problem:
        a, b, c = _digits(index, [self.p] * 3)
        text = f"{a} + {b} + {c} mod {self.p} ="
        return Problem(text, tuple(text.split()), str((a + b + c) % self.p))


class Addition(SymbolicFamily):
    """Multi-digit addition with one token per digit, so the student must learn carries."""

    name = "addition"
    OPTIONS = {"digits": (2, 1, 4)}
    SIZES = (6_000, 1_000, 2_000)

    def __init__(self, **options: int) -> None:
        super().__init__(**options)
        self.digits = self.options["digits"]
        self.base = 10**self.digits
        self.vocabulary = (PAD, *string.digits, "+", "=")
        self.classes = tuple(str(i) for i in range(2 * (self.base - 1) + 1))
        self.count = self.base**2
        self.length = 2 * self.digits + 2

    def problem(self, index: int) -> Problem:
        x, y = _digits(index, [self.base, self.base])
        left, right = f"{x:0{self.digits}d}", f"{y:0{self.digits}d}"
        return Problem(f"{left} + {right} =", (*left, "+", *right, "="), str(x + y))


class BooleanFormula(SymbolicFamily):
    """A full binary and/or tree of exact depth with literals at the leaves and an optional
    `not` on every node, evaluated under an assignment written first, e.g.
    `a = 1, b = 0, c = 1 ; not (a or not b) and (c and a)`.

    A child subtree is always parenthesised, the root only when negated, so the text reads as
    Python. Negating the root maps True problems one to one onto False ones, so both answers
    are equally common and balancing the splits costs only a few redrawn problems.
    """

    name = "boolean"
    OPTIONS = {"variables": (3, 1, 10), "depth": (2, 0, 4)}
    BALANCED = True

    def __init__(self, **options: int) -> None:
        super().__init__(**options)
        self.names = string.ascii_lowercase[: self.options["variables"]]
        self.depth = self.options["depth"]
        self.vocabulary = (PAD, *self.names, "0", "1", "=", ",", ";", "(", ")", "not", "and", "or")
        self.classes = ("False", "True")
        self.radices = [2] * len(self.names) + self._radices(self.depth)
        self.count = math.prod(self.radices)
        formula = 2 * 2**self.depth + 4 * (2**self.depth - 1)  # every node negated
        self.length = 4 * len(self.names) + formula

    def _radices(self, depth: int) -> list[int]:
        """Choices in the order `_node` makes them: leaf = variable, not; node = left, and/or,
        right, not."""
        if depth == 0:
            return [len(self.names), 2]
        return [*self._radices(depth - 1), 2, *self._radices(depth - 1), 2]

    def _node(
        self, depth: int, digits: Iterator[int], values: dict[str, bool], root: bool
    ) -> tuple[list[str], bool]:
        if depth == 0:
            name = self.names[next(digits)]
            tokens, value = [name], values[name]
        else:
            left, left_value = self._node(depth - 1, digits, values, root=False)
            op = ("and", "or")[next(digits)]
            right, right_value = self._node(depth - 1, digits, values, root=False)
            value = left_value and right_value if op == "and" else left_value or right_value
            tokens = [*left, op, *right]
        negated = next(digits) == 1
        if depth > 0 and (negated or not root):
            tokens = ["(", *tokens, ")"]
        if negated:
            tokens, value = ["not", *tokens], not value
        return tokens, value

    def problem(self, index: int) -> Problem:
        digits = _digits(index, self.radices)
        values = {name: next(digits) == 1 for name in self.names}
        formula, value = self._node(self.depth, digits, values, root=True)
        tokens = [*" , ".join(f"{n} = {int(v)}" for n, v in values.items()).split(), ";"]
        tokens += formula
        text = " ".join(tokens).replace(" ,", ",").replace("( ", "(").replace(" )", ")")
        return Problem(text, tuple(tokens), str(value))


class VariableBinding(SymbolicFamily):
    """`a = 7 ; d = 4 ; b = a ; e = 1 ; c = b ; ? c`: follow a chain of copies back to its
    digit past distractors that assign digits to other variables. Variable names are drawn
    from a..z and the distractors take random places, the chain keeping its order."""

    name = "binding"
    OPTIONS = {"length": (3, 1, 8), "distractors": (2, 0, 4)}

    def __init__(self, **options: int) -> None:
        super().__init__(**options)
        self.chain, self.distractors = self.options["length"], self.options["distractors"]
        statements = self.chain + self.distractors
        self.places = list(itertools.combinations(range(statements), self.distractors))
        self.radices = [
            len(self.places),
            *range(26, 26 - statements, -1),
            *[10] * (1 + self.distractors),
        ]
        self.vocabulary = (PAD, *string.digits, *string.ascii_lowercase, "=", ";", "?")
        self.classes = tuple(string.digits)
        self.count = math.prod(self.radices)
        self.length = 4 * statements + 2

    def problem(self, index: int) -> Problem:
        digits = _digits(index, self.radices)
        places = set(self.places[next(digits)])
        pool = list(string.ascii_lowercase)
        names = [pool.pop(next(digits)) for _ in range(self.chain + self.distractors)]
        chain, others = names[: self.chain], names[self.chain :]
        value, *other_values = (next(digits) for _ in range(1 + self.distractors))
        copies = iter(
            [f"{chain[0]} = {value}"] + [f"{b} = {a}" for a, b in itertools.pairwise(chain)]
        )
        constants = iter(f"{n} = {v}" for n, v in zip(others, other_values, strict=True))
        statements = [next(constants) if i in places else next(copies) for i in range(len(names))]
        text = " ; ".join([*statements, f"? {chain[-1]}"])
        return Problem(text, tuple(text.split()), str(value))


FAMILIES: dict[str, type[SymbolicFamily]] = {
    family.name: family for family in (ModularSum, Addition, BooleanFormula, VariableBinding)
}


def symbolic_task(
    family: str,
    *,
    seed: int = 0,
    train: int | None = None,
    val: int | None = None,
    test: int | None = None,
    **options: int,
) -> SymbolicTask:
    """Distinct problems of `family` drawn with `seed`, split into train / val / test.

    Sizes left out take the family's defaults (see the module docstring); `options` are the
    family's own (`p`; `digits`; `variables`, `depth`; `length`, `distractors`).
    """
    if family not in FAMILIES:
        raise UsageError(
            f"unknown symbolic family {family!r}", f"choose one of: {', '.join(FAMILIES)}"
        )
    problems = FAMILIES[family](**options)
    sizes: dict[str, int] = {}
    for part, size, default in zip(
        ("train", "val", "test"), (train, val, test), problems.SIZES, strict=True
    ):
        if size is None:
            size = default
        if type(size) is not int or size < 0:
            raise UsageError(f"{family}: {part} size {size!r} must be a non-negative integer")
        sizes[part] = size
    total = sum(sizes.values())
    if total > problems.count:
        raise UsageError(
            f"{family} with {_options(problems)} has {problems.count:,} distinct problems, "
            f"but {total:,} were asked for (train {sizes['train']:,}, val {sizes['val']:,}, "
            f"test {sizes['test']:,})",
            "ask for fewer with train=, val=, test=, or enlarge the problem space: "
            + problems.describe(),
        )
    drawn = _draw(problems, sizes, random.Random(seed))
    index = {token: i for i, token in enumerate(problems.vocabulary)}
    label = {answer: i for i, answer in enumerate(problems.classes)}

    def split(chosen: list[Problem]) -> SymbolicSplit:
        rows = [
            [index[t] for t in p.tokens] + [0] * (problems.length - len(p.tokens)) for p in chosen
        ]
        return SymbolicSplit(
            texts=[p.text for p in chosen],
            tokens=torch.tensor(rows, dtype=torch.long).reshape(len(rows), problems.length),
            labels=torch.tensor([label[p.answer] for p in chosen], dtype=torch.long),
        )

    return SymbolicTask(
        name=family,
        vocabulary=problems.vocabulary,
        classes=problems.classes,
        seed=seed,
        options=dict(problems.options),
        **{part: split(drawn[part]) for part in ("train", "val", "test")},
    )


def _options(problems: SymbolicFamily) -> str:
    return ", ".join(f"{key}={value}" for key, value in problems.options.items())


def _numbers(count: int, rng: random.Random) -> Iterator[int]:
    """Distinct problem numbers in random order; endless when the space is sampled."""
    if count <= _SHUFFLE_LIMIT:
        order = list(range(count))
        rng.shuffle(order)
        yield from order
        return
    seen: set[int] = set()
    while True:
        number = rng.randrange(count)
        if number not in seen:
            seen.add(number)
            yield number


def _draw(
    problems: SymbolicFamily, sizes: dict[str, int], rng: random.Random
) -> dict[str, list[Problem]]:
    """Test, then val, then train problems from one stream of distinct numbers; for a balanced
    family each split takes `size // classes` of every class (the first classes one more)."""
    parts = ("test", "val", "train")
    numbers = _numbers(problems.count, rng)
    if not problems.BALANCED:
        stream = [problems.problem(n) for n in itertools.islice(numbers, sum(sizes.values()))]
        starts = list(itertools.accumulate((sizes[p] for p in parts), initial=0))
        return {p: stream[starts[i] : starts[i + 1]] for i, p in enumerate(parts)}
    classes = len(problems.classes)
    quota = {
        p: [sizes[p] // classes + (c < sizes[p] % classes) for c in range(classes)] for p in parts
    }
    wanted = [sum(quota[p][c] for p in parts) for c in range(classes)]
    found: dict[str, list[tuple[int, Problem]]] = {answer: [] for answer in problems.classes}
    limit = 100 * sum(wanted) + 1_000
    position = -1
    for position, number in enumerate(itertools.islice(numbers, limit)):
        problem = problems.problem(number)
        members = found[problem.answer]
        if len(members) < wanted[problems.classes.index(problem.answer)]:
            members.append((position, problem))
        if all(len(found[a]) == w for a, w in zip(problems.classes, wanted, strict=True)):
            break
    for answer, want in zip(problems.classes, wanted, strict=True):
        if len(found[answer]) < want:
            raise UsageError(
                f"{problems.name} with {_options(problems)}: only {len(found[answer]):,} "
                f"distinct problems with answer {answer} found in {position + 1:,} draws, "
                f"{want:,} needed to balance the splits",
                "ask for fewer with train=, val=, test=, or enlarge the problem space: "
                + problems.describe(),
            )
    drawn: dict[str, list[Problem]] = {}
    taken = [0] * classes
    for p in parts:
        chosen: list[tuple[int, Problem]] = []
        for c, answer in enumerate(problems.classes):
            chosen += found[answer][taken[c] : taken[c] + quota[p][c]]
            taken[c] += quota[p][c]
        drawn[p] = [problem for _, problem in sorted(chosen, key=lambda pair: pair[0])]
    return drawn
