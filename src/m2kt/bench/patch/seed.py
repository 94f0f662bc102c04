"""Model patches against their baselines on one task and one weak → strong pair, per seed.

Every method is scored on the same fixed test split. Selection (λ, Patch+ epoch) uses the
validation split only, or, for the label-free transfer, agreement on held-out unlabelled training
inputs. Encoding costs are measured once per model and split (the embedding cache keeps the
measured seconds) and charged to every method that needs those inputs.

Each row carries `accuracy` (test), `val_accuracy`, `inference_cost` (model forward passes per
prediction: the ensemble runs two models, logit arithmetic three, a patch adds none),
`seconds`, `labels` and `inputs_seen`; `share_of_ft_gain` is added once every row exists.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from math import nan
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.bench.patch.full_finetune import compute_parameters, forward_flops
from m2kt.bench.patch.tables import share_of_gain
from m2kt.concepts.geometry import accuracy
from m2kt.models import ClassNameHead, TextEncoder, load_model
from m2kt.models.class_head import fine_tune_head
from m2kt.models.embedding_cache import timed_cached_encode
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.config import PatchConfig
from m2kt.patch.few_shot import Tunes, select_tuned_patch
from m2kt.patch.packet_io import ClassAxes
from m2kt.patch.train import learn_patch
from m2kt.patch.transfer import TRANSFER_MAPS, TransferMap
from m2kt.patch.workflow import (
    BLEND_GRID,
    class_axes,
    predict,
    refine_unlabelled,
    select_transfer,
    select_transfer_unlabelled,
    zero_shot_head,
)
from m2kt.tasks import TextClassificationTask

Log = Callable[[str], None]
SPLITS = ("train", "val", "test")
FEW_SHOT = 16


@dataclass
class EncodedModel:
    """A model's embeddings of every split and the seconds each took to compute."""

    encoder: TextEncoder
    embeddings: dict[str, torch.Tensor]
    seconds: dict[str, float]


def encode_task(
    model_id: str,
    task: TextClassificationTask,
    cache: Path | None,
    max_length: int,
    splits: tuple[str, ...] = SPLITS,
) -> EncodedModel:
    """`model_id`'s embeddings of `splits` at `max_length` tokens, each with its seconds."""
    encoder = load_model(model_id).encoder(max_length)
    embeddings, seconds = {}, {}
    for split in splits:
        texts = getattr(task, split).texts
        embeddings[split], seconds[split] = timed_cached_encode(encoder, texts, cache)
    return EncodedModel(encoder, embeddings, seconds)


@dataclass
class FullyFineTuned:
    """The encoders fine-tuned end to end (every weight) on the task and their costs as
    `full_finetune.fine_tune_encoder` measured them; `strong` may be missing (too slow to run)."""

    weak: EncodedModel
    weak_cost: dict[str, Any]
    strong: EncodedModel | None
    strong_cost: dict[str, Any] | None
    strong_timed: dict[str, float] | None = None  # full_finetune.time_fine_tuning, this run


@dataclass
class ShortInputs:
    """The transfer's inputs read truncated to `length` tokens (`patch transfer --fit-length`):
    the weak model's training split, the strong model's training and validation splits."""

    length: int
    weak: EncodedModel
    strong: EncodedModel
    again: float | None = None  # seconds of the same passes timed once more, later in the run


