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


def test_one_list_of_ids_and_an_encoder_only_where_there_is_one() -> None:
    assert set(EMBEDDED) == {"e1", "e2", "e3", "l1"}
    with pytest.raises(UsageError, match="unknown model"):
        load_model("e4")
    with pytest.raises(UsageError, match="causal language model"):
        load_model("l1").encoder()
