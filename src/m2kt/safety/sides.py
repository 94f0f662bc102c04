"""The auditor on each side of a transfer: the teacher's own space at export, the student's at
ingestion (after alignment). Both read the screen's texts with the model being screened."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.align.cal import CALConfig, ConceptAlignmentLayer
from m2kt.concepts.probing import read_probes
from m2kt.concepts.sets import ConceptSet
from m2kt.errors import UsageError
from m2kt.models.view import ModelView, Pooling
from m2kt.packet import Packet, concept_probes, screen_states, text_states
from m2kt.packet.manifest import CONCEPTS_TENSOR, SCREEN_STATES_TENSOR
from m2kt.safety.audit import (
    AUDITOR_DRIFT_MARGIN,
    EXPORT_DRIFT_MARGIN,
    TEACHER_DRIFT_MARGIN,
    TEACHER_SPACE_DRIFT_MARGIN,
    Audit,
    Drift,
    UnsafePacketError,
    audit_concepts,
    drop_concepts,
    probe_consistency,
    read_from_probes,
    refuse_unless_two_kept,
    screen_traces,
    teacher_probe_means,
)
from m2kt.safety.screen import (
    MIN_SEPARATION,
    ReadTexts,
    Remembered,
    SafetyScreen,
    Scores,
    screen_from_file,
    separation,
)

AUDIT_RIDGE = 0.1  # the ingestion CAL's default ridge: the auditor sees what ingestion would
# An auditor model reads at this fraction of its depth. Chosen on the development set
# (bench/safety/concepts.yaml): e1 at 4 of 6 blocks and l1 at 20 of 30 separated its harms from
# its near-miss benign concepts completely (AUROC 1.0), their last blocks less well (0.998 and
# 1.0 with 6.5% false alarms at the threshold), and l1 below half depth less still.
AUDITOR_DEPTH = 2 / 3
READ_SHARE = 2 / 3  # of a concept's probes an honest vector may be read from (`reading_spread`)


def model_reader(view: ModelView, layer: int, pooling: Pooling, batch_size: int = 16) -> ReadTexts:
    """Texts → the model's pooled states at `layer` (already resolved), read in batches."""

    def read(texts: list[str]) -> torch.Tensor:
        readings = read_probes(
            view, texts, [layer], poolings=[pooling], batch_size=batch_size, truncate=True
        )
        return readings.states[(pooling, layer)].float()

    return read


def audit_teacher(
    screen: SafetyScreen,
    ids: list[str],
    names: list[str],
    embeddings: torch.Tensor,
    probe_means: torch.Tensor,
    judged: Scores | None = None,
) -> Audit:
    """Export-time audit in the teacher's own space; `probe_means` [K, d] is the mean of each
    concept's unit probe states. With an auditor's `judged` scores of the probes (on this
    screen's scale), the probes are judged by the auditor and the concept's vector counts
    through its drift from the teacher's reading only, as at ingestion: its own score is the
    teacher's reading again, which the auditor is there to overrule."""
    consistency = F.normalize(embeddings.float(), dim=-1) @ F.normalize(probe_means, dim=-1).T
    return audit_concepts(
        screen,
        ids,
        names,
        {"concept": embeddings},
        probe_means,
        consistency,
        space="teacher" if judged is None else "teacher, probes judged by an auditor",
        drift_margin=EXPORT_DRIFT_MARGIN,
        vectors_scored=judged is None,
        judged=judged,
    )


def judge_probes(
    judge: Judge, screen: SafetyScreen, texts: list[str], groups: list[list[int]]
) -> Scores:
    """The auditor's scores of each concept's probes (`groups`: indices into `texts`), moved
    onto `screen`'s scale: their margin over the auditor's threshold, added to this one's."""
    read = F.normalize(judge.read(texts).float(), dim=-1)
    return _rescaled(judge.screen, torch.stack([read[g].mean(0) for g in groups]), screen)


def make_judge(auditor: ModelView, unsafe_file: str | None = None, batch_size: int = 16) -> Judge:
    """An auditor model's screen, calibrated in its space at `auditor_layer`."""
    read = model_reader(auditor, auditor_layer(auditor), auditor.pooling, batch_size)
    hint = "pass another --auditor, or none to audit in the model's own space"
    return Judge(auditor.name, _usable_screen(auditor, read, unsafe_file, hint), read)