def run_seed(
    task: TextClassificationTask,
    weak: EncodedModel,
    strong: EncodedModel,
    config: PatchConfig,
    seed: int,
    logit_dims: tuple[int, ...] = (),
    full: FullyFineTuned | None = None,
    shorts: tuple[ShortInputs, ...] = (),
) -> dict[str, Any]:
    """All methods for one seed; returns {method: {accuracy, seconds, trained_params, ...}}.

    `logit_dims`: other widths K to learn and transfer the patch with (rows "strong + patch,
    K=…"), each selected on validation as the main one is. `full`: the patch is also learned
    from the fully fine-tuned weak encoder, and compared with the fully fine-tuned strong one.
    `shorts`: the transfer is also fitted and selected on inputs truncated to each length (rows
    "…, fit L tokens"), the moved patch scored on full-length inputs as every other row.

    The rows are written in the tables' order: baselines, the patch and its transfers, the
    ensembles with it, Patch+, then the variants (short inputs, other widths, full fine-tuning).
    """
    run = _zero_shot(task, weak, strong, config, seed)
    weak_ft, weak_ft_z = _baselines(run)
    patch = _weak_patch(run, weak_ft)
    moved = _transfers(run, patch)
    _label_free_transfers(run, patch)
    _ensembles_with_the_patch(run, patch, moved, weak_ft_z)
    _patch_plus(run, patch, moved, weak_ft_z)
    _variants(run, patch, weak_ft, logit_dims, full, shorts)
    rows = run.rows
    rows["strong + patch"]["inference_overhead"] = _overhead(moved, run.z_strong["test"], strong)
    for name, r in rows.items():
        r["share_of_ft_gain"] = share_of_gain(rows, name)
    return rows


@dataclass
class _SeedRun:
    """What the methods of one seed share: the task's labels, both models' class-name heads
    (with the seconds each took) and their logits on every split, and the rows written so far.

    A row's `inputs_seen` counts training-time model evaluations: the weak pre-trained and the
    weak fine-tuned model each read the training inputs (2N), the strong model reads them and
    the validation inputs (N + val). Test inputs are not counted: every method sees them once.
    """

    task: TextClassificationTask
    weak: EncodedModel
    strong: EncodedModel
    config: PatchConfig
    seed: int
    axes: ClassAxes
    heads: tuple[ClassNameHead, ClassNameHead]
    head_seconds: tuple[float, float]
    z_weak: dict[str, torch.Tensor]
    z_strong: dict[str, torch.Tensor]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def c(self) -> int:
        return len(self.task.class_names)

    @property
    def y(self) -> dict[str, torch.Tensor]:
        return {split: getattr(self.task, split).labels for split in SPLITS}

    @property
    def n(self) -> dict[str, int]:
        return {split: len(getattr(self.task, split).labels) for split in SPLITS}

    def row(
        self,
        name: str,
        logits: dict[str, torch.Tensor],
        seconds: float,
        params: int,
        cost: int = 1,
        **extra: Any,
    ) -> None:
        """Row `name`: test and validation accuracy of `logits`, `cost` forward passes a
        prediction, `seconds` to build, `params` trained, and what else the method records."""
        y = self.y
        self.rows[name] = {
            "accuracy": accuracy(logits["test"], y["test"]),
            "val_accuracy": accuracy(logits["val"], y["val"]),
            "inference_cost": cost,
            "seconds": seconds,
            "trained_params": params,
        } | extra


def _zero_shot(
    task: TextClassificationTask,
    weak: EncodedModel,
    strong: EncodedModel,
    config: PatchConfig,
    seed: int,
) -> _SeedRun:
    """Both models' class-name heads over the task classes and K − C auxiliary classes, timed
    (the patch's and the transfer's rows pay for them), and their logits on every split."""
    axes = class_axes(task.class_names, task.templates, config.logit_dim, seed=seed)
    clock = time.perf_counter()
    head_weak = zero_shot_head(weak.encoder, axes)
    weak_head_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    head_strong = zero_shot_head(strong.encoder, axes)
    strong_head_seconds = time.perf_counter() - clock
    z_weak = {s: head_weak.logits(weak.embeddings[s]) for s in SPLITS}
    z_strong = {s: head_strong.logits(strong.embeddings[s]) for s in SPLITS}
    return _SeedRun(
        task,
        weak,
        strong,
        config,
        seed,
        axes,
        (head_weak, head_strong),
        (weak_head_seconds, strong_head_seconds),
        z_weak,
        z_strong,
    )


