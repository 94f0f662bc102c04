"""Train a concept memory on the composite loss, from its closed-form starting point."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch.nn import functional as F

from m2kt import distributed
from m2kt.align.cal import CALConfig, CALKind, ConceptAlignmentLayer
from m2kt.errors import UsageError
from m2kt.ingest.loss import TERMS, LossWeights, Targets, loss_terms
from m2kt.ingest.memory import ConceptMemory, MemoryConfig, SlotSource, gate_logit
from m2kt.progress import Progress, StageProgress, quiet

GATES = (0.0, 0.2, 0.5, 0.8, 1.0)  # the teacher's share in the slots, chosen per packet


@dataclass(frozen=True)
class FitSettings:
    """How the memory is built and trained. Defaults were chosen on validation splits only."""

    slots: SlotSource = "aligned"  # "teacher": read the student in the teacher's space
    pair_weight: float = 1.0  # a probe pair's weight against an anchor pair in the closed form
    cal: CALKind = "linear"
    cal_rank: int | None = None
    cal_init: str = "least_squares"
    ridge: float = 0.1
    residual_rank: int = 8
    gate: float = 0.8  # the teacher's share at the start; chosen from GATES with the steps
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    select_steps: bool = True
    holdout: float = 0.25
    eval_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.pair_weight < 1e6:
            raise UsageError(f"pair_weight must be in (0, 1e6), got {self.pair_weight}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    memory: ConceptMemory
    history: dict[str, list[float]] = field(default_factory=dict)  # term -> value per step
    scores: dict[int, float] = field(default_factory=dict)  # step -> held-out agreement
    selection: dict[str, float] = field(default_factory=dict)

    @property
    def trainable_parameters(self) -> int:
        return self.memory.num_trainable()


def build_memory(
    concepts: tuple[str, ...],
    targets: Targets,
    settings: FitSettings,
    slots: SlotSource = "aligned",
) -> ConceptMemory:
    """The memory at its starting point: for aligned slots, φ fitted in closed form on every
    pair of states the packet offers (anchor texts, probes, traces), or on concepts with the
    student's anchors when it offers none."""
    d_s = targets.student_anchors.shape[1]
    if slots == "free":
        config = MemoryConfig(concepts, d_s, None, "free", settings.residual_rank)
        return ConceptMemory(config, targets.student_anchors, seed=settings.seed)
    if targets.teacher_concepts is None:
        raise UsageError("aligned slots need the teacher's concepts; the packet has none")
    d_t = targets.teacher_concepts.shape[1]
    teacher_side = slots == "teacher"
    d_in, d_out = (d_s, d_t) if teacher_side else (d_t, d_s)
    cal_config = CALConfig(kind=settings.cal, d_in=d_in, d_out=d_out, rank=settings.cal_rank)
    # φ is fitted on the probes both models read, then applied to the teacher's concepts: a
    # prediction of where each lands in the student. Fitting it on (concept, student anchor)
    # pairs as well would pin φ(c_k) to the student's prior and carry nothing (validation:
    # 77.8% with those pairs against 85.1% without, BBC e1 → e2 at 13 inputs, docs/ingest.md).
    # Anchor pairs (task-agnostic texts both read) join the probe pairs: they determine the
    # map where a handful of probes cannot.
    # Probe pairs (on the task) weigh `pair_weight` anchor pairs (task-agnostic).
    sources: list[torch.Tensor] = []
    destinations: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    if targets.anchor_teacher is not None and targets.anchor_student is not None:
        sources.append(targets.anchor_teacher)
        destinations.append(targets.anchor_student)
        weights.append(torch.ones(len(targets.anchor_teacher)))
    if targets.teacher_states is not None:
        sources.append(targets.teacher_states)
        destinations.append(targets.student_states)
        weights.append(torch.full((len(targets.teacher_states),), settings.pair_weight))
    if sum(len(x) for x in sources) >= 2:
        source, target = torch.cat(sources), torch.cat(destinations)
        weight: torch.Tensor | None = torch.cat(weights)
    else:
        source, target, weight = targets.teacher_concepts, targets.student_anchors, None
    if teacher_side:
        source, target = target, source
    cal = ConceptAlignmentLayer.fit(
        cal_config,
        F.normalize(source.float(), dim=-1),
        F.normalize(target.float(), dim=-1),
        init=settings.cal_init,  # type: ignore[arg-type]
        ridge=settings.ridge,
        seed=settings.seed,
        weights=weight,
    )
    config = MemoryConfig(concepts, d_s, d_t, slots, settings.residual_rank, cal_config)
    scale = targets.teacher_scale
    return ConceptMemory(
        config,
        targets.student_anchors,
        targets.teacher_concepts,
        cal,
        gate=settings.gate,
        seed=settings.seed,
        **({"scale": scale, "teacher_scale": scale} if teacher_side else {}),
    )


