"""The tiny transformers of the symbolic tasks train to the same weights on 1 and 2 threads."""

from __future__ import annotations

import torch

from m2kt.models.fingerprint import weight_sha256
from m2kt.tasks.symbolic import symbolic_task
from m2kt.tasks.tiny_transformer import (
    TinyTransformer,
    TrainSettings,
    TransformerConfig,
    train_classifier,
)


def test_the_same_seed_trains_the_same_weights_whatever_the_callers_thread_count() -> None:
    task = symbolic_task("modsum", seed=0, train=60, val=5, test=5, p=5)
    config = TransformerConfig(len(task.vocabulary), task.sequence_length, 5, width=16, ff=32)
    hashes = []
    threads = torch.get_num_threads()
    try:
        for count in (2, 1):
            torch.set_num_threads(count)
            model = train_classifier(
                TinyTransformer(config, seed=0),
                task.train.tokens,
                task.train.labels,
                TrainSettings(epochs=3),
                seed=0,
            )
            hashes.append(weight_sha256(model))
            assert torch.get_num_threads() == count  # the caller's count, back after training
    finally:
        torch.set_num_threads(threads)
    assert hashes[0] == hashes[1]