def _baselines(run: _SeedRun) -> tuple[ClassNameHead, dict[str, torch.Tensor]]:
    """Zero-shot and fine-tuned rows of both models, and the two ways to combine the weak
    fine-tuned model with the strong one without training (logit arithmetic, the ensemble).
    Returns the weak model's fine-tuned head (the patch's teacher) and its scored logits."""
    c, n, z_weak, z_strong = run.c, run.n, run.z_weak, run.z_strong
    run.row("weak zero-shot", _on(lambda s: z_weak[s][:, :c]), 0.0, 0, labels=0, inputs_seen=0)
    run.row("strong zero-shot", _on(lambda s: z_strong[s][:, :c]), 0.0, 0, labels=0, inputs_seen=0)
    tuned = {}
    for name, model, head in zip(
        ("weak", "strong"), (run.weak, run.strong), run.heads, strict=True
    ):
        tuned[name], seconds = _fine_tune(
            head, model.embeddings["train"], run.y["train"], c, run.seed
        )
        run.row(
            f"{name} fine-tuned",
            _on(partial(_head_logits, tuned[name], model)),
            model.seconds["train"] + seconds,
            tuned[name].weights.numel() + 1,
            labels=n["train"],
            inputs_seen=n["train"],
            step_seconds=seconds,
        )
    weak_ft = tuned["weak"]
    weak_ft_z = _on(lambda s: weak_ft.logits(run.weak.embeddings[s]))
    ls = _log_probs
    run.row(
        "logit arithmetic",
        _on(lambda s: ls(z_strong[s][:, :c]) + ls(weak_ft_z[s]) - ls(z_weak[s][:, :c])),
        0.0,
        0,
        cost=3,
        labels=0,
        inputs_seen=0,
    )
    run.row(
        "ensemble",
        _on(lambda s: 0.5 * ls(weak_ft_z[s]) + 0.5 * ls(z_strong[s][:, :c])),
        0.0,
        0,
        cost=2,
        labels=0,
        inputs_seen=0,
    )
    return weak_ft, weak_ft_z


def _weak_patch(run: _SeedRun, weak_ft: ClassNameHead) -> LogitPatch:
    """The patch on the weak model, learned on unlabelled training inputs, never their labels:
    its zero-shot logits mapped toward the fine-tuned ones."""
    c, z_weak = run.c, run.z_weak
    clock = time.perf_counter()
    patch = learn_patch(
        z_weak["train"], weak_ft.logits(run.weak.embeddings["train"]), run.config, seed=run.seed
    )
    learn_seconds = time.perf_counter() - clock + run.head_seconds[0]
    run.row(
        "weak + patch",
        _on(lambda s: predict(patch, z_weak[s], c)),
        learn_seconds,
        patch.parameter_count(),
        labels=0,
        inputs_seen=2 * run.n["train"],
    )
    return patch


def _transfers(run: _SeedRun, patch: LogitPatch) -> LogitPatch:
    """The patch moved to the strong model, its settings chosen on validation labels: the
    orthogonal map alone (TransMiter as published), then every map and blend. Returns the
    latter, the patch every later row builds on."""
    c, n, z_weak, z_strong = run.c, run.n, run.z_weak, run.z_strong
    transferred = {}
    variants: tuple[tuple[str, tuple[TransferMap, ...], tuple[float, ...]], ...] = (
        ("strong + patch (orthogonal)", ("orthogonal",), (1.0,)),  # TransMiter as published
        ("strong + patch", TRANSFER_MAPS, BLEND_GRID),
    )
    for name, maps, blends in variants:
        clock = time.perf_counter()
        moved, choice = select_transfer(
            patch,
            z_weak["train"],
            z_strong["train"],
            z_strong["val"],
            run.y["val"],
            c,
            maps=maps,
            blends=blends,
        )
        transfer_seconds = time.perf_counter() - clock + run.head_seconds[1]
        transferred[name] = moved
        run.row(
            name,
            _on(partial(_patched_logits, moved, z_strong, c)),
            run.strong.seconds["train"] + run.strong.seconds["val"] + transfer_seconds,
            patch.parameter_count(),
            labels=n["val"],
            inputs_seen=3 * n["train"] + n["val"],
            transfer=choice.settings(),
            step_seconds=transfer_seconds,
        )
    return transferred["strong + patch"]


