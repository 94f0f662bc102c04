"""The patch verbs as functions: train, transfer, apply. The CLI is a thin layer over these.

Each verb reads and writes packets, so a patch carries its class axes, settings, the models it
came from (with weight hashes) and the inputs every model processed to make it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from m2kt.concepts.geometry import accuracy
from m2kt.errors import UsageError
from m2kt.models import ClassNameHead, TextEncoder, load_model
from m2kt.models.class_head import fine_tune_head
from m2kt.models.embedding_cache import cached_encode
from m2kt.packet import ModelRef, Packet, make_provenance
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.config import PatchConfig
from m2kt.patch.few_shot import Tunes, select_tuned_patch
from m2kt.patch.packet_io import ClassAxes, patch_from_packet, patch_to_packet
from m2kt.patch.train import learn_patch
from m2kt.patch.transfer import TRANSFER_MAPS, TransferMap, transfer_patch
from m2kt.patch.unlabelled import UnlabelledTask
from m2kt.patch.workflow import (
    HELD_OUT_EVERY,
    class_axes,
    predict,
    refine_unlabelled,
    select_transfer,
    select_transfer_unlabelled,
    zero_shot_head,
)
from m2kt.progress import StageProgress, quiet
from m2kt.tasks import TextClassificationTask

MIN_FIT_LENGTH = 8  # tokens: [CLS], [SEP] and a few words


@dataclass(frozen=True)
class PatchedModel:
    """A patch ready to use on one model: its encoder, its zero-shot head and the adapter."""

    encoder: TextEncoder
    head: ClassNameHead
    patch: LogitPatch
    axes: ClassAxes

    def task_logits(self, texts: Sequence[str], cache: Path | None = None) -> torch.Tensor:
        logits = self.head.logits(cached_encode(self.encoder, texts, cache))
        return predict(self.patch, logits, len(self.axes.task_classes))


def train_patch(
    weak: str,
    task: TextClassificationTask | UnlabelledTask,
    *,
    weak_finetuned: str | None = None,
    config: PatchConfig | None = None,
    seed: int = 0,
    cache: Path | None = None,
    progress: StageProgress | None = None,
) -> Packet:
    """Learn a patch from the weak pre-trained model to its fine-tuned self on `task`'s inputs.

    `weak_finetuned` is the user's fine-tuned weak model (a directory); without one, the weak
    model's class-name head is tuned on the labelled training split as the adaptation to capture.
    The patch itself never sees a label; with an `UnlabelledTask` no label exists at all, and
    `weak_finetuned` is required.
    """
    config = config or PatchConfig()
    progress = progress or quiet
    if weak_finetuned is None and isinstance(task, UnlabelledTask):
        raise UsageError(
            "without labels, a patch needs the fine-tuned weak model to learn from",
            "pass --weak-finetuned DIR, or a labelled --task to tune the weak model's head on",
        )
    encoder = load_model(weak).encoder()
    axes = class_axes(task.class_names, task.templates, config.logit_dim, seed)
    inputs = _inputs(task)
    embeddings = cached_encode(encoder, inputs, cache, lambda d, t: progress("encode (weak)", d, t))
    head = zero_shot_head(encoder, axes)
    classes = len(axes.task_classes)
    labels_used = 0
    if weak_finetuned is not None:
        tuned_encoder = load_model(weak_finetuned).encoder()
        finetuned = ClassNameHead.from_names(tuned_encoder, axes.task_classes, axes.templates)
        tuned_inputs = cached_encode(tuned_encoder, inputs, cache)
        target = finetuned.logits(tuned_inputs)
        tuned_ref = _model_ref(tuned_encoder)
    else:
        assert isinstance(task, TextClassificationTask)
        tuned = fine_tune_head(head.first(classes), embeddings, task.train.labels, seed=seed)
        target, labels_used = tuned.logits(embeddings), len(inputs)
        tuned_ref = ModelRef(id=f"{encoder.name}+tuned-head", architecture="class-name head")
    patch = learn_patch(
        head.logits(embeddings),
        target,
        config,
        seed=seed,
        progress=lambda d, t: progress("learn patch", d, t),
    )
    provenance = make_provenance(
        method="transmiter-learn",
        models=[_model_ref(encoder), tuned_ref],
        settings={"task": task.name, "seed": seed, "stand_in_adaptation_labels": labels_used},
        inputs_seen={"weak_pretrained": len(inputs), "weak_finetuned": len(inputs)},
    )
    return patch_to_packet(patch, axes, provenance, _made_for(encoder))


def transfer_patch_packet(
    packet: Packet,
    target: str,
    task: TextClassificationTask | UnlabelledTask,
    *,
    source: str | None = None,
    identity_weight: float | None = None,
    transfer_map: TransferMap | None = None,
    few_shot: int = 0,
    few_shot_tunes: Tunes = "all",
    fit_length: int | None = None,
    refine: bool = True,
    seed: int = 0,
    cache: Path | None = None,
    progress: StageProgress | None = None,
) -> Packet:
    """Carry a weak model's patch to `target` using `task`'s unlabelled training inputs.

    Without `identity_weight`, the map (orthogonal or linear, unless `transfer_map` fixes it), λ
    and the blend α are chosen on the validation split. Only forward passes of
    both models run, and no gradient reaches either model. With `few_shot` > 0 (Patch+), the
    moved patch is then tuned on that many labelled training inputs per class (all its weights,
    or with `few_shot_tunes="bias"` its output bias only) together with agreement to the patch
    on its own model over the unlabelled training inputs, the mix and the epoch chosen on the
    validation split (`few_shot.select_tuned_patch`). With an `UnlabelledTask` there is no
    validation split: the settings are chosen on agreement with the patch on its own model, on
    held-out unlabelled inputs (`select_transfer_unlabelled`), Patch+ is refused, and, unless
    `refine` is off, the moved patch is refitted toward the patch on its own model by KL on the
    unlabelled inputs, the epoch chosen on the same held-out agreement (`refine_unlabelled`).

    `fit_length`: both models read every input of the transfer (and the validation inputs it
    selects on) truncated to this many tokens, not the models' full length. The map lives in
    logit space, where the two models' relation holds on short inputs much as on long ones, and
    a forward pass over 64 tokens costs a fraction of one over 256 (README, "Model patches").
    The moved patch then reads the target's logits of full-length inputs, as any patch does.
    """
    progress = progress or quiet
    if fit_length is not None and fit_length < MIN_FIT_LENGTH:
        raise UsageError(
            f"fit length {fit_length} is too short", f"pass at least {MIN_FIT_LENGTH} tokens"
        )
    if few_shot > 0 and isinstance(task, UnlabelledTask):
        raise UsageError("Patch+ (--few-shot) needs labels", "pass a labelled --task, or drop it")
    patch, axes = patch_from_packet(packet)
    axes.check_matches(task.class_names)
    recorded = packet.manifest.patch.config.get("model") if packet.manifest.patch else None
    source_id = source or (recorded if isinstance(recorded, str) else None)
    if source_id is None:
        raise UsageError("the patch does not name the model it was made for", "pass --from MODEL")
    views = load_model(source_id), load_model(target)
    longest = min(view.context for view in views)
    if fit_length is not None and fit_length > longest:
        raise UsageError(
            f"fit length {fit_length} is over the {longest}-token context of the models",
            f"pass at most {longest} tokens",
        )
    length = {} if fit_length is None else {"max_length": fit_length}
    weak, strong = (view.encoder(**length) for view in views)
    inputs = _inputs(task)
    z_weak = zero_shot_head(weak, axes).logits(
        cached_encode(weak, inputs, cache, lambda d, t: progress("encode (source)", d, t))
    )
    strong_head = zero_shot_head(strong, axes)
    z_strong = strong_head.logits(
        cached_encode(strong, inputs, cache, lambda d, t: progress("encode (target)", d, t))
    )
    classes = len(axes.task_classes)
    seen = {"source": len(inputs), "target": len(inputs)}
    maps = TRANSFER_MAPS if transfer_map is None else (transfer_map,)
    settings: dict[str, str | float | int] = {"fit_length": strong.max_length}
    if isinstance(task, UnlabelledTask):
        if identity_weight is None:
            moved, choice = select_transfer_unlabelled(patch, z_weak, z_strong, classes, maps)
            settings |= choice.settings() | {
                "selection": "unlabelled: agreement with the patch on its own model, "
                f"held-out 1 in {HELD_OUT_EVERY} inputs",
                "held_out_agreement": choice.val_accuracy,
            }
        else:
            moved = transfer_patch(patch, z_weak, z_strong, identity_weight, map=maps[0])
            settings |= {"map": maps[0], "identity_weight": identity_weight, "blend": 1.0}
        if refine:
            moved, refined = refine_unlabelled(moved, patch, z_weak, z_strong, classes, seed)
            settings |= {
                "refine": "KL to the patch on its own model (β = 1), epoch on held-out agreement",
                "refine_epoch": refined.epoch,
                "refine_held_out_agreement_before": refined.val_accuracy_before,
                "refine_held_out_agreement_after": refined.val_accuracy,
            }
        settings |= {"labels": 0}
        return _transferred(packet, moved, axes, weak, strong, task.name, settings, seen, 0)
    if identity_weight is None or few_shot > 0:  # both choose on the validation split
        z_val = strong_head.logits(cached_encode(strong, task.val.texts, cache))
        seen["target"] += len(task.val)
        seen["validation_labels"] = len(task.val)
    if identity_weight is None:
        moved, choice = select_transfer(
            patch, z_weak, z_strong, z_val, task.val.labels, classes, maps=maps
        )
        settings |= choice.settings() | {
            "selection": "validation labels",
            "val_accuracy_before": accuracy(z_val[:, :classes], task.val.labels),
            "val_accuracy_after": choice.val_accuracy,
        }
    else:
        kind = transfer_map or "orthogonal"
        moved = transfer_patch(patch, z_weak, z_strong, identity_weight, map=kind)
        settings |= {"map": kind, "identity_weight": identity_weight, "blend": 1.0}
    if few_shot > 0:
        index = task.few_shot(few_shot, seed)
        moved, tuned = select_tuned_patch(
            moved,
            z_strong[index],
            task.train.labels[index],
            z_val,
            task.val.labels,
            z_strong,
            predict(patch, z_weak, classes),  # the teacher as the patch imitates it
            seed=seed,
            tunes=few_shot_tunes,
        )
        seen["few_shot_labels"] = len(index)
        settings |= {
            "few_shot_tunes": few_shot_tunes,
            "few_shot_agreement": tuned.agreement,
            "few_shot_epoch": tuned.epoch,
            "val_accuracy_few_shot": tuned.val_accuracy,
        }
    return _transferred(packet, moved, axes, weak, strong, task.name, settings, seen, few_shot)


def _transferred(
    parent: Packet,
    moved: LogitPatch,
    axes: ClassAxes,
    weak: TextEncoder,
    strong: TextEncoder,
    task_name: str,
    settings: dict[str, str | float | int],
    seen: dict[str, int],
    few_shot: int,
) -> Packet:
    provenance = make_provenance(
        method="transmiter-transfer",
        models=[_model_ref(weak), _model_ref(strong)],
        settings={"task": task_name} | settings,
        parents=[parent.digest],
        inputs_seen=seen,
    )
    extra = _made_for(strong) | {"transfer": str(settings["map"]), "few_shot": few_shot}
    return patch_to_packet(moved, axes, provenance, extra)


def _inputs(task: TextClassificationTask | UnlabelledTask) -> list[str]:
    """The unlabelled training inputs: the only texts the patch and its transfer read."""
    return task.texts if isinstance(task, UnlabelledTask) else task.train.texts


def score_transfer(
    weak_packet: Packet,
    strong_packet: Packet,
    task: TextClassificationTask,
    splits: Sequence[str] = ("val", "test"),
    cache: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Accuracy of the strong model zero-shot, patched, and of the weak fine-tuned teacher
    (and the patch on its own model), per labelled split: {row: {split: accuracy}}.

    The teacher is rebuilt from the weak patch's record: its fine-tuned model directory, or
    for the stand-in, the weak model's class-name head tuned again on `task`'s training labels
    with the recorded seed. A teacher that cannot be rebuilt is left out.
    """
    weak_model = _recorded_model(weak_packet)
    weak = load_patched_model(weak_packet, weak_model)
    strong = load_patched_model(strong_packet, _recorded_model(strong_packet))
    c = len(strong.axes.task_classes)
    teacher = _teacher(weak_packet, weak, task, cache)
    rows: dict[str, dict[str, float]] = {
        "strong zero-shot": {},
        "strong + patch": {},
        "weak fine-tuned": {},
        "weak + patch": {},
    }
    with torch.no_grad():
        for split in splits:
            part, score = getattr(task, split), lambda z: accuracy(z, part.labels)  # noqa: B023
            zero_shot = strong.head.logits(cached_encode(strong.encoder, part.texts, cache))
            rows["strong zero-shot"][split] = score(zero_shot[:, :c])
            rows["strong + patch"][split] = score(predict(strong.patch, zero_shot, c))
            rows["weak + patch"][split] = score(weak.task_logits(part.texts, cache))
            if teacher is not None:
                rows["weak fine-tuned"][split] = score(teacher(part.texts))
    return {name: row for name, row in rows.items() if row}


