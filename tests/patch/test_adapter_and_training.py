import pytest
import torch

from m2kt.errors import UsageError
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.config import PatchConfig
from m2kt.patch.train import distillation_loss, learn_patch

K, C = 32, 4


def _synthetic(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-trained logits and a 'fine-tuned' model that relies on other logit directions."""
    g = torch.Generator().manual_seed(seed)
    pretrained = torch.randn(n, K, generator=g) * 3
    mixing = torch.randn(K, C, generator=g)
    return pretrained, 2 * pretrained @ mixing / K**0.5


def test_a_fresh_patch_is_the_identity() -> None:
    z = torch.randn(10, K) * 4 + 1
    assert torch.allclose(LogitPatch(PatchConfig(logit_dim=K))(z), z, atol=1e-5)


def test_patch_ignores_each_models_logit_scale_and_offset() -> None:
    pretrained, finetuned = _synthetic()
    patch = learn_patch(pretrained, finetuned, PatchConfig(logit_dim=K, epochs=3))
    z = pretrained[:20]
    with torch.no_grad():
        assert torch.allclose(patch(3 * z + 5), 3 * patch(z) + 5, atol=1e-4)


def test_learning_reduces_the_gap_and_keeps_w_orthogonal() -> None:
    pretrained, finetuned = _synthetic()
    config = PatchConfig(logit_dim=K, epochs=40)
    patch = learn_patch(pretrained[:500], finetuned[:500], config)
    held_out, target = pretrained[500:], finetuned[500:]
    with torch.no_grad():
        before = distillation_loss(held_out[:, :C], target, config)
        after = distillation_loss(patch(held_out)[:, :C], target, config)
        agreement = (patch(held_out)[:, :C].argmax(1) == target.argmax(1)).float().mean()
    assert after < 0.5 * before
    assert agreement > 0.6  # chance is 0.25
    assert torch.allclose(patch.weight @ patch.weight.T, torch.eye(K), atol=1e-4)


def test_training_is_deterministic() -> None:
    pretrained, finetuned = _synthetic()
    config = PatchConfig(logit_dim=K, epochs=2)
    a = learn_patch(pretrained, finetuned, config, seed=3).state_dict()
    b = learn_patch(pretrained, finetuned, config, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_shapes_are_refused() -> None:
    pretrained, finetuned = _synthetic()
    with pytest.raises(UsageError, match="width"):
        learn_patch(pretrained, finetuned, PatchConfig(logit_dim=K + 1))
    with pytest.raises(UsageError, match="same N"):
        learn_patch(pretrained, finetuned[:10], PatchConfig(logit_dim=K))