def _label_free_transfers(run: _SeedRun, patch: LogitPatch) -> None:
    """The same patch moved without a label (`patch transfer --inputs`): settings chosen on
    held-out unlabelled agreement, then refitted by KL toward the patch on its own model, the
    epoch chosen on the same agreement; and without that refit (`--no-refine`)."""
    c, n, z_weak, z_strong = run.c, run.n, run.z_weak, run.z_strong
    clock = time.perf_counter()
    free, choice = select_transfer_unlabelled(patch, z_weak["train"], z_strong["train"], c)
    free_seconds = time.perf_counter() - clock + run.head_seconds[1]
    free_settings = choice.settings() | {"held_out_agreement": choice.val_accuracy}
    run.row(
        "strong + patch (label-free, no refine)",
        _on(lambda s: predict(free, z_strong[s], c)),
        run.strong.seconds["train"] + free_seconds,
        patch.parameter_count(),
        labels=0,
        inputs_seen=3 * n["train"],
        transfer=free_settings,
        step_seconds=free_seconds,
    )
    clock = time.perf_counter()
    refined, refine = refine_unlabelled(
        free, patch, z_weak["train"], z_strong["train"], c, run.seed
    )
    free_seconds += time.perf_counter() - clock
    run.row(
        "strong + patch (label-free)",
        _on(lambda s: predict(refined, z_strong[s], c)),
        run.strong.seconds["train"] + free_seconds,
        patch.parameter_count(),
        labels=0,
        inputs_seen=3 * n["train"],
        transfer=free_settings,
        refine_epoch=refine.epoch,
        refine_held_out_agreement=[refine.val_accuracy_before, refine.val_accuracy],
        step_seconds=free_seconds,
    )


def _ensembles_with_the_patch(
    run: _SeedRun, patch: LogitPatch, moved: LogitPatch, weak_ft_z: dict[str, torch.Tensor]
) -> None:
    """At the ensemble's inference cost (two models): the patched strong model beside the weak
    fine-tuned one, at equal weights; then, with the ensemble itself, the log-probabilities'
    weights chosen on validation, for the baseline as for the patch (the patched and the
    zero-shot strong logits come from one forward pass)."""
    c, n, z_strong = run.c, run.n, run.z_strong
    patch_seconds = run.rows["strong + patch"]["seconds"]
    run.row(
        "patch + weak ensemble",
        _on(
            lambda s: (
                0.5 * _log_probs(weak_ft_z[s]) + 0.5 * _log_probs(predict(moved, z_strong[s], c))
            )
        ),
        patch_seconds,
        patch.parameter_count(),
        cost=2,
        labels=n["val"],
        inputs_seen=3 * n["train"] + n["val"],
    )
    patched = _on(partial(_patched_logits, moved, z_strong, c))
    zero_shot = _on(lambda s: z_strong[s][:, :c])
    weighted = {
        "ensemble (weights on validation)": [weak_ft_z, zero_shot],
        "patch + weak ensemble (weights on validation)": [weak_ft_z, patched],
        "patch + weak + zero-shot (weights on validation)": [weak_ft_z, patched, zero_shot],
    }
    for name, parts in weighted.items():
        logits, weights = _weighted_on_validation(parts, run.y["val"])
        with_patch = parts[1] is patched
        run.row(
            name,
            logits,
            patch_seconds if with_patch else 0.0,
            patch.parameter_count() if with_patch else 0,
            cost=2,
            labels=n["val"],
            inputs_seen=3 * n["train"] + n["val"] if with_patch else 2 * n["val"],
            weights=weights,
        )