def format_scores(scores: dict[str, dict[str, float]]) -> str:
    """`score_transfer`'s result as a small aligned text table, accuracy in %."""
    splits = list(next(iter(scores.values())))
    width = max(map(len, scores))
    lines = [f"{'':{width}}  " + "  ".join(f"{s:>6}" for s in splits)]
    for name, row in scores.items():
        lines.append(f"{name:{width}}  " + "  ".join(f"{100 * row[s]:5.1f}%" for s in splits))
    return "\n".join(lines)


def _recorded_model(packet: Packet) -> str:
    config = packet.manifest.patch.config if packet.manifest.patch else {}
    model = config.get("model")
    if not isinstance(model, str):
        raise UsageError("the patch does not name the model it was made for")
    return model


def _teacher(
    weak_packet: Packet, weak: PatchedModel, task: TextClassificationTask, cache: Path | None
) -> Callable[[Sequence[str]], torch.Tensor] | None:
    """The weak fine-tuned model's task logits as a function of texts, if it can be rebuilt."""
    provenance = weak_packet.manifest.provenance
    if len(provenance.models) < 2:
        return None
    tuned_ref = provenance.models[1]
    c = len(weak.axes.task_classes)
    if tuned_ref.architecture == "class-name head":
        seed = provenance.settings.get("seed", 0)
        embeddings = cached_encode(weak.encoder, task.train.texts, cache)
        head = fine_tune_head(
            weak.head.first(c),
            embeddings,
            task.train.labels,
            seed=seed if isinstance(seed, int) else 0,
        )
        return lambda texts: head.logits(cached_encode(weak.encoder, texts, cache))
    try:
        encoder = load_model(tuned_ref.id).encoder()
    except UsageError:
        return None
    tuned = ClassNameHead.from_names(encoder, weak.axes.task_classes, weak.axes.templates)
    return lambda texts: tuned.logits(cached_encode(encoder, texts, cache))


