"""Model patches against their baselines on one task and one weak → strong pair, per seed.

Every method is scored on the same fixed test split. Selection (λ, Patch+ epoch) uses the
validation split only. Encoding costs are measured once per model and split (the embedding
cache keeps the measured seconds) and charged to every method that needs those inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.models import ClassNameHead, TextEncoder, load_text_encoder
from m2kt.models.class_head import fine_tune_head
from m2kt.models.embedding_cache import timed_cached_encode
from m2kt.patch.config import PatchConfig
from m2kt.patch.few_shot import accuracy, tune_patch
from m2kt.patch.train import learn_patch
from m2kt.patch.transfer import TRANSFER_MAPS, TransferMap
from m2kt.patch.workflow import (
    BLEND_GRID,
    class_axes,
    predict,
    select_transfer,
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
    model_id: str, task: TextClassificationTask, cache: Path | None, max_length: int
) -> EncodedModel:
    encoder = load_text_encoder(model_id, max_length=max_length)
    embeddings, seconds = {}, {}
    for split in SPLITS:
        texts = getattr(task, split).texts
        embeddings[split], seconds[split] = timed_cached_encode(encoder, texts, cache)
    return EncodedModel(encoder, embeddings, seconds)


def run_seed(
    task: TextClassificationTask,
    weak: EncodedModel,
    strong: EncodedModel,
    config: PatchConfig,
    seed: int,
) -> dict[str, Any]:
    """All methods for one seed; returns {method: {accuracy, seconds, trained_params, ...}}."""
    c = len(task.class_names)
    y = {split: getattr(task, split).labels for split in SPLITS}
    n = {split: len(y[split]) for split in SPLITS}
    axes = class_axes(task.class_names, task.templates, config.logit_dim, seed=seed)
    rows: dict[str, dict[str, Any]] = {}

    # inputs_seen counts training-time model evaluations: the weak pre-trained and the weak
    # fine-tuned model each read the training inputs (2N), the strong model reads them and the
    # validation inputs (N + val). Test inputs are not counted: every method sees them once.
    def row(name: str, logits: torch.Tensor, seconds: float, params: int, **extra: Any) -> None:
        rows[name] = {
            "accuracy": accuracy(logits, y["test"]),
            "seconds": seconds,
            "trained_params": params,
        } | extra

    clock = time.perf_counter()
    head_weak = zero_shot_head(weak.encoder, axes)
    weak_head_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    head_strong = zero_shot_head(strong.encoder, axes)
    strong_head_seconds = time.perf_counter() - clock
    z_weak = {s: head_weak.logits(weak.embeddings[s]) for s in SPLITS}
    z_strong = {s: head_strong.logits(strong.embeddings[s]) for s in SPLITS}

    row("weak zero-shot", z_weak["test"][:, :c], 0.0, 0, labels=0, inputs_seen=0)
    row("strong zero-shot", z_strong["test"][:, :c], 0.0, 0, labels=0, inputs_seen=0)

    tuned = {}
    for name, model, head in (("weak", weak, head_weak), ("strong", strong, head_strong)):
        tuned[name], seconds = _fine_tune(head, model.embeddings["train"], y["train"], c, seed)
        row(
            f"{name} fine-tuned",
            tuned[name].logits(model.embeddings["test"]),
            model.seconds["train"] + seconds,
            tuned[name].weights.numel() + 1,
            labels=n["train"],
            inputs_seen=n["train"],
            step_seconds=seconds,
        )
    weak_ft = tuned["weak"]

    ls = lambda t: F.log_softmax(t, dim=-1)  # noqa: E731
    weak_ft_test = weak_ft.logits(weak.embeddings["test"])
    row(
        "logit arithmetic",
        ls(z_strong["test"][:, :c]) + ls(weak_ft_test) - ls(z_weak["test"][:, :c]),
        0.0,
        0,
        labels=0,
        inputs_seen=0,
        inference_models=3,
    )
    row(
        "ensemble",
        0.5 * ls(weak_ft_test) + 0.5 * ls(z_strong["test"][:, :c]),
        0.0,
        0,
        labels=0,
        inputs_seen=0,
        inference_models=2,
    )

    # The patch: learned on unlabelled training inputs, never their labels.
    clock = time.perf_counter()
    patch = learn_patch(
        z_weak["train"], weak_ft.logits(weak.embeddings["train"]), config, seed=seed
    )
    learn_seconds = time.perf_counter() - clock + weak_head_seconds
    row(
        "weak + patch",
        predict(patch, z_weak["test"], c),
        learn_seconds,
        patch.parameter_count(),
        labels=0,
        inputs_seen=2 * n["train"],
    )

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
            y["val"],
            c,
            maps=maps,
            blends=blends,
        )
        transfer_seconds = time.perf_counter() - clock + strong_head_seconds
        transferred[name] = moved
        row(
            name,
            predict(moved, z_strong["test"], c),
            strong.seconds["train"] + transfer_seconds,
            patch.parameter_count(),
            labels=n["val"],
            inputs_seen=3 * n["train"] + n["val"],
            transfer=choice.settings(),
            val_accuracy=choice.val_accuracy,
            step_seconds=transfer_seconds,
        )
    moved = transferred["strong + patch"]

    index = task.few_shot(FEW_SHOT, seed)
    clock = time.perf_counter()
    plus, epoch = tune_patch(
        moved, z_strong["train"][index], y["train"][index], z_strong["val"], y["val"], seed=seed
    )
    row(
        "strong + patch+",
        predict(plus, z_strong["test"], c),
        rows["strong + patch"]["seconds"] + time.perf_counter() - clock,
        plus.parameter_count(),
        labels=n["val"] + len(index),
        inputs_seen=3 * n["train"] + n["val"],
        best_epoch=epoch,
    )

    rows["strong + patch"]["inference_overhead"] = _overhead(moved, z_strong["test"], strong)
    return rows


def _fine_tune(
    head: ClassNameHead, embeddings: torch.Tensor, labels: torch.Tensor, classes: int, seed: int
) -> tuple[ClassNameHead, float]:
    """The adaptation a user pays for, here: tuning the task rows of the class-name head."""
    clock = time.perf_counter()
    tuned = fine_tune_head(head.first(classes), embeddings, labels, seed=seed)
    return tuned, time.perf_counter() - clock


def _overhead(patch: torch.nn.Module, logits: torch.Tensor, strong: EncodedModel) -> float:
    """Patch time over the strong model's own time, per input, on the test split."""
    clock = time.perf_counter()
    with torch.no_grad():
        patch(logits)
    return (time.perf_counter() - clock) / strong.seconds["test"]
