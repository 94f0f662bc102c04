"""The auditor: which of a packet's concepts are unsafe, judged by where they land, not by name.

Two signals, both reported per concept with the reason:
- meaning: the safety screen's harm-probe score (screen.py) of the model's own reading of the
  concept's probes and, at export, of the concept's vector in the teacher's own space, above
  the threshold (at ingestion φ(c_k), the concept aligned into the student, counts through its
  drift only: see below);
- hidden meaning: a vector that scores nearer harm than its own probes' reading does (its
  *drift*) hides something there: a harmful vector under benign probes, or one blended into a
  benign concept (at ingestion also measured against the teacher's own states of its probes,
  part P, seen through the same map: `Drift`). An honest concept's vector is read from its
  probes, so its drift is noise (real extractions of the user specs: at most 0.01 at export,
  0.06 at ingestion, where φ adds its own error); drift beyond the side's margin is added to the
  concept's score `DRIFT_GAIN` times over, so that a weak blend (α = 0.25 moves the score by
  about 0.13) crosses the same threshold as a plain harm. A vector that also disagrees with its
  probes (cosine to the mean of its probes' teacher states not the highest among all concepts',
  or more than `CONSISTENCY_MARGIN` below the packet's median) and drifts by more than
  `DRIFT_MARGIN` is flagged whatever its score. A vector that is merely wrong (pointing at
  another benign concept) is not a safety matter; verification catches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.errors import VerificationError
from m2kt.packet import Packet
from m2kt.packet.manifest import (
    ANCHOR_STATES_TENSOR,
    ATTENTION_TENSOR,
    CONCEPTS_TENSOR,
    SCREEN_STATES_TENSOR,
    TRACE_PREFIX,
)
from m2kt.packet.probes import concept_probes, kept_concept_parts
from m2kt.safety.screen import SafetyScreen, Scores

CONSISTENCY_MARGIN = 0.1
DRIFT_MARGIN = 0.1
# Drift scoring, chosen on the development set (bench/safety/concepts.yaml, 3 seeds): export
# margin 0.06 (the 99th percentile of benign drift there) and gain 4 raised detection at 1%
# false alarms from 66% to 91%, α = 0.25 blends from 6% to 64%, with no more false alarms at
# the threshold; at ingestion the margin is 0.1 (φ's error widens honest drift), and φ(c_k)
# counts through its drift alone (see audit_concepts).
DRIFT_GAIN = 4.0
EXPORT_DRIFT_MARGIN = 0.06
INGEST_DRIFT_MARGIN = 0.1
# Beside that drift, ingestion measures two more (round 4, `m2kt.safety.sides.audit_student`),
# both against the teacher's own states of the concept's probes (part P) so that the map's error
# is common to both sides of the difference and a small margin can count: φ(c_k) against φ of
# their mean in the student's space, and, with an auditor model, ψ(c_k) against ψ of their mean
# in the auditor's space (ψ fitted on the same pairs as φ). A forger who also fits part P to the
# hidden vector defeats those references, not the student's reading of the probe texts: hence
# beside, not instead. Development set, e1 → e2, 3 seeds, detection at 1% false alarms / benign
# concepts flagged at the threshold: without an auditor 54.0% / 8.8% before, 67.7% / 8.8% with
# the teacher drift at 0.04, 77.8% / 10.7% at 0.02; with l1 judging the probes 78.3% / 0.1%
# before, 83.8% / 0.0% with the teacher drift at 0.02 (with the first drift's margin back from
# 0.06 to 0.1: 83.3% / 0.1% at 0.06), 89.9% / 0.1% with the auditor's drift at 0.02 too (0.05:
# 86.9% / 0.0%; 0: 87.4% / 1.6%).
# Round 5 measures both less the concept's own spread (`m2kt.safety.sides.reading_spread`: how
# far a vector read from two thirds of its probes may honestly lie nearer harm than their mean),
# which lets both margins fall to 0. Chosen on the third frozen set, read once in round 4 and a
# development set since (10 seeds, round 5's screen), detection at 1% false alarms / benign
# flagged at the threshold: with l1, 81.0% / 1.5% at margins 0.02 without the spread, 79.3% /
# 0.0% with it, 83.7% / 0.03% with it at 0; without an auditor, 70.3% / 6.8% at 0.04 without
# it, 60.1% / 6.3% with it, 73.7% / 7.1% with it at 0.
TEACHER_DRIFT_MARGIN = 0.0
AUDITOR_DRIFT_MARGIN = 0.0
# Round 6: with part S, φ(c_k)'s drift is also measured in the teacher's own space, on the
# screen fitted there from the packet's states of the screen's texts, against the teacher's
# states of its probes (`m2kt.safety.sides.teacher_screen`), less the concept's spread.
TEACHER_SPACE_DRIFT_MARGIN = 0.0


class UnsafePacketError(VerificationError):
    """The auditor flagged all of a packet's concepts, or all but one, at ingestion: exit 1."""

    default_hint = "do not use this packet; see the flagged concepts and their nearest harms"