def _patch_plus(
    run: _SeedRun, patch: LogitPatch, moved: LogitPatch, weak_ft_z: dict[str, torch.Tensor]
) -> None:
    """Patch+: 16 labels a class, with agreement to the patch on its own weak model over the
    training inputs (the teacher a transfer has: `patch transfer --few-shot` does the same);
    then Patch+ at the ensemble's cost, weighted on validation as the ensemble is."""
    c, n, y, z_strong = run.c, run.n, run.y, run.z_strong
    index = run.task.few_shot(FEW_SHOT, run.seed)
    imitated = predict(patch, run.z_weak["train"], c)
    plus_variants: tuple[tuple[str, Tunes], ...] = (
        ("strong + patch+", "all"),
        ("strong + patch+ (bias only)", "bias"),
    )
    plus_logits = {}
    for name, tunes in plus_variants:
        clock = time.perf_counter()
        plus, plus_choice = select_tuned_patch(
            moved,
            z_strong["train"][index],
            y["train"][index],
            z_strong["val"],
            y["val"],
            z_strong["train"],
            imitated,
            seed=run.seed,
            tunes=tunes,
        )
        plus_logits[name] = _on(partial(_patched_logits, plus, z_strong, c))
        run.row(
            name,
            plus_logits[name],
            run.rows["strong + patch"]["seconds"] + time.perf_counter() - clock,
            plus.parameter_count() if tunes == "all" else run.config.logit_dim,
            labels=n["val"] + len(index),
            inputs_seen=3 * n["train"] + n["val"],
            best_epoch=plus_choice.epoch,
            agreement=plus_choice.agreement,
        )
    zero_shot = _on(lambda s: z_strong[s][:, :c])
    parts = [weak_ft_z, plus_logits["strong + patch+"], zero_shot]
    logits, weights = _weighted_on_validation(parts, y["val"])
    run.row(
        "patch+ + weak + zero-shot (weights on validation)",
        logits,
        run.rows["strong + patch+"]["seconds"],
        patch.parameter_count(),
        cost=2,
        labels=n["val"] + len(index),
        inputs_seen=3 * n["train"] + n["val"],
        weights=weights,
    )


def _variants(
    run: _SeedRun,
    patch: LogitPatch,
    weak_ft: ClassNameHead,
    logit_dims: tuple[int, ...],
    full: FullyFineTuned | None,
    shorts: tuple[ShortInputs, ...],
) -> None:
    """The rows `run_seed`'s options ask for: the transfer fitted on short inputs, the patch at
    other widths K, and the fully fine-tuned teacher and reference."""
    rows, n, task = run.rows, run.n, run.task
    for short in shorts:
        fitted = _short_fit(patch, short, run.heads, run.z_strong, task)
        del fitted["flops"]  # FLOPs are set against full fine-tuning, in the full rows only
        rows[f"strong + patch, fit {short.length} tokens"] = fitted | {
            "inputs_seen": 3 * n["train"] + n["val"]
        }
    for width in logit_dims:
        config = replace(run.config, logit_dim=width)
        rows[f"strong + patch, K={width}"] = _other_width(
            task, weak_ft, run.weak, run.strong, config, run.seed
        ) | {"labels": n["val"], "inputs_seen": 3 * n["train"] + n["val"]}
    if full is not None:
        rows |= _full_rows(
            task, full, run.axes, run.z_weak, run.z_strong, run.strong, run.config, run.seed, shorts
        )


def _on(f: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """`f` on the two scored splits."""
    return {"val": f("val"), "test": f("test")}


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=-1)


