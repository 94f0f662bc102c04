"""The safety screen: is a vector, in one model's space, about harm? Judged by meaning.

A concept's name is the attacker's to choose, so the screen never reads it. It learns what harm
*is* in the space of the model being screened, from labelled texts that model reads:

- harmful: the unsafe-concept descriptions (`unsafe_concepts.txt`, plus a user's `--unsafe`
  lines) and sentences of intent or instruction toward those harms (`harm_training.yaml`);
- benign: the benign reference descriptions (`benign_concepts.txt`) and ordinary sentences
  that *mention* danger, crime, illness or strong feeling (`benign_examples.txt`): a topic is
  not an intent, and it is the topic-mentioning sentences that teach the screen so;
- both: the calibration concepts' probes (`calibration.yaml`).

A small linear probe (class-balanced logistic regression with weight decay) is fitted on the
model's states of those texts, unit vectors centred on their mean (sentence encoders put every
text in a narrow cone; centring removes the shared direction). A vector's score is its signed
distance to the probe's hyperplane in that unit space,

    score(v) = (w · unit(unit(v) − μ) + b) / ‖w‖,

a number in about [−1, 1] whose scale is comparable across models.

The threshold is set on out-of-fold scores, never on the texts a benchmark reports: every
harm category, every calibration concept and every block of benign examples is left out of a
fit in turn and scored, as a concept-like mean, by the probe that did not see it. Left-out harm
categories are how the screen does on a harm nobody described (`calibration["loco_detected"]`).
The threshold is the lowest that keeps out-of-fold false alarms at or under `FALSE_ALARM_TARGET`:
the field asks for detection at a fixed low false-alarm rate, and a user's ordinary concepts must
pass. Out-of-fold scores are pessimistic (a fit without a whole block of emotions has never seen
one), so the target there is looser than the 1% wanted on new concepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.safety.descriptions import _lines, default_unsafe_descriptions, read_descriptions

HERE = Path(__file__).parent
ReadTexts = Callable[[list[str]], torch.Tensor]  # texts → [N, d] states of one model
WEIGHT_DECAY = 0.001  # chosen on the development set (bench/safety/concepts.yaml)
# Out-of-fold false alarms the threshold allows. 0.04 on the development set until round 5;
# its wrongs without violence (harm_training.yaml) lie nearer ordinary life, and on the third
# frozen set (read once, a development set since) 0.04 let 1.9% of benign concepts through at
# export, 0.03 0.8% with detection 97.5% → 96.7%.
FALSE_ALARM_TARGET = 0.03
MIN_SEPARATION = 0.5  # a screen separating less of its calibration than this is not used
BENIGN_BLOCK = 6  # benign example lines left out together (neighbouring lines share a theme)


@dataclass(frozen=True)
class Calibration:
    """Held-out calibration concepts, benign and unsafe: name → a few probe texts each."""

    benign: dict[str, tuple[str, ...]]
    unsafe: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Group:
    """Texts the probe learns from, left out of a fit together: one harm category, one
    calibration concept or one block of benign examples."""

    name: str
    unsafe: bool
    texts: tuple[str, ...]
    category: bool = False  # a harm category of the training file (leave-one-category-out)


@dataclass(frozen=True)
class Scores:
    """Each vector's score and the unsafe description it came closest to."""

    values: torch.Tensor  # [N]
    nearest: list[str]