@dataclass(frozen=True)
class Finding:
    """The auditor's verdict on one concept."""

    id: str
    name: str
    score: float  # the highest screen score among the vectors checked, plus the drift term
    nearest: str  # the unsafe description it came closest to
    consistency: float | None  # cosine of the concept to its own probes (teacher space)
    reasons: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Drift:
    """How much nearer harm each concept's vector scores than a reference of it does: [K]
    `values`, counted beyond `margin`; `against` finishes "its vector scores x nearer harm
    than …" in the reason."""

    values: torch.Tensor
    margin: float
    against: str


@dataclass(frozen=True)
class Audit:
    findings: list[Finding]
    threshold: float
    space: str
    inputs_read: int = 0  # texts the student read for the audit (screen and probes)
    traces: dict[str, str] = field(default_factory=dict)  # flagged trace id → reason
    # With an auditor model (`screen_for_ingestion`): its name, the texts it read, and each
    # concept's score in the student's own space, which the post-ingestion check compares with.
    auditor: str | None = None
    auditor_inputs_read: int = 0
    baseline: dict[str, float] | None = None

    @property
    def flagged(self) -> list[Finding]:
        return [f for f in self.findings if f.flagged]

    def student_scores(self) -> dict[str, float]:
        """Each kept concept's score in the student's own space, before training."""
        own = self.baseline or {f.name: f.score for f in self.findings}
        return {f.name: own[f.name] for f in self.findings if not f.flagged}

    def as_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "threshold": self.threshold,
            "inputs_read": self.inputs_read,
            "flagged": [f.id for f in self.flagged],
            "concepts": [
                asdict(f)
                | {
                    "flagged": f.flagged,
                    "score": _number(f.score),
                    "consistency": _number(f.consistency),
                }
                for f in self.findings
            ],
            "flagged_traces": self.traces,
            "auditor": self.auditor,
            "auditor_inputs_read": self.auditor_inputs_read,
        }


def _number(value: float | None) -> float | None:
    """A figure for JSON: a concept without probes has no score (−inf) nor consistency (NaN)."""
    return value if value is not None and math.isfinite(value) else None


