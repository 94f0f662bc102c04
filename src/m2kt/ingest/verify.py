"""Step 5 of ingestion: is the student better off, and no worse anywhere it was good?

Checks, each a number before and after with a margin:
- transfer: the packet's verification probes (held out at extraction, never fitted to)
  assigned to their concepts: by the student's own anchors before, by the concept memory after.
  A gate with statistics decides: the held-out set must be large enough that a stated drop
  could be detected at all, the paired difference may not be below the margin, and an exact
  one-sided McNemar test may not find "after" significantly worse than "before".
- zero-shot: the same comparison against the student's reading of the concept names alone,
  what it gets without any packet; the packet must not fall below it either.
- yours: transfer and zero-shot again, on the user's own labelled sentences
  (`--verify-on`), written apart from the packet, with the same statistics: the packet is
  refused when the exact test finds it significantly worse than either baseline there, and a
  set large enough to see the gate's drop verifies it where its own probes are too few.
- held-in: what the student could already do with its own representation: nearest-anchor
  accuracy (leave one out) on a probe set that no packet carries, with its pooled states before
  and with the adapter's residual after. It may not drop by more than the margin.
- safety: how close the student's adapted states and the concept slots come to its own
  representations of unsafe-concept descriptions; the states may not come closer by more than
  the margin, nor the slots unless the calibrated screen judges them (below).
- alignment: the map from the teacher's space, fitted on the packet's anchor texts, judged on
  anchors held out of the fit: its R² may not be below a floor (a map that explains less than
  that carries the teacher's concepts to the wrong place).
- safety screen: the calibrated screen of the safety auditor (m2kt.safety) on the held-in
  probes, adapted: its mean score may not rise by more than the margin, and no concept slot
  may be moved by training onto the unsafe side (the same threshold the audit applied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch.nn import functional as F

from m2kt.align.quality import AnchorAlignment
from m2kt.concepts.geometry import leave_one_out_hits
from m2kt.errors import UsageError
from m2kt.ingest.memory import ConceptMemory
from m2kt.safety.screen import SafetyScreen

OWN_ANCHORS = "the student's own anchors"  # the baselines the paired checks name
NAME_READING = "the student's zero-shot reading of the concept names"


@dataclass(frozen=True)
class Margins:
    transfer: float = 0.0  # after may not be below before by more than this
    held_in: float = 0.05
    safety: float = 0.05


@dataclass(frozen=True)
class Gate:
    """How the transfer check judges a paired before/after difference on held-out probes.

    `level` is the one-sided significance of a drop. `detectable_drop` is the largest drop the
    held-out set may be blind to: with n probes, the exact test can call a drop significant
    only once it loses m* = ⌈log₂(1/level)⌉ probes and gains none, so n must be at least
    m*/detectable_drop (20 probes at the defaults). `accept_unverified` accepts a packet whose
    held-out set is smaller, and the report says "unverified".
    """

    level: float = 0.05
    detectable_drop: float = 0.25
    accept_unverified: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.level < 0.5 or not 0 < self.detectable_drop <= 1:
            raise UsageError(
                f"level {self.level} must be in (0, 0.5) and detectable drop "
                f"{self.detectable_drop} in (0, 1]"
            )

    @property
    def losses_to_speak(self) -> int:
        """m*: the fewest lost probes (none gained) the exact test calls significant."""
        return math.ceil(math.log2(1 / self.level))

    def smallest_detectable_drop(self, n: int) -> float:
        """The smallest drop (as a share of n probes) the test can find significant."""
        return self.losses_to_speak / n if n else math.inf


@dataclass(frozen=True)
class Check:
    name: str
    before: float
    after: float
    passed: bool
    reason: str
    statistics: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        found = self.__dict__.copy()
        if self.statistics is None:
            found.pop("statistics")
        return found


@dataclass(frozen=True)
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]


def transfer_check(
    memory: ConceptMemory,
    states: torch.Tensor,
    labels: torch.Tensor,
    anchors: torch.Tensor,
    margin: float,
    gate: Gate | None = None,
    adapted: torch.Tensor | None = None,
) -> Check:
    """The paired before/after comparison on the packet's verification probes [V, d_S].

    `adapted`: the same probes read through an adapter inside the student's blocks (after);
    `states` is always the frozen student's reading (before)."""
    return _paired_check(
        "transfer",
        OWN_ANCHORS,
        memory,
        states,
        labels,
        anchors,
        margin,
        gate,
        adapted,
    )


def zero_shot_check(
    memory: ConceptMemory,
    states: torch.Tensor,
    labels: torch.Tensor,
    names: torch.Tensor,
    margin: float,
    gate: Gate | None = None,
    adapted: torch.Tensor | None = None,
) -> Check:
    """The packet against the student's zero-shot reading of the concept names [K, d_S] alone,
    on the same verification probes and with the same gate: a packet that does not beat what
    the student gets from the names for free must not pass silently."""
    return _paired_check(
        "zero-shot",
        NAME_READING,
        memory,
        states,
        labels,
        names,
        margin,
        gate,
        adapted,
    )


