"""The patch verbs on real models: labels never reach the patch, and mismatches are refused."""

from pathlib import Path

import pytest
import torch

from m2kt.errors import UsageError
from m2kt.models.embedded import e1_directory
from m2kt.patch.api import load_patched_model, train_patch, transfer_patch_packet
from m2kt.patch.config import PatchConfig
from m2kt.tasks import Split, load_task


@pytest.fixture(scope="module")
def small_task():
    return load_task("bbc").limited(40)


def test_shuffling_labels_changes_nothing(small_task, tmp_path: Path) -> None:
    """With a given fine-tuned weak model, the patch is a function of unlabelled inputs only."""
    shuffled = small_task.train.labels[torch.randperm(len(small_task.train))]
    other = type(small_task)(
        **{**small_task.__dict__, "train": Split(small_task.train.texts, shuffled)}
    )
    config = PatchConfig(logit_dim=32, epochs=2)
    kwargs = {"weak_finetuned": str(e1_directory()), "config": config, "cache": tmp_path}
    a = train_patch("e2", small_task, **kwargs)
    b = train_patch("e2", other, **kwargs)
    assert a.tensor_bytes == b.tensor_bytes


def test_train_transfer_apply(small_task, tmp_path: Path) -> None:
    weak = train_patch("e2", small_task, config=PatchConfig(logit_dim=32, epochs=2), cache=tmp_path)
    assert weak.manifest.provenance.inputs_seen == {"weak_pretrained": 40, "weak_finetuned": 40}
    strong = transfer_patch_packet(weak, "e1", small_task, cache=tmp_path)
    assert strong.manifest.provenance.parents == [weak.digest]
    assert strong.manifest.provenance.inputs_seen["validation_labels"] == len(small_task.val)
    assert strong.manifest.provenance.settings["fit_length"] == 256  # the models' full length
    plus = transfer_patch_packet(weak, "e1", small_task, few_shot=2, cache=tmp_path)
    assert plus.manifest.provenance.inputs_seen["few_shot_labels"] == 2 * 5
    settings = plus.manifest.provenance.settings  # Patch+ never below the plain patch on val
    assert settings["val_accuracy_few_shot"] >= settings["val_accuracy_after"]
    assert settings["few_shot_agreement"] in (0.0, 0.5, 0.9)
    model = load_patched_model(strong, "e1")
    logits = model.task_logits(small_task.test.texts[:8], tmp_path)
    assert logits.shape == (8, 5)
    with pytest.raises(UsageError, match="made for e1"):
        load_patched_model(strong, "e2")
    with pytest.raises(UsageError, match="classes"):
        transfer_patch_packet(weak, "e1", load_task("tweets").limited(10), cache=tmp_path)


def test_a_short_fit_reads_nothing_past_its_length(small_task, tmp_path: Path) -> None:
    """With `fit_length`, words after the first tokens of an input cannot change the transfer:
    the same inputs with every text's tail rewritten give byte-identical patches."""
    weak = train_patch("e2", small_task, config=PatchConfig(logit_dim=32, epochs=2), cache=tmp_path)
    retold = {
        name: Split([" ".join(t.split()[:30]) + " the end." for t in split.texts], split.labels)
        for name, split in (("train", small_task.train), ("val", small_task.val))
    }
    other = type(small_task)(**{**small_task.__dict__, **retold})
    a = transfer_patch_packet(weak, "e1", small_task, fit_length=16, cache=tmp_path)
    b = transfer_patch_packet(weak, "e1", other, fit_length=16, cache=tmp_path)
    assert a.tensor_bytes == b.tensor_bytes
    assert a.manifest.provenance.settings["fit_length"] == 16
    with pytest.raises(UsageError, match="too short"):
        transfer_patch_packet(weak, "e1", small_task, fit_length=2, cache=tmp_path)
    with pytest.raises(UsageError, match="over the 512-token context"):  # was a traceback
        transfer_patch_packet(weak, "e1", small_task, fit_length=100_000, cache=tmp_path)