def load_patched_model(packet: Packet, model: str) -> PatchedModel:
    """The patch on `model`, refusing a model other than the one the patch was made for."""
    patch, axes = patch_from_packet(packet)
    encoder = load_model(model).encoder()
    config = packet.manifest.patch.config if packet.manifest.patch else {}
    expected = config.get("model_sha256")
    if isinstance(expected, str) and expected != encoder.weight_sha256:
        raise UsageError(
            f"this patch was made for {config.get('model')} (weights {expected[:12]}…), "
            f"not for {encoder.name} (weights {encoder.weight_sha256[:12]}…)",
            f"transfer it first: m2kt patch transfer PATCH --to {model} ...",
        )
    return PatchedModel(encoder, zero_shot_head(encoder, axes), patch, axes)


def _made_for(encoder: TextEncoder) -> dict[str, str]:
    """Patch settings naming the model whose logits the patch reads."""
    return {"model": encoder.name, "model_sha256": encoder.weight_sha256}


def _model_ref(encoder: TextEncoder) -> ModelRef:
    config = encoder.model.config
    return ModelRef(
        id=encoder.name,
        architecture=type(encoder.model).__name__,
        weight_sha256=encoder.weight_sha256,
        tokenizer=type(encoder.tokenizer).__name__,
        hidden_size=int(config.hidden_size),
        num_layers=int(config.num_hidden_layers),
    )