def user_checks(
    memory: ConceptMemory,
    states: torch.Tensor,
    labels: torch.Tensor,
    anchors: torch.Tensor,
    names: torch.Tensor,
    source: str,
    gate: Gate | None = None,
    adapted: torch.Tensor | None = None,
) -> list[Check]:
    """The transfer and zero-shot checks on the user's own sentences (`--verify-on`), held out
    from the packet by whoever wrote them. Refused only by the test (a significant drop), not
    by any drop in the point estimate: a rollback leaves the student its zero-shot reading, so
    a packet that loses one sentence of twenty to the student's own anchors is not refused for
    it. A set too small to see the gate's drop does not verify, but a drop the test finds
    significant there refuses all the same."""
    return [
        _paired_check(
            name,
            baseline,
            memory,
            states,
            labels,
            vectors,
            0.0,
            gate,
            adapted,
            f"your sentences, {source}",
            test_only=True,
        )
        for name, baseline, vectors in (
            ("yours: transfer", OWN_ANCHORS, anchors),
            ("yours: zero-shot", NAME_READING, names),
        )
    ]


def _paired_check(
    name: str,
    baseline: str,
    memory: ConceptMemory,
    states: torch.Tensor,
    labels: torch.Tensor,
    anchors: torch.Tensor,
    margin: float,
    gate: Gate | None,
    adapted: torch.Tensor | None,
    where: str = "held-out verification probes",
    test_only: bool = False,
) -> Check:
    """`states`: the frozen student's reading of the probes (before); `adapted`: the same probes
    read through an adapter inside the student's blocks (after), when there is one.
    `test_only`: refuse only on a significant drop (rule 3, not the margin), at any size; a set
    too small to see the gate's drop is recorded as such ("too few to verify") instead of being
    refused or accepted on `accept_unverified`."""
    gate = gate or Gate()
    after_states = states if adapted is None else adapted
    with torch.no_grad():
        before = _correct(F.normalize(states, dim=-1) @ F.normalize(anchors, dim=-1).T, labels)
        after = _correct(memory(after_states), labels) if len(labels) else before
    n = len(labels)
    smallest = gate.smallest_detectable_drop(n)
    losses = int((before & ~after).sum())
    gains = int((after & ~before).sum())
    acc_before = float(before.float().mean()) if n else float("nan")
    acc_after = float(after.float().mean()) if n else float("nan")
    difference = acc_after - acc_before if n else float("nan")
    discordant = losses + gains
    p_value = (
        stats.binomtest(losses, discordant, 0.5, alternative="greater").pvalue
        if discordant
        else 1.0
    )
    figures: dict[str, Any] = {
        "n": n,
        "losses": losses,
        "gains": gains,
        "difference": difference,
        "interval_95": _paired_interval(after.float() - before.float()),
        "p_value": float(p_value),
        "level": gate.level,
        "smallest_detectable_drop": smallest,
    }
    small = smallest > gate.detectable_drop
    if small and not test_only:
        needed = math.ceil(gate.losses_to_speak / gate.detectable_drop)
        figures["decision"] = "unverified" if gate.accept_unverified else "refused: too few probes"
        what_next = (  # the hint a refusal needs is noise once the user has accepted
            "accepted unverified, as --accept-unverified asks"
            if gate.accept_unverified
            else "extract with more probes per concept (3+ hold one out), or pass "
            "--accept-unverified to accept it unverified"
        )
        reason = (
            f"only {n} held-out verification probes: a drop of {gate.detectable_drop:.0%} could "
            f"go unseen (the test needs {needed}); {what_next}"
        )
        return Check(name, acc_before, acc_after, gate.accept_unverified, reason, figures)
    worse = figures["p_value"] < gate.level
    passed = not worse if test_only else difference >= -margin and not worse
    figures["decision"] = ("accepted" if passed else "refused") + (
        ", too few to verify" if small else ""
    )
    low, high = figures["interval_95"]
    reason = (
        f"{where} (n={n}): {acc_after:.1%} after against {acc_before:.1%} "
        f"with {baseline}, difference {difference:+.1%} (95% interval "
        f"{low:+.1%} to {high:+.1%}; {losses} lost, {gains} gained, one-sided McNemar "
        f"p={figures['p_value']:.3f} at level {gate.level}"
        + ("" if test_only else f"; margin {margin:.1%}")
        + ")"
    )
    return Check(name, acc_before, acc_after, passed, reason, figures)


def held_in_check(
    memory: ConceptMemory,
    states: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    adapted: torch.Tensor | None = None,
) -> Check:
    """`adapted`: the held-in probes read through an in-block adapter (see transfer_check)."""
    with torch.no_grad():
        before = _leave_one_out(states, labels)
        after = _leave_one_out(memory.adapt(states if adapted is None else adapted), labels)
    passed = after >= before - margin
    reason = (
        f"held-in probes (the student's own skill): {after:.1%} after against {before:.1%} "
        f"before (margin {margin:.1%})"
    )
    return Check("held-in", before, after, passed, reason)