def _full_rows(
    task: TextClassificationTask,
    full: FullyFineTuned,
    axes: ClassAxes,
    z_weak: dict[str, torch.Tensor],
    z_strong: dict[str, torch.Tensor],
    strong: EncodedModel,
    config: PatchConfig,
    seed: int,
    shorts: tuple[ShortInputs, ...],
) -> dict[str, dict[str, Any]]:
    """The fully fine-tuned weak encoder as the teacher; the fully fine-tuned strong encoder, if
    it ran, as the reference for `share_of_full_ft_gain`. `flops` are estimates (full_finetune):
    a transfer's are its forward passes, the strong model's over the training and validation
    inputs and, fitted on short inputs, the weak model's over the training inputs."""
    c, n = len(task.class_names), len(task.train)
    tuned = {"weak": (full.weak, full.weak_cost)}
    if full.strong is not None and full.strong_cost is not None:
        tuned["strong"] = (full.strong, full.strong_cost)
    rows: dict[str, dict[str, Any]] = {}
    for side, (model, cost) in tuned.items():
        head = ClassNameHead.from_names(model.encoder, axes.task_classes, axes.templates)
        logits = {s: head.logits(x) for s, x in model.embeddings.items()}
        rows[f"{side} fine-tuned (full)"] = {
            "accuracy": accuracy(logits["test"], task.test.labels),
            "val_accuracy": accuracy(logits["val"], task.val.labels),
            "inference_cost": 1,
            "seconds": cost["seconds"],
            "flops": cost["flops"],
            "trained_params": cost["parameters"],
            "labels": n,
            "inputs_seen": n * cost["epochs_run"],
        }
        if side == "weak":
            teacher = logits["train"]
    clock = time.perf_counter()
    patch = learn_patch(z_weak["train"], teacher, config, seed=seed)
    moved, choice = select_transfer(
        patch, z_weak["train"], z_strong["train"], z_strong["val"], task.val.labels, c
    )
    transfer_seconds = time.perf_counter() - clock
    rows["strong + patch (full teacher)"] = {
        "accuracy": accuracy(predict(moved, z_strong["test"], c), task.test.labels),
        "val_accuracy": choice.val_accuracy,
        "inference_cost": 1,
        "seconds": strong.seconds["train"] + strong.seconds["val"] + transfer_seconds,
        "flops": forward_flops(strong.encoder, task.train.texts + task.val.texts),
        "trained_params": patch.parameter_count(),
        "labels": len(task.val),
        "inputs_seen": 3 * n + len(task.val),
        "transfer": choice.settings(),
        "step_seconds": transfer_seconds,
    }
    heads = (zero_shot_head(full.weak.encoder, axes), zero_shot_head(strong.encoder, axes))
    for short in shorts:
        rows[f"strong + patch (full teacher, fit {short.length} tokens)"] = _short_fit(
            patch, short, heads, z_strong, task
        ) | {"inputs_seen": 3 * n + len(task.val)}
    if full.strong_timed is not None:
        for name in rows:
            if name.startswith("strong + patch (full teacher, fit"):  # timed in the same run
                rows[name]["strong_full_ft_timed"] = full.strong_timed
    if "strong fine-tuned (full)" not in rows:  # scaled by compute per token, same tokens
        ratio = compute_parameters(strong.encoder.model) / compute_parameters(
            full.weak.encoder.model
        )
        rows["strong + patch (full teacher)"]["strong_full_ft_estimate"] = {
            "seconds": ratio * full.weak_cost["seconds"],
            "flops": ratio * full.weak_cost["flops"],
        }
    else:
        zero_shot = accuracy(z_strong["test"][:, :c], task.test.labels)
        span = rows["strong fine-tuned (full)"]["accuracy"] - zero_shot
        for r in rows.values():
            r["share_of_full_ft_gain"] = (r["accuracy"] - zero_shot) / span if span else nan
    return rows


def _short_fit(
    patch: LogitPatch,
    short: ShortInputs,
    heads: tuple[ClassNameHead, ClassNameHead],
    z_strong: dict[str, torch.Tensor],
    task: TextClassificationTask,
) -> dict[str, Any]:
    """`patch` moved with both models reading truncated inputs, selected on validation inputs
    truncated alike; scored on the full-length test and validation logits `z_strong`. Costs
    are every truncated forward pass the transfer needs, measured and estimated."""
    c = len(task.class_names)
    clock = time.perf_counter()
    z_weak = heads[0].logits(short.weak.embeddings["train"])
    z_train, z_val = (heads[1].logits(short.strong.embeddings[s]) for s in ("train", "val"))
    moved, choice = select_transfer(patch, z_weak, z_train, z_val, task.val.labels, c)
    step = time.perf_counter() - clock
    passes = short.weak.seconds["train"] + sum(short.strong.seconds.values())
    timings = {"passes_seconds": passes}
    if short.again is not None:  # the mean of both timings, each kept
        timings["passes_seconds_again"] = short.again
        passes = (passes + short.again) / 2
    flops = forward_flops(short.weak.encoder, task.train.texts) + forward_flops(
        short.strong.encoder, task.train.texts + task.val.texts
    )
    return {
        "accuracy": accuracy(predict(moved, z_strong["test"], c), task.test.labels),
        "val_accuracy": accuracy(predict(moved, z_strong["val"], c), task.val.labels),
        "inference_cost": 1,
        "seconds": passes + step,
        "flops": flops,
        "trained_params": patch.parameter_count(),
        "labels": len(task.val),
        "transfer": choice.settings() | {"fit_length": short.length},
        "step_seconds": step,
    } | timings