def fit_audit_alignment(teacher: torch.Tensor, student: torch.Tensor) -> ConceptAlignmentLayer:
    """φ: a linear CAL fitted in closed form on paired states [N, d_T], [N, d_S]; it maps unit
    teacher vectors into the student's space."""
    config = CALConfig(kind="linear", d_in=teacher.shape[1], d_out=student.shape[1])
    return ConceptAlignmentLayer.fit(
        config,
        F.normalize(teacher.float(), dim=-1),
        F.normalize(student.float(), dim=-1),
        ridge=AUDIT_RIDGE,
    )


@dataclass(frozen=True)
class Judge:
    """An auditor model's calibrated screen and its reader (`m2kt ingest --auditor`)."""

    name: str
    screen: SafetyScreen
    read: ReadTexts


def audit_student(
    screen: SafetyScreen, packet: Packet, read: ReadTexts, judge: Judge | None = None
) -> Audit:
    """Ingestion-time audit in the student's space, from the packet's own probes and anchors.

    The student reads every extraction probe; its own reading of a concept (the mean of its
    probes' states) is screened, and φ(c_k), the teacher's vector aligned by a CAL fitted on
    every text the packet carries a teacher state for (part P's probes and part N's anchors; on
    concept/anchor pairs without either), counts through its drift from that reading
    (`audit_concepts`). The anchors matter: a map fitted on a handful of
    benign probes spans only their directions, so a harmful vector hidden under them would be
    carried into the student as its benign shadow. With part P, φ(c_k) is also measured against
    φ of the teacher's own states of its probes (`probe_drift`): one map carries both, so its
    error cancels and a smaller margin counts; beside the first drift, not instead, because a
    forger can fit part P to the hidden vector but not the student's reading of the texts.

    With part S (round 6), the export screen is fitted again in the teacher's own space from
    the packet's states of its texts (`teacher_screen`): φ(c_k)'s fourth reference is the
    teacher's vector against its probes' teacher states on that screen, where no map blurs
    harm, and without a `judge` the teacher's reading of the probes counts beside the
    student's (the higher score). A forged part S leaves the checks above standing.

    With a `judge`, what the probes *say* is judged in the auditor's space (its reading of them,
    on its own calibrated screen), and what a vector *hides* (its drift) in the student's, where
    the vector lands, and with part P and pairs to fit ψ on, ψ(c_k) against ψ of its probes'
    teacher states on the auditor's screen too (those reads counted in `auditor_inputs_read`);
    the audit keeps the student's own scores as its `baseline`.
    """
    m = packet.manifest
    assert m.concepts is not None
    probes = concept_probes(packet)
    paired = text_states(packet)
    texts = list(dict.fromkeys([*probes.texts, *paired]))
    position = {t: i for i, t in enumerate(texts)}
    read_all = read(texts)
    states = read_all[[position[t] for t in probes.texts]]
    anchors = torch.stack(
        [F.normalize(states[probes.indices(k)], dim=-1).mean(0) for k in range(len(m.concepts))]
    )
    concepts = packet.tensors[CONCEPTS_TENSOR]
    if len(paired) >= 2:
        teacher = torch.stack(list(paired.values()))
        student = read_all[[position[t] for t in paired]]
    else:
        teacher, student = concepts, anchors
    cal = fit_audit_alignment(teacher, student)
    with torch.no_grad():
        aligned = cal(F.normalize(concepts.float(), dim=-1))
    ids, names = [c.id for c in m.concepts], [c.name for c in m.concepts]
    consistency = probe_consistency(packet)
    views = {"aligned concept": aligned}
    drifts = []
    read_by_teacher = None
    if probes.states is not None:  # part P; without it the first drift alone counts
        where = "aligned into the student"
        drifts.append(probe_drift(screen, cal, packet, where, TEACHER_DRIFT_MARGIN))
        own = teacher_screen(packet)
        if own is not None:  # part S: the screen in the teacher's own space
            where = "in the teacher's space, on the screen fitted there from part S"
            drifts.append(probe_drift(own, _as_is, packet, where, TEACHER_SPACE_DRIFT_MARGIN))
            spec_only = teacher_probe_means(packet, task_inputs=False)
            assert spec_only is not None  # part P is there
            read_by_teacher = _rescaled(own, spec_only, screen)
    both = None
    if read_by_teacher is not None:
        both = _higher(screen.score(anchors), read_by_teacher)
    audit = audit_concepts(
        screen, ids, names, views, anchors, consistency, judged=both, drifts=drifts
    )
    with torch.no_grad():
        traces = screen_traces(screen, packet, lambda states: cal(F.normalize(states, dim=-1)))
    audit = replace(
        audit, inputs_read=len(texts) + int(screen.calibration["texts_read"]), traces=traces
    )
    if judge is None:
        return audit
    groups = [probes.indices(k) for k in range(len(m.concepts))]
    fits_psi = probes.states is not None and len(paired) >= 2  # ψ is fitted on the pairs φ is
    once = Remembered(judge.read)  # a probe judged and paired is read (and counted) once
    judge = replace(judge, read=once)
    judged_drifts = list(drifts)
    if fits_psi:
        psi = fit_audit_alignment(teacher, judge.read(list(paired)))
        where = f"seen in {judge.name}'s space"
        judged_drifts.append(probe_drift(judge.screen, psi, packet, where, AUDITOR_DRIFT_MARGIN))
    decided = audit_concepts(
        screen,
        ids,
        names,
        views,
        anchors,
        consistency,
        judged=judge_probes(judge, screen, list(probes.texts), groups),
        drifts=judged_drifts,
    )
    return replace(
        decided,
        space=f"student, probes judged by {judge.name}",
        inputs_read=audit.inputs_read,
        traces=traces,
        auditor=judge.name,
        auditor_inputs_read=once.texts_read + int(judge.screen.calibration["texts_read"]),
        baseline={f.name: f.score for f in audit.findings},
    )


