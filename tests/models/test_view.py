"""The model view reads hidden states and attention through hooks, on any kind of model."""

from __future__ import annotations

import pytest
import torch

from m2kt.errors import UsageError
from m2kt.models.view import NoAttentionError, ProbeTooLongError, last_positions

TEXTS = ["the cat sat on the mat", "a short one", "numbers like 12 and 7 add to 19"]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_hidden_states_and_attention_match_the_model_own_outputs(fixture, request) -> None:
    view = request.getfixturevalue(fixture)
    capture = view.run(TEXTS, hidden_layers=[0, 1, 2], attention_layers=[1, 2])
    batch = view.tokenize(TEXTS)
    with torch.no_grad():
        own = view.model(**batch, output_hidden_states=True, output_attentions=True)
    final_norm = getattr(getattr(view.model, "model", None), "norm", torch.nn.Identity())
    for layer in (0, 1, 2):
        hidden = final_norm(capture.hidden[layer]) if layer == 2 else capture.hidden[layer]
        assert torch.allclose(hidden, own.hidden_states[layer], atol=1e-5)
    for layer in (1, 2):
        weights = capture.attention[layer]
        assert weights.shape == (3, 4, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
        assert torch.allclose(weights, own.attentions[layer - 1], atol=1e-6)
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)


def test_hooks_do_not_outlive_the_call(tiny_bert) -> None:
    def hooks() -> list[tuple[int, ...]]:  # transformers keeps hooks of its own; ours must go
        modules = tiny_bert.model.modules()
        return [(*m._forward_hooks, *m._forward_pre_hooks) for m in modules]

    tiny_bert.run(TEXTS[:1], hidden_layers=[1])
    before = hooks()
    tiny_bert.run(TEXTS, hidden_layers=[0, 2], attention_layers=[1], embedding_scale=torch.ones(3))
    assert hooks() == before


def test_pooling_mean_for_encoders_last_token_for_decoders(tiny_bert, tiny_llama) -> None:
    for view in (tiny_bert, tiny_llama):
        capture = view.run(TEXTS, hidden_layers=[2])
        hidden, mask = capture.hidden[2], capture.mask
        pooled = view.pool(hidden, mask)
        last = hidden[torch.arange(3), mask.sum(1) - 1]  # right padding
        mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert torch.allclose(pooled, mean if view.kind == "encoder" else last, atol=1e-6)
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_positions(left).tolist() == [3, 3]


def test_a_plain_torch_module_is_read_through_the_same_hooks(plain_view) -> None:
    assert len(plain_view.layers) == 2
    capture = plain_view.run(TEXTS, hidden_layers=[0, 1, 2])
    assert capture.hidden[2].shape[-1] == 16
    assert not torch.allclose(capture.hidden[1], capture.hidden[2])
    with pytest.raises(NoAttentionError, match="does not expose attention"):
        plain_view.run(TEXTS, attention_layers=[1])


def test_layers_out_of_range_name_the_valid_range(tiny_bert) -> None:
    assert tiny_bert.check_layers([-1, 2, 0]) == [2, 0]
    with pytest.raises(UsageError, match=r"valid: 0…2"):
        tiny_bert.check_layers([3])
    with pytest.raises(UsageError, match=r"valid: 1…2"):
        tiny_bert.check_layers([0], "attention")


def test_a_probe_over_the_context_is_refused_unless_truncated(tiny_bert) -> None:
    long = "word " * 200
    with pytest.raises(ProbeTooLongError, match="over the 64-token context"):
        tiny_bert.run([long], hidden_layers=[1])
    assert tiny_bert.run([long], hidden_layers=[1], truncate=True).hidden[1].shape[1] == 64


def test_weight_hash_names_the_weights(tiny_bert, tiny_llama) -> None:
    assert len(tiny_bert.weight_sha256) == 64
    assert tiny_bert.weight_sha256 != tiny_llama.weight_sha256