def _other_width(
    task: TextClassificationTask,
    weak_ft: ClassNameHead,
    weak: EncodedModel,
    strong: EncodedModel,
    config: PatchConfig,
    seed: int,
) -> dict[str, Any]:
    """The patch with K = `config.logit_dim`: its own auxiliary axes, learned, transferred and
    selected on validation as the main row is; test and validation accuracy and seconds."""
    c = len(task.class_names)
    clock = time.perf_counter()
    axes = class_axes(task.class_names, task.templates, config.logit_dim, seed=seed)
    z_weak = zero_shot_head(weak.encoder, axes).logits(weak.embeddings["train"])
    head = zero_shot_head(strong.encoder, axes)
    z_strong = {s: head.logits(strong.embeddings[s]) for s in SPLITS}
    patch = learn_patch(z_weak, weak_ft.logits(weak.embeddings["train"]), config, seed=seed)
    moved, choice = select_transfer(
        patch, z_weak, z_strong["train"], z_strong["val"], task.val.labels, c
    )
    return {
        "accuracy": accuracy(predict(moved, z_strong["test"], c), task.test.labels),
        "val_accuracy": choice.val_accuracy,
        "inference_cost": 1,
        "seconds": time.perf_counter() - clock + strong.seconds["train"],
        "trained_params": patch.parameter_count(),
        "transfer": choice.settings(),
    }


def _fine_tune(
    head: ClassNameHead, embeddings: torch.Tensor, labels: torch.Tensor, classes: int, seed: int
) -> tuple[ClassNameHead, float]:
    """The adaptation a user pays for, here: tuning the task rows of the class-name head."""
    clock = time.perf_counter()
    tuned = fine_tune_head(head.first(classes), embeddings, labels, seed=seed)
    return tuned, time.perf_counter() - clock


def _weighted_on_validation(
    parts: list[dict[str, torch.Tensor]], val_labels: torch.Tensor, step: float = 0.1
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Σ wᵢ · log-softmax(partᵢ) with weights on the simplex (a grid of `step`) that score best
    on the validation split; ties go to the weights nearest equal. Test logits are only combined."""
    ticks = round(1 / step)
    best: tuple[float, float] | None = None
    for point in itertools.product(range(ticks + 1), repeat=len(parts) - 1):
        if sum(point) > ticks:
            continue
        weights = [i / ticks for i in point] + [1 - sum(point) / ticks]
        score = accuracy(_mixed(parts, weights, "val"), val_labels)
        key = (score, -sum(abs(w - 1 / len(parts)) for w in weights))
        if best is None or key > best:
            best, chosen = key, weights
    return {s: _mixed(parts, chosen, s) for s in ("val", "test")}, chosen


def _mixed(parts: list[dict[str, torch.Tensor]], weights: list[float], split: str) -> torch.Tensor:
    """Σ wᵢ · log-softmax(partᵢ[split]): log-probabilities, so models on other scales mix."""
    logs = [w * F.log_softmax(p[split], dim=-1) for w, p in zip(weights, parts, strict=True)]
    return torch.stack(logs).sum(dim=0)


def _overhead(patch: torch.nn.Module, logits: torch.Tensor, strong: EncodedModel) -> float:
    """Patch time over the strong model's own time, per input, on the test split."""
    clock = time.perf_counter()
    with torch.no_grad():
        patch(logits)
    return (time.perf_counter() - clock) / strong.seconds["test"]


def _head_logits(head: ClassNameHead, model: EncodedModel, split: str) -> torch.Tensor:
    return head.logits(model.embeddings[split])


def _patched_logits(
    patch: LogitPatch, logits: dict[str, torch.Tensor], classes: int, split: str
) -> torch.Tensor:
    return predict(patch, logits[split], classes)