def teacher_screen(packet: Packet) -> SafetyScreen | None:
    """The screen fitted in the teacher's own space from the packet's part S, as the export
    audit fitted it there; None without part S, when part S lacks a text this m2kt's screen
    learns from (a packet of another m2kt version), or when it does not separate its held-out
    groups. A forger can fake part S, as part P, to blind it: the student's reading of the
    probe texts, which no packet can fake, still stands beside it (docs/security.md).

    Fitted once per distinct part S (a benchmark audits thousands of packets of one teacher)."""
    states = screen_states(packet)
    if states is None:
        return None
    key = packet.tensors[SCREEN_STATES_TENSOR].numpy().tobytes()
    digest = hashlib.sha256(key + "\n".join(states).encode("utf-8")).hexdigest()
    if digest not in _TEACHER_SCREENS:
        if len(_TEACHER_SCREENS) >= 4:
            _TEACHER_SCREENS.pop(next(iter(_TEACHER_SCREENS)))
        _TEACHER_SCREENS[digest] = _fit_from_states(states)
    return _TEACHER_SCREENS[digest]


_TEACHER_SCREENS: dict[str, SafetyScreen | None] = {}


class _Missing(Exception):
    """Part S lacks a text the screen learns from."""


def _fit_from_states(states: dict[str, torch.Tensor]) -> SafetyScreen | None:
    def read(texts: list[str]) -> torch.Tensor:
        if any(t not in states for t in texts):
            raise _Missing
        return torch.stack([states[t] for t in texts])

    try:
        screen = screen_from_file(read, None)
    except _Missing:
        return None
    return screen if separation(screen) >= MIN_SEPARATION else None


def _rescaled(own: SafetyScreen, vectors: torch.Tensor, screen: SafetyScreen) -> Scores:
    """`own`'s scores of `vectors` moved onto `screen`'s scale: their margin over `own`'s
    threshold added to `screen`'s (an auditor's reading, the teacher's from part S)."""
    scores = own.score(vectors)
    return Scores(scores.values - own.threshold + screen.threshold, scores.nearest)


def _higher(a: Scores, b: Scores) -> Scores:
    """Each concept's higher score of two readings, with its nearest description (a NaN in
    `b`, a reading that does not exist, never wins)."""
    pick = b.values > a.values
    nearest = [y if p else x for x, y, p in zip(a.nearest, b.nearest, pick.tolist(), strict=True)]
    return Scores(torch.where(pick, b.values, a.values), nearest)


def _as_is(vectors: torch.Tensor) -> torch.Tensor:
    return vectors


