"""The new-computation rows with an adapter inside the frozen student's blocks.

The memory rows read the frozen student linearly and stay far below the teacher: the student
never computed the sum. Here every method trains the same concept memory *and* the same LoRA
on the student's attention and MLP projections (`m2kt.ingest.blocks`), through the student,
with `m2kt.ingest.fit_blocks.fit_in_blocks`, the function `m2kt ingest --adapter blocks`
trains with; so a gain of the packet over KD is the packet's, not the adapter's capacity.

- packet, blocks: the packet's targets on the full composite loss, and its traces as layer
  hints: the teacher's residual state after each of its blocks, at the answer position and
  after the worked step (a + b) (the position of b), paired with the student's layers by
  linear CKA on the B inputs before training (`m2kt.ingest.hints`);
- packet, blocks − reason: without L_reason (neither the pooled term nor the hints);
- packet, blocks, last layers: hints between the last layers only (the pairing ablation);
- logit KD, blocks: the teacher's outputs, KL only, free slots;
- supervised, blocks: the labels, cross-entropy only, free slots.

The memory reads what it reads in the memory rows (the last two blocks' MLP units at the last
token, standardised with the frozen student's training-split statistics), now computed by the
adapted student. After each method the adapter is taken out and the student's hash checked.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from m2kt.bench.efficiency.methods import method_row, only
from m2kt.errors import UsageError
from m2kt.ingest.blocks import BlockAdapter, BlockSettings, target_modules
from m2kt.ingest.fit import FitSettings
from m2kt.ingest.fit_blocks import StudentRead, fit_in_blocks
from m2kt.ingest.hints import LayerHints, PairingKind, pair_layers
from m2kt.ingest.loss import LossWeights, Targets
from m2kt.ingest.memory import SlotSource
from m2kt.models.fingerprint import weight_sha256
from m2kt.reproducible import one_thread
from m2kt.tasks.tiny_transformer import TinyTransformer, at_last

# Set by hand before the measurement (the memory's lr ×3; minibatches; steps chosen on a
# held-out quarter of the B inputs); not tuned on any split.
BLOCKS = BlockSettings(rank=8, alpha=16.0, steps=600, lr=3e-3, eval_every=50, batch=256)
# The token after which the first worked step of a problem is known: (a + b) mod p after b.
WORKED_STEP = {"modsum": 2}

Method = tuple[Targets, LossWeights, SlotSource, float, PairingKind | None]


def block_methods(
    packet: Targets, kd: Targets, supervised: Targets, ablations: bool
) -> dict[str, Method]:
    """Each in-block method: targets, loss weights, slots, CE weight, layer pairing."""

    methods: dict[str, Method] = {
        "packet, blocks": (packet, LossWeights(), "aligned", 0.0, "cka"),
        "logit KD, blocks": (kd, only("kl"), "free", 0.0, None),
        "supervised, blocks": (supervised, only(), "free", 1.0, None),
    }
    if ablations:
        methods["packet, blocks − reason"] = (
            packet,
            LossWeights().without("reason"),
            "aligned",
            0.0,
            None,
        )
        methods["packet, blocks, last layers"] = (packet, LossWeights(), "aligned", 0.0, "last")
    return methods


def positions(tokens: torch.Tensor, family: str) -> torch.Tensor:
    """[N, P]: the worked step's position (where the family has one) and the answer's."""
    last = (tokens != 0).sum(1) - 1
    step = WORKED_STEP.get(family)
    if step is None:
        return last[:, None]
    return torch.stack([torch.full_like(last, step), last], 1)


def layer_states(
    model: TinyTransformer, tokens: torch.Tensor, family: str
) -> dict[int, torch.Tensor]:
    """Each block's output at `positions` [N, P, d], blocks numbered from 1."""
    states, _ = model.run(tokens)
    where = positions(tokens, family)
    rows = torch.arange(len(tokens))[:, None]
    return {layer: states[layer][rows, where] for layer in range(1, len(states))}