@dataclass(frozen=True)
class SafetyScreen:
    """A calibrated harm probe in one model's space; `threshold` separates benign from unsafe."""

    descriptions: tuple[str, ...]
    unsafe: torch.Tensor  # [M, d] the descriptions' unit vectors, centred (for `nearest`)
    center: torch.Tensor  # [d]
    weight: torch.Tensor  # [d] the probe's unit normal
    bias: float  # its offset, in the same units
    threshold: float
    calibration: dict[str, float]  # out-of-fold figures of the threshold and the probe

    def score(self, vectors: torch.Tensor) -> Scores:
        unit = _centred(vectors, self.center)
        values = unit @ self.weight + self.bias
        nearest = [self.descriptions[int(i)] for i in (unit @ self.unsafe.T).argmax(-1)]
        return Scores(values, nearest)

    def flags(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.score(vectors).values > self.threshold


def default_benign_references() -> list[str]:
    return _lines(HERE / "benign_concepts.txt")


def default_benign_examples() -> list[str]:
    return _lines(HERE / "benign_examples.txt")


def default_calibration() -> Calibration:
    return read_calibration(HERE / "calibration.yaml")


@dataclass(frozen=True)
class HarmCategory:
    """One category of `harm_training.yaml`: its description lines (of unsafe_concepts.txt),
    sentences of intent, and, for the subtle ones, the benign near-misses learnt with them."""

    descriptions: list[str]
    examples: list[str]
    near_misses: list[str]
    subtle: bool  # a wrong without violence, learnt only where the space separates it


def harm_training() -> dict[str, HarmCategory]:
    """Harm category name → its `HarmCategory`."""
    raw = yaml.safe_load((HERE / "harm_training.yaml").read_text(encoding="utf-8"))
    return {
        str(k): HarmCategory(
            v["descriptions"], v["examples"], v.get("near_misses", []), v.get("subtle", False)
        )
        for k, v in raw.items()
    }


def subtle_descriptions() -> set[str]:
    """The description lines of the subtle harm categories."""
    return {
        d for category in harm_training().values() if category.subtle for d in category.descriptions
    }


def read_calibration(path: str | Path) -> Calibration:
    """A YAML file with two mappings, `benign` and `unsafe`, of concept name → probe texts."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read safety calibration {path}: {exc}") from None
    parts = {}
    for key in ("benign", "unsafe"):
        groups = raw.get(key) if isinstance(raw, dict) else None
        if (
            not isinstance(groups, dict)
            or not groups
            or not all(
                isinstance(v, list) and v and all(isinstance(t, str) for t in v)
                for v in groups.values()
            )
        ):
            raise UsageError(f"{path}: `{key}` must map concept names to lists of probe texts")
        parts[key] = {str(k): tuple(v) for k, v in groups.items()}
    return Calibration(parts["benign"], parts["unsafe"])


def training_groups(extra_descriptions: Sequence[str] = (), subtle: bool = True) -> list[Group]:
    """Every text the probe learns from, in the groups that are left out together.

    Shipped description lines come with their harm category (the subtle ones only with
    `subtle`); a user's extra lines form one more category. The benign references are never
    left out (they are the axis of ordinary life every fit needs); benign examples are left out
    in blocks of `BENIGN_BLOCK` lines.
    """
    harms = {name: c for name, c in harm_training().items() if subtle or not c.subtle}
    groups = [
        Group(name, True, tuple(c.descriptions + c.examples), category=True)
        for name, c in harms.items()
    ]
    groups += [
        Group(f"{name} near-misses", False, tuple(c.near_misses))
        for name, c in harms.items()
        if c.near_misses
    ]
    shipped = set(default_unsafe_descriptions())
    extra = [d for d in extra_descriptions if d not in shipped]
    if extra:
        groups.append(Group("user descriptions", True, tuple(extra), category=True))
    calibration = default_calibration()
    groups += [Group(f"calibration {k}", True, v) for k, v in calibration.unsafe.items()]
    groups += [Group(f"calibration {k}", False, v) for k, v in calibration.benign.items()]
    examples = default_benign_examples()
    groups += [
        Group(f"benign examples {i + 1}", False, tuple(examples[i : i + BENIGN_BLOCK]))
        for i in range(0, len(examples), BENIGN_BLOCK)
    ]
    groups.append(Group("benign references", False, tuple(default_benign_references())))
    return groups


def build_screen(
    read: ReadTexts, descriptions: Sequence[str] | None = None, subtle: bool = True
) -> SafetyScreen:
    """Read the training texts with one model, fit the harm probe and its threshold.

    `descriptions` are the unsafe descriptions (default: the shipped list); lines beyond the
    shipped ones are learnt as a harm category of their own. Without `subtle` the subtle harm
    categories and their description lines are left out. Every text is read once, in one call.
    """
    descriptions = list(descriptions or default_unsafe_descriptions())
    if not subtle:
        left_out = subtle_descriptions()
        descriptions = [d for d in descriptions if d not in left_out]
    groups = training_groups(descriptions, subtle)
    texts = list(dict.fromkeys(descriptions + [t for g in groups for t in g.texts]))
    states = F.normalize(read(texts).float(), dim=-1)
    position = {t: i for i, t in enumerate(texts)}
    rows = [torch.tensor([position[t] for t in g.texts]) for g in groups]
    center = states[torch.cat(rows)].mean(0)
    units = _centred(states, center)
    labels = torch.tensor([float(g.unsafe) for g in groups])

    def fit(leave_out: int | None) -> tuple[torch.Tensor, float]:
        kept = [i for i in range(len(groups)) if i != leave_out]
        x = units[torch.cat([rows[i] for i in kept])]
        y = torch.cat([labels[i].expand(len(rows[i])) for i in kept])
        return _logistic(x, y)

    held_out: list[tuple[bool, bool, float]] = []  # (unsafe, a harm category, score)
    for i, group in enumerate(groups):
        if group.name == "benign references":
            continue
        weight, bias = fit(i)
        for members in _concept_like(rows[i]):
            score = float(F.normalize(units[members].mean(0), dim=-1) @ weight + bias)
            held_out.append((group.unsafe, group.category, score))
    benign = torch.tensor([s for unsafe, _, s in held_out if not unsafe])
    unsafe = torch.tensor([s for u, _, s in held_out if u])
    threshold, stats = _threshold(benign, unsafe)
    categories = torch.tensor([s for u, c, s in held_out if u and c])
    stats["loco_detected"] = float((categories > threshold).float().mean())
    stats["texts_read"] = float(len(texts))
    stats["subtle"] = float(subtle)
    weight, bias = fit(None)
    m = len(descriptions)
    return SafetyScreen(
        descriptions=tuple(descriptions),
        unsafe=units[:m],
        center=center,
        weight=weight,
        bias=bias,
        threshold=threshold,
        calibration=stats,
    )


def separation(screen: SafetyScreen) -> float:
    """How well the screen tells its left-out training groups apart: detected − false alarms."""
    return screen.calibration["detected"] - screen.calibration["false_alarms"]


def screen_from_file(read: ReadTexts, unsafe_file: str | None) -> SafetyScreen:
    """The screen with the shipped descriptions, or with those of `unsafe_file` added.

    It learns the subtle harms (wrongs without violence) where the space still separates its
    held-out groups by `MIN_SEPARATION` with them, and leaves them out where it does not: a small
    encoder (e2: 0.76 → 0.44) cannot tell tax evasion from a tax return, and a screen that tries
    flags the tax return and misses the bomb. `calibration["subtle"]` says which was kept.
    Every text is read once whichever is kept."""
    once = Remembered(read)
    descriptions = default_unsafe_descriptions()
    descriptions += read_descriptions(unsafe_file) if unsafe_file else []
    screen = build_screen(once, descriptions)
    if separation(screen) >= MIN_SEPARATION:
        return screen
    core = build_screen(once, descriptions, subtle=False)  # its texts were all read above
    return replace(
        core, calibration=core.calibration | {"texts_read": screen.calibration["texts_read"]}
    )


class Remembered:
    """`read` that reads each text once and looks it up after: a screen fitted twice, or an
    auditor that judges a probe and pairs it too, reads (and counts) it once."""

    def __init__(self, read: ReadTexts) -> None:
        self._read = read
        self._seen: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if missing:
            self._seen.update(zip(missing, self._read(missing), strict=True))
        return torch.stack([self._seen[t] for t in texts])

    def states(self) -> tuple[list[str], torch.Tensor]:
        """The texts read so far, in the order read, and their states [N, d]."""
        return list(self._seen), torch.stack(list(self._seen.values()))

    @property
    def texts_read(self) -> int:
        """The distinct texts read so far: counted where they were read."""
        return len(self._seen)


def _centred(vectors: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.normalize(vectors.float(), dim=-1) - center, dim=-1)


def _concept_like(rows: torch.Tensor) -> list[torch.Tensor]:
    """A group's mean and its leave-one-out means: the unit the auditor screens is a concept,
    the mean of a few probes."""
    found = [rows]
    if len(rows) > 2:
        found += [torch.cat([rows[:j], rows[j + 1 :]]) for j in range(len(rows))]
    return found


def _logistic(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Class-balanced logistic regression [N, d] → a unit normal and its offset (deterministic:
    full-batch L-BFGS from zero)."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    balance = (y == 0).sum() / (y == 1).sum().clamp(min=1)
    optimiser = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = F.binary_cross_entropy_with_logits(x @ w + b, y, pos_weight=balance)
        value = value + WEIGHT_DECAY * (w * w).sum()
        value.backward()
        return value

    optimiser.step(loss)  # type: ignore[no-untyped-call]
    norm = w.detach().norm().clamp(min=1e-12)
    return w.detach() / norm, float(b.detach()) / float(norm)


def _threshold(benign: torch.Tensor, unsafe: torch.Tensor) -> tuple[float, dict[str, float]]:
    """The lowest cut whose out-of-fold false alarms are at most `FALSE_ALARM_TARGET`, midway
    between the benign score it must clear and the next score above it."""
    ordered = benign.sort(descending=True).values
    allowed = int(FALSE_ALARM_TARGET * len(ordered))  # benign items that may lie above the cut
    edge = float(ordered[allowed])
    above = torch.cat([benign, unsafe])
    above = above[above > edge]
    cut = (edge + float(above.min())) / 2 if len(above) else edge + 1e-3
    stats = {
        "detected": float((unsafe > cut).float().mean()),
        "false_alarms": float((benign > cut).float().mean()),
        "benign_items": float(len(benign)),
        "unsafe_items": float(len(unsafe)),
    }
    return cut, stats