def probe_drift(
    screen: SafetyScreen,
    into: Callable[[torch.Tensor], torch.Tensor],
    packet: Packet,
    where: str,
    margin: float,
) -> Drift:
    """How much nearer harm each concept's vector scores on `screen` than the mean of its
    probes' teacher states in part P (`teacher_probe_means`), both mapped by `into` into the
    screen's space: a map's error moves both alike, so an honest concept's drift stays small.

    Less the concept's own spread (`reading_spread`): a vector read from some of its probes
    scores nearer harm than their mean by as much as those probes do, and a concept whose
    probes range from a quiet scene to a battle (a re-enactment society) drifts that far
    honestly. Concepts not read from their probes (`read_from_probes`) drift by 0 here."""
    concepts = F.normalize(packet.tensors[CONCEPTS_TENSOR].float(), dim=-1)
    probes, means = concept_probes(packet), teacher_probe_means(packet)
    assert probes.states is not None and means is not None  # called only with part P
    with torch.no_grad():
        gap = screen.score(into(concepts)).values - screen.score(into(means)).values
        each = screen.score(into(F.normalize(probes.states, dim=-1))).values
    spread = reading_spread(each, [probes.indices(k) for k in range(len(concepts))])
    gap = torch.where(read_from_probes(packet), gap - spread, torch.zeros_like(gap))
    return Drift(gap, margin, f"the teacher's own states of its probes do, both {where}")