def student_read(
    student: TinyTransformer,
    tokens: torch.Tensor,
    family: str,
    scale: tuple[torch.Tensor, torch.Tensor],
) -> StudentRead:
    """Reads `tokens[index]` through the (adapted) student, with gradients: the memory's
    features (last two blocks' MLP units at the last token, standardised) and its layers."""
    mean, std = scale

    def read(index: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        chosen = tokens[index]
        states, hidden = student.run(chosen)
        features = torch.cat([at_last(h, chosen) for h in hidden[-2:]], -1)
        where = positions(chosen, family)
        rows = torch.arange(len(chosen))[:, None]
        layers = {layer: states[layer][rows, where] for layer in range(1, len(states))}
        return (features - mean) / std, layers

    return read


def run_block_methods(
    setting: Any,
    index: torch.Tensor,
    methods: dict[str, Method],
    inputs: dict[str, dict[str, int]],
    settings: FitSettings,
    seed: int,
    split: str,
    labels_used: int,
    blocks: BlockSettings = BLOCKS,
) -> dict[str, dict[str, Any]]:
    """Train and score every in-block method on one budget (`index`, the training inputs);
    the same row fields as the memory rows, with `adapter` "blocks" and the layer pairs."""
    s = setting
    family = s.task.name
    student = s.student
    frozen = weight_sha256(student)
    train_tokens = s.task.train.tokens
    with torch.no_grad():
        _, hidden = student.run(train_tokens)
        raw = torch.cat([at_last(h, train_tokens) for h in hidden[-2:]], -1)
        scale = (raw.mean(0), raw.std(0) + 1e-6)
        teacher_layers = layer_states(s.teacher, train_tokens[index], family)
        student_layers = layer_states(student, train_tokens[index], family)
    read = student_read(student, train_tokens[index], family, scale)
    evaluate = student_read(student, getattr(s.task, split).tokens, family, scale)
    names = target_modules(student, list(student.blocks))
    fit = replace(settings, seed=seed)
    rows: dict[str, dict[str, Any]] = {}
    with one_thread():
        for name, (targets, weights, slots, ce, pairing) in methods.items():
            started = time.perf_counter()
            pairs = pair_layers(student_layers, teacher_layers, pairing) if pairing else ()

            def hints(at: torch.Tensor, pairs: Any = pairs) -> LayerHints:
                return LayerHints(
                    pairs,
                    {s: v[at] for s, v in student_layers.items()},
                    {t: v[at] for t, v in teacher_layers.items()},
                    seed=seed,
                )

            result = fit_in_blocks(
                s.task.classes,
                targets,
                read,
                lambda: BlockAdapter(student, names, blocks, seed=seed),
                weights,
                fit,
                blocks,
                hints=hints if pairs else None,
                anchors=_centroids_of(targets),
                slots=slots,
                ce_weight=ce,
            )
            with torch.no_grad():
                states, _ = evaluate(torch.arange(len(getattr(s.task, split).labels)))
                predicted = result.memory(states).argmax(-1)
            trained = result.trainable_parameters
            result.adapter.remove()
            if weight_sha256(student) != frozen:
                raise RuntimeError("the frozen student changed during an in-block run")
            rows[name] = method_row(
                float((predicted == getattr(s.task, split).labels).float().mean()),
                inputs[name.split(",")[0]],
                labels_used if name.startswith("supervised") else 0,
                trained,
                "blocks",
                started,
                result.history,
                result.selection,
            ) | {"layer_pairs": [list(p) for p in pairs]}
    return rows


def _centroids_of(targets: Targets) -> Any:
    """The student's class centroids recomputed from the probes being trained on, so that the
    held-out quarter of step selection does not shape the start it scores."""
    from m2kt.bench.efficiency.new_computation import class_centroids

    answers = targets.probe_answers()
    if answers is None:
        raise UsageError("in-block methods need the teacher's answers or labels")
    k = len(targets.student_anchors)

    def anchors(at: torch.Tensor) -> torch.Tensor:
        return class_centroids(targets.student_states[at], answers[at], k)

    return anchors
