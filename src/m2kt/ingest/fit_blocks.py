"""Train a concept memory together with an adapter inside the student's blocks.

The memory is built at the same closed-form start as `fit_memory` (from the frozen student's
states); then, every step, the probes are read again through the adapted student so that the
composite loss reaches the LoRA matrices, and the layer hints (`m2kt.ingest.hints`) pull the
student's intermediate layers toward the teacher's traces. How many steps to take is chosen as
for the memory alone: train on three quarters of the probes with a fresh adapter, keep the step
count (every `eval_every`, 0 included) with the best agreement on the held-out quarter, then
train a fresh adapter on all probes for that many steps. The student's forward is the adapted
one when this returns; the caller verifies and keeps or removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from m2kt import distributed
from m2kt.errors import UsageError
from m2kt.ingest.blocks import BlockAdapter, BlockSettings
from m2kt.ingest.fit import FitSettings, build_memory, fewest_best_steps, selection_split
from m2kt.ingest.hints import LayerHints
from m2kt.ingest.loss import LossWeights, Targets, loss_terms
from m2kt.ingest.memory import ConceptMemory, SlotSource
from m2kt.progress import Progress, StageProgress, quiet

# Reads the probes `index` through the (adapted) student, with gradients: the states the
# memory reads [n, d_S] and, for the hints, the states of each layer they ask for.
StudentRead = Callable[[torch.Tensor], tuple[torch.Tensor, dict[int, torch.Tensor]]]
AdapterFactory = Callable[[], BlockAdapter]
HintsFactory = Callable[[torch.Tensor], LayerHints | None]  # hints on the probes `index`
AnchorsFactory = Callable[[torch.Tensor], torch.Tensor]  # the student's anchors from `index`


@dataclass
class BlocksFit:
    memory: ConceptMemory
    adapter: BlockAdapter
    hints: LayerHints | None
    history: dict[str, list[float]] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    selection: dict[str, float] = field(default_factory=dict)

    @property
    def trainable_parameters(self) -> int:
        """Parameters trained: the memory's, the adapter's and the hint projectors' (which
        are thrown away after training and not saved)."""
        projectors = self.hints.num_trainable() if self.hints is not None else 0
        return self.memory.num_trainable() + self.adapter.num_trainable() + projectors


def fit_in_blocks(
    concepts: tuple[str, ...],
    targets: Targets,
    read: StudentRead,
    new_adapter: AdapterFactory,
    weights: LossWeights,
    settings: FitSettings | None = None,
    blocks: BlockSettings | None = None,
    *,
    hints: HintsFactory | None = None,
    anchors: AnchorsFactory | None = None,
    slots: SlotSource = "aligned",
    ce_weight: float = 0.0,
    progress: StageProgress | None = None,
) -> BlocksFit:
    """Memory + in-block adapter (+ layer hints when `hints` builds them and L_reason is on).

    `anchors`, when the student's concept anchors are computed from the probes themselves (a
    benchmark's class centroids), recomputes them from the training quarters alone while the
    step count is chosen, so that the held-out quarter does not shape the start it scores.
    """
    settings = settings or FitSettings()
    blocks = blocks or BlockSettings()
    stage = progress or quiet
    if distributed.current().size > 1:
        raise UsageError(
            "an adapter inside the student's blocks trains in one process",
            "run ingestion with --adapter blocks without torchrun",
        )
    use_hints = hints if weights.reason else None
    steps = blocks.steps
    answers = targets.probe_answers()
    chosen: dict[str, float] = {}
    if settings.select_steps and answers is not None and targets.probe_count >= 8:
        held, kept = selection_split(targets.probe_count, settings)
        trial = _train(
            concepts,
            targets,
            kept,
            read,
            new_adapter(),
            weights,
            settings,
            blocks,
            use_hints,
            anchors,
            slots,
            ce_weight,
            evaluate=(held, answers[held]),
            progress=lambda d, t: stage("choose steps", d, t),
        )
        trial.adapter.remove()
        steps, best = fewest_best_steps(trial.scores)
        chosen = {"selected_steps": float(steps), "heldout_agreement": best}
    everything = torch.arange(targets.probe_count)
    result = _train(
        concepts,
        targets,
        everything,
        read,
        new_adapter(),
        weights,
        settings,
        replace(blocks, steps=steps),
        use_hints,
        anchors,
        slots,
        ce_weight,
        progress=lambda d, t: stage("train", d, t),
    )
    result.selection = chosen
    return result


def _train(
    concepts: tuple[str, ...],
    targets: Targets,
    index: torch.Tensor,
    read: StudentRead,
    adapter: BlockAdapter,
    weights: LossWeights,
    settings: FitSettings,
    blocks: BlockSettings,
    hints: HintsFactory | None,
    anchors: AnchorsFactory | None,
    slots: SlotSource,
    ce_weight: float,
    evaluate: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> BlocksFit:
    torch.manual_seed(settings.seed)
    part = targets.subset(index)
    if anchors is not None:
        part = replace(part, student_anchors=anchors(index))
    memory = build_memory(concepts, part, settings, slots)
    layer_hints = hints(index) if hints is not None else None
    groups = [
        {"params": [p for p in memory.parameters() if p.requires_grad], "lr": settings.lr},
        {"params": list(adapter.parameters()), "lr": blocks.lr},
    ]
    if layer_hints is not None:
        groups.append({"params": list(layer_hints.parameters()), "lr": blocks.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    history: dict[str, list[float]] = {}
    scores: dict[int, float] = {}
    generator = torch.Generator().manual_seed(settings.seed)
    everything = torch.arange(len(index))
    for step in range(blocks.steps + 1):
        if evaluate is not None and step % blocks.eval_every == 0:
            with torch.no_grad():
                states, _ = read(evaluate[0])
                predicted = memory(states).argmax(-1)
            scores[step] = float((predicted == evaluate[1]).float().mean())
        if step == blocks.steps:
            break
        at = everything
        if blocks.batch is not None and len(index) > blocks.batch:
            at = torch.randperm(len(index), generator=generator)[: blocks.batch]
        states, layers = read(index[at])
        live = replace(part.subset(at), student_states=states)
        terms = loss_terms(memory, live, weights, ce_weight)
        if layer_hints is not None:
            terms["hint"] = layer_hints.loss(layers, at)
            terms["total"] = terms["total"] + weights.reason * terms["hint"]
        if not terms["total"].requires_grad:
            break  # every term is off: nothing to train
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        for name, value in terms.items():
            history.setdefault(name, []).append(float(value.detach()))
        if progress is not None:
            progress(step + 1, blocks.steps)
    memory.eval()
    return BlocksFit(memory, adapter, layer_hints, history, scores)
