"""The one door to models: every embedded model saved as a Hugging Face directory reloads the
same, load after load, so adapters and packets bound to its weight hash keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2kt.errors import UsageError
from m2kt.models import EMBEDDED, load_model
from m2kt.models.embedded import e3_directory
from m2kt.models.fingerprint import weight_sha256


@pytest.mark.parametrize("model_id", ["e1", "e2", "e3"])
def test_a_saved_embedded_model_reloads_with_the_same_weights(tmp_path: Path, model_id) -> None:
    if model_id == "e3" and not e3_directory().is_dir():
        pytest.skip("e3 comes with the models-large extra")
    view = load_model(model_id)
    view.model.save_pretrained(tmp_path)
    view.tokenizer.save_pretrained(tmp_path)
    first, second = load_model(str(tmp_path)), load_model(str(tmp_path))
    assert weight_sha256(first.model) == weight_sha256(second.model)
    assert weight_sha256(first.model) == weight_sha256(view.model)  # nothing added, nothing lost
    texts = ["a cat sat on the mat", "interest rates rose again"]
    assert first.encode(texts).allclose(view.encode(texts), atol=1e-5)
    with first.reading("task"):
        first.encode(texts)
    assert first.reads == {"probe": 2, "task": 2}  # encode() counts what it reads, like run()


def test_a_directory_missing_real_weights_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    view = load_model("e2")
    view.model.save_pretrained(tmp_path)
    view.tokenizer.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = next(k for k in weights if "encoder.layer.0.output.dense.weight" in k)
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UsageError, match="would be random on every load"):
        load_model(str(tmp_path))


def test_one_list_of_ids() -> None:
    assert set(EMBEDDED) == {"e1", "e2", "e3", "l1"}
    with pytest.raises(UsageError, match="unknown model"):
        load_model("e4")


def test_l1_loads_without_transformers_bars_and_offers_no_encoder(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The CLI draws one bar per stage on stderr; transformers' own bars (de-quantizing the GGUF
    file, loading weights) would interleave with it, so a load draws none of them and leaves
    their switches as it found them. (One l1 load for both checks: it takes seconds.)"""
    import huggingface_hub.utils as hub
    import transformers.modeling_gguf_pytorch_utils as gguf_reader
    from transformers.utils import logging as hf_logging

    before = (hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled())
    gguf_bar = gguf_reader.tqdm
    view = load_model("l1")
    drawn = capfd.readouterr().err
    assert "GGUF tensors" not in drawn and "Loading weights" not in drawn and "it/s" not in drawn
    assert (hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()) == before
    assert gguf_reader.tqdm is gguf_bar
    with pytest.raises(UsageError, match="causal language model"):
        view.encoder()