def safety_check(
    memory: ConceptMemory,
    states: torch.Tensor,
    unsafe: torch.Tensor,
    margin: float,
    adapted: tuple[torch.Tensor, torch.Tensor] | None = None,
    slots_screened: bool = False,
) -> Check:
    """Mean over probes of the highest cosine to any unsafe description, and the slots' highest.

    `adapted`: the probes and the unsafe descriptions read through an in-block adapter; after
    is measured in the adapted student's own space, against its own reading of the harms.
    With `slots_screened` (the calibrated screen is on and judges the slots, `screen_check`)
    the slots' raw closeness is reported and not compared: a chemistry concept lies nearer the
    description of a nerve agent than the student's own anchors do without being about harm,
    and refusing it for that refused the user's science spec (issue 17); one threshold,
    applied once."""
    unsafe = F.normalize(unsafe, dim=-1)
    after_states, after_unsafe = (states, unsafe) if adapted is None else adapted
    after_unsafe = F.normalize(after_unsafe, dim=-1)
    with torch.no_grad():
        before = float((F.normalize(states, dim=-1) @ unsafe.T).max(-1).values.mean())
        moved = F.normalize(memory.adapt(after_states), dim=-1)
        after = float((moved @ after_unsafe.T).max(-1).values.mean())
        slots = float((memory.slots() @ after_unsafe.T).max())
        anchors = float((memory.anchors @ unsafe.T).max())
    passed = after <= before + margin and (slots_screened or slots <= anchors + margin)
    reason = (
        f"closeness to unsafe concepts: probes {after:.3f} after against {before:.3f}, concept "
        f"slots {slots:.3f} against the student's own anchors {anchors:.3f} (margin {margin}"
        + ("; the slots are judged by the calibrated screen)" if slots_screened else ")")
    )
    return Check("safety", before, max(after, slots), passed, reason)


def screen_check(
    memory: ConceptMemory,
    states: torch.Tensor,
    screen: SafetyScreen,
    margin: float,
    audited: dict[str, float] | None = None,
    adapted: torch.Tensor | None = None,
) -> Check:
    """Did ingestion move the student toward harm, as the calibrated screen sees it?

    A concept slot fails when it lands on the unsafe side *and* training moved it there: more
    than `margin` above the score the auditor gave the concept before training (`audited`,
    name → score). A concept the audit passed is not refused afterwards for where it already
    was: one threshold, applied once.
    """
    with torch.no_grad():
        before = float(screen.score(states).values.mean())
        after_states = states if adapted is None else adapted
        after = float(screen.score(memory.adapt(after_states)).values.mean())
        slots = screen.score(memory.slots())
    names = memory.config.concepts
    audited = audited or {}
    over = [
        i
        for i, value in enumerate(slots.values.tolist())
        if value > screen.threshold and value > audited.get(names[i], float("-inf")) + margin
    ]
    flagged = [names[i] for i in over]
    passed = after <= before + margin and not flagged
    reason = (
        f"safety probes: mean screen score {after:.3f} after against {before:.3f} before "
        f"(margin {margin}); concept slots moved onto the unsafe side (threshold "
        f"{screen.threshold:.3f}): {', '.join(flagged[:5]) or 'none'}"
    )
    return Check("screen", before, after, passed, reason)


def alignment_check(alignment: AnchorAlignment, floor: float) -> Check:
    """The anchor map's held-out R² against `floor`, with its retrieval for the reader."""
    passed = alignment.r2 >= floor
    reason = (
        f"anchor alignment: R² {alignment.r2:.3f} on {alignment.heldout} held-out anchors "
        f"(floor {floor}), top-1 retrieval {alignment.retrieval:.1%}, ridge {alignment.ridge}"
    )
    return Check("alignment", float("nan"), alignment.r2, passed, reason)


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1) == labels


def _paired_interval(differences: torch.Tensor) -> list[float]:
    """95% percentile-bootstrap interval of the mean paired difference (seeded, so repeatable)."""
    if len(differences) == 0:
        return [float("nan"), float("nan")]
    values = differences.double().numpy()
    if np.all(values == values[0]):
        return [float(values[0]), float(values[0])]
    found = stats.bootstrap(
        (values,), np.mean, method="percentile", n_resamples=4999, random_state=0
    )
    return [float(found.confidence_interval.low), float(found.confidence_interval.high)]


def _leave_one_out(states: torch.Tensor, labels: torch.Tensor) -> float:
    """Nearest class mean of unit states, each probe left out of its own class's mean."""
    unit = F.normalize(states, dim=-1)
    return float(leave_one_out_hits(unit, labels, int(labels.max()) + 1).float().mean())