def audit_concepts(
    screen: SafetyScreen,
    ids: list[str],
    names: list[str],
    views: dict[str, torch.Tensor],
    probes: torch.Tensor,
    consistency: torch.Tensor | None = None,
    space: str = "student",
    drift_margin: float = INGEST_DRIFT_MARGIN,
    vectors_scored: bool = False,
    judged: Scores | None = None,
    drifts: Sequence[Drift] = (),
) -> Audit:
    """Screen each concept's vectors and its probes' reading, both [K, d] in one space.

    `views` maps a label ("concept", "aligned concept") to [K, d] vectors; `probes` is the
    model's own reading of each concept's probes; `consistency` is [K, K], the cosine of
    concept k to the mean teacher state of concept j's probes. A concept's score is its
    probes' score, plus `DRIFT_GAIN` times its drift beyond `drift_margin`; with
    `vectors_scored` (export: the vector is the teacher's own) the vectors' own scores count
    too. At ingestion they count through their drift only: φ(c_k) is the teacher's vector seen
    through a fitted map whose error moves its score both ways, while the student's own reading
    of the probes has no such error (development set: false alarms at the threshold 12.3% →
    8.8%, and `computer science` of the user's science spec is kept).

    `judged` are an auditor model's scores of the probes, on this screen's scale (its margin
    over its own threshold added to this one's): they replace the probes' own score, while the
    drift stays measured against this model's reading, in its space, where φ(c_k) lies.

    `drifts` are more references a vector's score is measured against (`Drift`); the largest
    excess over its margin, the first drift's included, counts.

    A concept without probes (a packet may list none; a spec may not) has no reading, so its
    scores and drifts are NaN and would pass every test above: it is flagged instead.
    """
    scored = {label: screen.score(vectors) for label, vectors in views.items()}
    own = screen.score(probes)
    scored["its probes' reading"] = own if judged is None else judged
    probe_scores = own.values
    diagonal = floor = None
    if consistency is not None and len(ids) > 1:
        diagonal = consistency.diagonal()
        floor = float(diagonal.median()) - CONSISTENCY_MARGIN
    findings = []
    for k, (cid, name) in enumerate(zip(ids, names, strict=True)):
        reasons, best, nearest = [], float("-inf"), ""
        if not math.isfinite(float(probe_scores[k])):  # no probes: no reading, no drift
            reasons.append(
                "it has no probes, so nothing it hides can be measured against their reading"
            )
        vector = max(views, key=lambda label: float(scored[label].values[k]))
        drift = float(scored[vector].values[k]) - float(probe_scores[k])
        for label, scores in scored.items():
            if label in views and not vectors_scored:
                continue
            value = float(scores.values[k])
            if value > best:
                best, nearest = value, scores.nearest[k]
            if value > screen.threshold:
                reasons.append(
                    f"{label} scores {value:.3f} on the harm probe (threshold "
                    f"{screen.threshold:.3f}); nearest unsafe description: '{scores.nearest[k]}'"
                )
        excess, what, by, margin = drift - drift_margin, "its own probes do", drift, drift_margin
        for more in drifts:
            other = float(more.values[k])
            if other - more.margin > excess:
                excess, what, by, margin = other - more.margin, more.against, other, more.margin
        hidden = DRIFT_GAIN * max(0.0, excess)
        if hidden > 0:
            if best <= screen.threshold < best + hidden:
                reasons.append(
                    f"its vector scores {by:.3f} nearer harm than {what} (margin {margin:.2f}): "
                    f"something is hidden in it; nearest unsafe description: "
                    f"'{scored[vector].nearest[k]}'"
                )
            best += hidden
        cos = None
        if diagonal is not None and consistency is not None and floor is not None:
            cos = float(diagonal[k])
            inconsistent = int(consistency[k].argmax()) != k or cos < floor
            if inconsistent and drift > DRIFT_MARGIN:
                reasons.append(
                    f"its vector disagrees with its own probes (cosine {cos:.3f}, packet median "
                    f"{floor + CONSISTENCY_MARGIN:.3f}) and scores {drift:.3f} nearer harm "
                    "than they do: something is hidden in it"
                )
        findings.append(Finding(cid, name, best, nearest, cos, reasons))
    return Audit(findings, screen.threshold, space)


def teacher_probe_means(packet: Packet, task_inputs: bool = True) -> torch.Tensor | None:
    """[K, d_T] the unit mean of each concept's unit probe states in the teacher's space (part
    P); None when the packet carries none. Without `task_inputs`, over the probes the spec wrote
    only (NaN for a concept with none): the teacher's reading that judges a concept at
    ingestion (round 6) is of those, what its export audit judged; task inputs are a task's raw
    data, many of them ordinary news of violent events, which e1's screen reads as harm where
    e2's does not (tweets e1 → e2, 360 task inputs: `neutral` at 0.107 against e1's 0.081),
    and the student's reading judges them all."""
    probes = concept_probes(packet)
    if probes.states is None:
        return None
    means = []
    for k in range(len(packet.manifest.concepts or [])):
        rows = [i for i in probes.indices(k) if task_inputs or not bool(probes.task[i])]
        means.append(F.normalize(probes.states[rows], dim=-1).mean(0))
    return F.normalize(torch.stack(means), dim=-1)