def fit_memory(
    concepts: tuple[str, ...],
    targets: Targets,
    weights: LossWeights,
    settings: FitSettings | None = None,
    *,
    slots: SlotSource | None = None,
    ce_weight: float = 0.0,
    progress: StageProgress | None = None,
) -> FitResult:
    """Build the memory, choose how long to train it, and train it full-batch with AdamW.

    With few probes, training on the composite loss can undo a good closed-form start, so the
    number of steps is chosen on a held-out quarter of the probes themselves (agreement with
    the teacher's answers, or with labels for supervised tuning; ties go to fewer steps, 0
    meaning the closed form), then the memory is trained again on all probes for that many
    steps. The gate, how much the teacher's concepts weigh against the student's own
    anchors, is chosen first, on the closed form and the same held-out quarter, from `GATES`:
    0 is the student's own view, so a packet whose concepts agree with the teacher's answers
    less than the student's anchors do gets no weight rather than the default's trust.
    Nothing is chosen on data the benchmark scores.
    """
    settings = settings or FitSettings()
    slots = slots or settings.slots
    stage = progress or quiet
    steps = settings.steps
    answers = targets.probe_answers()
    chosen: dict[str, float] = {}
    gate = settings.gate
    built: ConceptMemory | None = None
    if settings.select_steps and answers is not None and targets.probe_count >= 8:
        held, kept = selection_split(targets.probe_count, settings)
        evaluate = (targets.subset(held).student_states, answers[held])
        if slots != "free":
            gate, built, found = _choose_gate(
                concepts, targets.subset(kept), settings, slots, evaluate
            )
            chosen |= found
        scores = _train(
            concepts,
            targets.subset(kept),
            weights,
            replace(settings, gate=gate),
            slots,
            ce_weight,
            evaluate=evaluate,
            progress=lambda d, t: stage("choose steps", d, t),
            memory=built,
        ).scores
        steps, best = fewest_best_steps(scores)
        steps = int(distributed.from_writer(float(steps)))  # every process trains as long
        chosen |= {"selected_steps": float(steps), "heldout_agreement": best}
    result = _train(
        concepts,
        targets,
        weights,
        replace(settings, steps=steps, gate=gate),
        slots,
        ce_weight,
        progress=lambda d, t: stage("train", d, t),
    )
    result.selection = chosen
    return result


def _choose_gate(
    concepts: tuple[str, ...],
    targets: Targets,
    settings: FitSettings,
    slots: SlotSource,
    evaluate: tuple[torch.Tensor, torch.Tensor],
) -> tuple[float, ConceptMemory, dict[str, float]]:
    """The gate of `GATES` (or the settings' own) whose closed-form memory agrees best with
    the held-out answers `evaluate`, among equals the settings' own; the memory set to it
    (one map, fitted once: only the blend changes, and the step selection starts from it);
    and the agreement at each gate, for the selection record."""
    memory = build_memory(concepts, targets, settings, slots)
    assert memory.gate_logit is not None
    found = {}
    with torch.no_grad():
        for gate in sorted({*GATES, settings.gate}):
            memory.gate_logit.fill_(float(gate_logit(gate)))
            predicted = memory(evaluate[0]).argmax(-1)
            found[gate] = float((predicted == evaluate[1]).float().mean())
        chosen = distributed.from_writer(max(found, key=lambda g: (found[g], g == settings.gate)))
        memory.gate_logit.fill_(float(gate_logit(chosen)))
    return chosen, memory, {"selected_gate": chosen} | {f"gate_{g:g}": a for g, a in found.items()}


