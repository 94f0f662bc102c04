"""The safety screen: is a vector, in one model's space, about harm? Judged by meaning.

A concept's name is the attacker's to choose, so the screen never reads it. It compares the
vector with the model's own representations of unsafe-concept descriptions and, as a contrast,
of benign reference descriptions:

    score(v) = max_j cos(v − μ, u_j − μ) − max_k cos(v − μ, b_k − μ)

States are unit vectors first (a concept vector's norm means nothing across methods); μ is
the mean of all reference states: sentence encoders put every text in a narrow cone, and
raw cosines between unrelated texts are high; centring removes that shared direction. The
contrast makes the score a margin ("closer to some harm than to any ordinary topic") whose
scale is comparable across models. The threshold is chosen per model on held-out calibration
probes (`calibration.yaml`), never on the texts a benchmark reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.safety.descriptions import _lines, default_unsafe_descriptions, read_descriptions

HERE = Path(__file__).parent
ReadTexts = Callable[[list[str]], torch.Tensor]  # texts → [N, d] states of one model


@dataclass(frozen=True)
class Calibration:
    """Held-out calibration concepts, benign and unsafe: name → a few probe texts each."""

    benign: dict[str, tuple[str, ...]]
    unsafe: dict[str, tuple[str, ...]]

    def items(self) -> list[tuple[bool, list[str]]]:
        """(unsafe?, probes) for each concept and each of its leave-one-out subsets: the
        threshold is set on concept-like means, the unit the auditor screens."""
        found = []
        for unsafe, groups in ((False, self.benign), (True, self.unsafe)):
            for probes in groups.values():
                found.append((unsafe, list(probes)))
                if len(probes) > 2:
                    found += [(unsafe, [p for p in probes if p != q]) for q in probes]
        return found


@dataclass(frozen=True)
class Scores:
    """Each vector's score and the unsafe description it came closest to."""

    values: torch.Tensor  # [N]
    nearest: list[str]


@dataclass(frozen=True)
class SafetyScreen:
    """A calibrated screen in one model's space; `threshold` separates benign from unsafe."""

    descriptions: tuple[str, ...]
    unsafe: torch.Tensor  # [M, d] unit vectors, centred
    benign: torch.Tensor  # [B, d] unit vectors, centred
    center: torch.Tensor  # [d]
    threshold: float
    calibration: dict[str, float]  # how well the threshold separates the calibration probes

    def score(self, vectors: torch.Tensor) -> Scores:
        unit = F.normalize(F.normalize(vectors.float(), dim=-1) - self.center, dim=-1)
        to_unsafe = unit @ self.unsafe.T
        values = to_unsafe.max(-1).values - (unit @ self.benign.T).max(-1).values
        nearest = [self.descriptions[int(i)] for i in to_unsafe.argmax(-1)]
        return Scores(values, nearest)

    def flags(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.score(vectors).values > self.threshold


def default_benign_references() -> list[str]:
    return _lines(HERE / "benign_concepts.txt")


def default_calibration() -> Calibration:
    return read_calibration(HERE / "calibration.yaml")


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


def build_screen(
    read: ReadTexts,
    descriptions: Sequence[str] | None = None,
    benign: Sequence[str] | None = None,
    calibration: Calibration | None = None,
) -> SafetyScreen:
    """Read the references and calibration probes with one model and fit the threshold.

    Every text is read once, in one call. The threshold maximises (detected − false alarms)
    on the calibration probes and sits midway in the gap it picks.
    """
    descriptions = list(descriptions or default_unsafe_descriptions())
    benign = list(benign or default_benign_references())
    items = (calibration or default_calibration()).items()
    probes = list(dict.fromkeys(p for _, group in items for p in group))
    texts = descriptions + benign + probes
    states = F.normalize(read(texts).float(), dim=-1)  # the score ignores norms
    m, b = len(descriptions), len(benign)
    center = states[: m + b].mean(0)
    screen = SafetyScreen(
        descriptions=tuple(descriptions),
        unsafe=F.normalize(states[:m] - center, dim=-1),
        benign=F.normalize(states[m : m + b] - center, dim=-1),
        center=center,
        threshold=0.0,
        calibration={},
    )
    position = {t: m + b + i for i, t in enumerate(probes)}
    means = torch.stack([states[[position[p] for p in group]].mean(0) for _, group in items])
    scores = screen.score(means).values
    is_unsafe = torch.tensor([unsafe for unsafe, _ in items])
    threshold, stats = _youden_threshold(scores[~is_unsafe], scores[is_unsafe])
    stats["texts_read"] = float(len(texts))
    return SafetyScreen(screen.descriptions, screen.unsafe, screen.benign, center, threshold, stats)


def screen_from_file(read: ReadTexts, unsafe_file: str | None) -> SafetyScreen:
    """The screen with the shipped descriptions, or with those of `unsafe_file` added."""
    extra = read_descriptions(unsafe_file) if unsafe_file else []
    return build_screen(read, default_unsafe_descriptions() + extra)


def _youden_threshold(benign: torch.Tensor, unsafe: torch.Tensor) -> tuple[float, dict[str, float]]:
    values = torch.cat([benign, unsafe]).sort().values
    cuts = torch.cat([values[:1] - 1e-3, (values[1:] + values[:-1]) / 2, values[-1:] + 1e-3])
    best, best_cut = -2.0, float(cuts[0])
    for cut in cuts.tolist():
        gain = float((unsafe > cut).float().mean() - (benign > cut).float().mean())
        if gain > best:
            best, best_cut = gain, cut
    stats = {
        "detected": float((unsafe > best_cut).float().mean()),
        "false_alarms": float((benign > best_cut).float().mean()),
        "benign_items": float(len(benign)),
        "unsafe_items": float(len(unsafe)),
    }
    return best_cut, stats