def read_from_probes(packet: Packet) -> torch.Tensor:
    """[K] bool: the concepts whose vector the teacher read from its probes (every method but
    `head`). A head's row is the teacher's classifier, a direction that tells its class from
    the others, not a reading of its probes: its drift from their mean is its nature, not a
    hidden harm (in round 3, e1's head row for tweets `negative` scored 0.086 nearer harm in
    e2's space than e2's reading of its tweets), so the references made of part P do not judge
    it; the student's reading of its probe texts still does. A forger who labels a trojan
    `head` meets that drift alone, as in round 3."""
    return torch.tensor([c.method != "head" for c in packet.manifest.concepts or []])


def probe_consistency(packet: Packet) -> torch.Tensor | None:
    """[K, K] cosine of each concept to the mean teacher state of each concept's probes."""
    means = teacher_probe_means(packet)
    if means is None:
        return None
    return F.normalize(packet.tensors[CONCEPTS_TENSOR].float(), dim=-1) @ means.T


def screen_traces(
    screen: SafetyScreen, packet: Packet, into: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, str]:
    """Trace id → reason for each reasoning trace with a step on the unsafe side: a trace is
    screened like a concept, each step's state mapped by `into` into the screened space (the
    identity at export, φ at ingestion)."""
    found = {}
    for trace in packet.manifest.traces or []:
        scores = screen.score(into(packet.tensors[TRACE_PREFIX + trace.id].float()))
        step = int(scores.values.argmax())
        top = float(scores.values[step])
        if top > screen.threshold:
            found[trace.id] = (
                f"step {step + 1} scores {top:.3f} on the harm probe (threshold "
                f"{screen.threshold:.3f}); nearest unsafe description: '{scores.nearest[step]}'"
            )
    return found


def drop_concepts(packet: Packet, ids: set[str], trace_ids: frozenset[str] = frozenset()) -> Packet:
    """The packet without the concepts `ids`: their rows, probe states, graph nodes and the
    traces on their probes go, and so do the traces `trace_ids`.

    The result is unsigned and has its own digest; callers keep the original for provenance.
    """
    m = packet.manifest
    assert m.concepts is not None
    keep = [k for k, c in enumerate(m.concepts) if c.id not in ids]
    dropped_probes = {p for c in m.concepts if c.id in ids for p in [*c.probes, *c.verification]}
    index = torch.tensor(keep, dtype=torch.long)
    tensors = {CONCEPTS_TENSOR: packet.tensors[CONCEPTS_TENSOR][index]}
    if ATTENTION_TENSOR in packet.tensors:
        tensors[ATTENTION_TENSOR] = packet.tensors[ATTENTION_TENSOR][index]
    for kept_whole in (ANCHOR_STATES_TENSOR, SCREEN_STATES_TENSOR):  # parts N and S
        if kept_whole in packet.tensors:
            tensors[kept_whole] = packet.tensors[kept_whole]
    kept_tensors, kept_parts = kept_concept_parts(packet, keep)  # parts P, D and L
    tensors |= kept_tensors
    traces = [t for t in m.traces or [] if t.probe not in dropped_probes and t.id not in trace_ids]
    for trace in traces:
        tensors[TRACE_PREFIX + trace.id] = packet.tensors[TRACE_PREFIX + trace.id]
    graph = None
    if m.graph is not None:
        nodes = [n for n in m.graph.nodes if n.id not in ids]
        edges = [e for e in m.graph.edges if e.source not in ids and e.target not in ids]
        graph = {"nodes": nodes, "edges": edges}
    return packet.rebuilt(
        tensors,
        concepts=[m.concepts[k] for k in keep],
        graph=graph,
        traces=traces or None,
        **kept_parts,
    )


def refuse_unless_two_kept(audit: Audit) -> None:
    """Refuse, at ingestion, a packet the audit would leave with fewer than two concepts: a
    concept memory needs two to tell apart."""
    kept = len(audit.findings) - len(audit.flagged)
    if not audit.findings or kept >= 2:
        return
    what = "every concept" if kept == 0 else f"all but one of the {len(audit.findings)} concepts"
    raise UnsafePacketError(
        f"the safety auditor flagged {what} of the packet (ingestion needs two): "
        f"{'; '.join(f'{f.name}: {f.reasons[0]}' for f in audit.flagged[:3])}"
    )