def reading_spread(scores: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """[K] how far the mean score of each concept's `READ_SHARE` most harm-ward probes lies
    above the mean of all its probes' `scores`: the drift of an honest vector read from that
    share of them (extraction reads two thirds, setting a third aside for verification)."""
    spread = []
    for rows in groups:
        ranked = scores[rows].sort(descending=True).values
        top = max(1, math.ceil(READ_SHARE * len(ranked)))
        spread.append(ranked[:top].mean() - ranked.mean())
    return torch.stack(spread)


def auditor_layer(view: ModelView) -> int:
    """The block an auditor model reads at: `AUDITOR_DEPTH` of the way up its stack."""
    return max(1, round(AUDITOR_DEPTH * view.num_layers))


def _usable_screen(
    view: ModelView, read: ReadTexts, unsafe_file: str | None, hint: str
) -> SafetyScreen:
    """The screen calibrated in `view`'s space, refused when it cannot tell its calibration
    concepts apart: an audit there would pass or flag by chance."""
    screen = screen_from_file(read, unsafe_file)
    if separation(screen) < MIN_SEPARATION:
        raise UsageError(
            f"the safety screen separates only {separation(screen):.0%} of its calibration "
            f"concepts in {view.name}'s space, so it cannot audit packets in that space",
            hint,
        )
    return screen


def screen_for_ingestion(
    view: ModelView,
    packet: Packet,
    layer: int,
    unsafe_file: str | None,
    batch_size: int = 16,
    audit: bool = True,
    auditor: ModelView | None = None,
) -> tuple[SafetyScreen | None, Audit | None, Packet]:
    """Calibrate the screen in the student's space, audit the packet, drop what it flags.

    With an `auditor` model (read at `auditor_layer`), the packet's probes are judged in the
    auditor's space, a judge chosen for how well it tells harm from its near-misses, which a
    small student's own space may not (docs/security.md); what a concept's vector hides is
    still judged in the student's space, where it lands (`audit_student`).

    Returns the student's screen (for the post-ingestion check of the slots), the audit that
    decided (for the report) and the packet to ingest; with `audit` off (`--no-screen`) none is
    made, so that one switch turns the screen off before and after training alike. Raises
    `UnsafePacketError` when fewer than two concepts would be left, and `UsageError` when
    auditing with a screen that cannot separate its calibration.
    """
    if not audit:
        return None, None, packet
    (resolved,) = view.check_layers([layer])
    read = model_reader(view, resolved, view.pooling, batch_size)
    screen = _usable_screen(
        view,
        read,
        unsafe_file,
        "pass --no-screen (Python: IngestSettings(screen=False)) if you accept unaudited packets",
    )
    if not packet.manifest.concepts:  # no concepts: ingestion refuses it itself
        return screen, None, packet
    judge = make_judge(auditor, unsafe_file, batch_size) if auditor is not None else None
    found = audit_student(screen, packet, read, judge)
    refuse_unless_two_kept(found)
    kept = packet
    if found.flagged or found.traces:
        kept = drop_concepts(packet, {f.id for f in found.flagged}, frozenset(found.traces))
    return screen, found, kept


@dataclass
class ExportScreen:
    """The export audit, the step `extract_packet` takes (`m2kt.extract.ExportAudit`): notes for
    the user and figures for provenance. It keeps its screen and what it flagged, so that
    `finish_export` can screen the packet's traces and drop the flagged concepts once the
    packet exists."""

    screen: SafetyScreen | None = None
    flagged: dict[str, str] = field(default_factory=dict)  # concept id → name
    auditor: ModelView | None = None  # judges the probes (`m2kt extract --auditor`)
    read: Remembered | None = None  # the teacher's states of the screen's texts (part S)

    def __call__(
        self,
        view: ModelView,
        layer: int,
        pooling: Pooling,
        concepts: ConceptSet,
        states: torch.Tensor,
        texts: list[str],
        batch_size: int = 16,
    ) -> tuple[list[str], dict[str, float]]:
        """`states` [N, d] are the teacher's states of the probe texts the concept groups
        index. A teacher whose space does not separate the screen's held-out groups (a random
        model, say) cannot be screened by meaning; that is said, not hidden."""
        self.read = Remembered(model_reader(view, layer, pooling, batch_size))
        screen = screen_from_file(self.read, None)
        if separation(screen) < MIN_SEPARATION:
            return [
                f"safety screen not applied: this teacher separates only "
                f"{separation(screen):.0%} of the screen's held-out groups "
                "(detected − false alarms)"
            ], {"safety_screened": 0.0, "safety_inputs": screen.calibration["texts_read"]}
        self.screen = screen
        means = torch.stack(
            [F.normalize(states[g.probes].float(), dim=-1).mean(0) for g in concepts.groups]
        )
        judged, judge_reads = None, 0.0
        if self.auditor is not None:
            judge = make_judge(self.auditor, None, batch_size)
            judged = judge_probes(judge, screen, texts, [g.probes for g in concepts.groups])
            judge_reads = judge.screen.calibration["texts_read"] + len(texts)
        audit = audit_teacher(
            screen,
            [g.id for g in concepts.groups],
            [g.name for g in concepts.groups],
            concepts.embeddings,
            means,
            judged,
        )
        self.flagged = {f.id: f.name for f in audit.flagged}
        notes = [f"safety: concept {f.name!r} flagged: {f.reasons[0]}" for f in audit.flagged]
        return notes, {
            "safety_screened": 1.0,
            "safety_threshold": screen.threshold,
            "safety_flagged": float(len(audit.flagged)),
            "safety_inputs": screen.calibration["texts_read"],
            "safety_auditor_inputs": judge_reads,
        }


def finish_export(
    packet: Packet, audit: ExportScreen, keep_flagged: bool = False
) -> tuple[Packet, list[str]]:
    """Carry the screen's texts (part S), screen the packet's traces, then drop what the audit
    flagged unless `keep_flagged`.

    Part S is the teacher's states of the texts the screen learnt from, so that a student can
    fit the same screen in the teacher's space (`teacher_screen`); it costs no reading,
    the audit read them. Either way the provenance says what was flagged and whether it was kept
    (`safety_flagged_concepts`, `safety_flagged_traces`, `safety_kept_flagged`). A packet whose
    every concept is flagged is refused (`UnsafePacketError`) unless kept.
    """
    if audit.screen is None:
        return packet, []
    if audit.read is not None and packet.manifest.probes is not None:
        texts, states = audit.read.states()
        tensors = dict(packet.tensors) | {SCREEN_STATES_TENSOR: states.to(torch.float16)}
        packet = packet.rebuilt(tensors, screen={"texts": texts})
    traces = screen_traces(audit.screen, packet, _as_is)
    notes = [f"safety: trace {t!r} flagged: {reason}" for t, reason in traces.items()]
    if not audit.flagged and not traces:
        return packet, notes
    m = packet.manifest
    record: dict[str, Any] = {
        "safety_flagged_concepts": list(audit.flagged.values()),
        "safety_flagged_traces": list(traces),
        "safety_kept_flagged": keep_flagged,
    }
    provenance = m.provenance.model_copy(update={"settings": m.provenance.settings | record})
    what = ", ".join([*audit.flagged.values(), *(f"trace {t}" for t in traces)])
    if keep_flagged:
        notes.append(f"safety: kept what was flagged ({what}) because of --keep-flagged")
        return packet.rebuilt(provenance=provenance), notes
    if m.concepts and len(audit.flagged) == len(m.concepts):
        raise UnsafePacketError(
            f"the safety auditor flagged every concept of the packet ({what})",
            "nothing is left to export; --keep-flagged exports it anyway, and says so",
        )
    kept = drop_concepts(packet, set(audit.flagged), frozenset(traces))
    notes.append(f"safety: dropped from the packet: {what} (--keep-flagged keeps them)")
    return kept.rebuilt(provenance=provenance), notes