def selection_split(count: int, settings: FitSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded held-out quarter (`settings.holdout`) of `count` probes, and the rest."""
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(count, generator=generator)
    cut = max(2, round(settings.holdout * count))
    return order[:cut], order[cut:]


def fewest_best_steps(scores: dict[int, float]) -> tuple[int, float]:
    """The fewest steps with the best held-out agreement, and that agreement."""
    best = max(scores.values())
    return min(step for step, score in scores.items() if score >= best), best


def _train(
    concepts: tuple[str, ...],
    targets: Targets,
    weights: LossWeights,
    settings: FitSettings,
    slots: SlotSource,
    ce_weight: float,
    evaluate: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Progress | None = None,
    memory: ConceptMemory | None = None,
) -> FitResult:
    """`memory`: the closed form already built for these targets and settings, if any."""
    torch.manual_seed(settings.seed)
    if memory is None:
        memory = build_memory(concepts, targets, settings, slots)
    params = [p for p in memory.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    history: dict[str, list[float]] = {}
    scores: dict[int, float] = {}
    world = distributed.current()
    share = torch.arange(world.rank, targets.probe_count, world.size)
    for step in range(settings.steps + 1):
        if evaluate is not None and step % settings.eval_every == 0:
            with torch.no_grad():
                predicted = memory(evaluate[0]).argmax(-1)
            scores[step] = float((predicted == evaluate[1]).float().mean())
        if step == settings.steps:
            break
        terms = (
            loss_terms(memory, targets, weights, ce_weight)
            if world.size == 1
            else _share_terms(memory, targets, weights, ce_weight, share)
        )
        if "total" in terms and not terms["total"].requires_grad:
            del terms["total"]  # nothing to train in this process
        values = _summed_values(terms)
        if "total" not in values:
            break  # every term is off: the closed-form start is the result
        optimizer.zero_grad()
        if "total" in terms:
            terms["total"].backward()
        distributed.average_gradients(params)
        optimizer.step()
        for name, value in values.items():
            history.setdefault(name, []).append(value)
        if progress is not None:
            progress(step + 1, settings.steps)
    memory.eval()
    return FitResult(memory, history, scores=scores)


def _share_terms(
    memory: ConceptMemory,
    targets: Targets,
    weights: LossWeights,
    ce_weight: float,
    share: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """This process's part of the composite loss, so that the parts sum to the whole.

    Per-probe terms (reason, kl, ce) are means over probes: a share of n of N probes counts
    n/N. Concept terms (geo, struct) are the same in every process and count n/N too, so
    they add up once. L_safety averages over slots and probes together and does not split
    that way; it is cheap, so process 0 computes it whole.
    """
    terms: dict[str, torch.Tensor] = {}
    if len(share):
        part = loss_terms(memory, targets.subset(share), replace(weights, safety=0.0), ce_weight)
        terms = {name: value * (len(share) / targets.probe_count) for name, value in part.items()}
    if distributed.current().is_writer and weights.safety:
        only_safety = LossWeights(**{t: weights.safety if t == "safety" else 0.0 for t in TERMS})
        whole = loss_terms(memory, targets, only_safety)
        if "safety" in whole:
            terms["safety"] = whole["safety"]
            terms["total"] = terms.get("total", torch.tensor(0.0)) + whole["total"]
    return terms


def _summed_values(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each term's value summed over the processes (absent where every process lacks it)."""
    names = [*TERMS, "ce", "total"]
    local = torch.zeros(2, len(names), dtype=torch.float64)
    for i, name in enumerate(names):
        if name in terms:
            local[0, i], local[1, i] = float(terms[name].detach()), 1.0
    summed = distributed.all_sum(local)
    return {name: float(summed[0, i]) for i, name in enumerate(names) if summed[1, i] > 0}
