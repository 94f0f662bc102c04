import pytest
import torch
from torch.nn import functional as F

from m2kt.concepts.geometry import accuracy
from m2kt.errors import UsageError
from m2kt.patch.config import PatchConfig
from m2kt.patch.few_shot import select_tuned_patch
from m2kt.patch.train import learn_patch
from m2kt.patch.transfer import transfer_patch
from m2kt.patch.workflow import held_out_rows, refine_unlabelled

K, C = 32, 4


@pytest.fixture(scope="module")
def trained():
    g = torch.Generator().manual_seed(0)
    pretrained = torch.randn(400, K, generator=g) * 3
    finetuned = 2 * pretrained @ torch.randn(K, C, generator=g) / K**0.5
    return learn_patch(pretrained, finetuned, PatchConfig(logit_dim=K, epochs=20)), pretrained


def test_transfer_to_a_rescaled_copy_keeps_the_behaviour(trained) -> None:
    patch, source = trained
    target = 0.5 * source - 2  # another model whose logits differ only by scale and offset
    moved = transfer_patch(patch, source, target, identity_weight=0.0)
    with torch.no_grad():
        assert torch.allclose(moved(target), 0.5 * patch(source) - 2, atol=1e-3)


def test_transfer_finds_a_rotation_of_the_logit_space(trained) -> None:
    """A target whose standardised logits are the source's in a rotated basis: the moved patch
    must reproduce the source patch's output, expressed in the target's basis."""
    patch, source = trained
    mean, std = source.mean(1, keepdim=True), source.std(1, keepdim=True)
    s = (source - mean) / std
    basis, _ = torch.linalg.qr(torch.eye(K) - 1.0 / K)  # first K-1 columns span zero-mean rows
    basis = basis[:, : K - 1]
    q, _ = torch.linalg.qr(torch.randn(K - 1, K - 1, generator=torch.Generator().manual_seed(5)))
    rotation = basis @ q @ basis.T + torch.full((K, K), 1.0 / K)
    target = s @ rotation
    moved = transfer_patch(patch, source, target, identity_weight=0.0)
    with torch.no_grad():
        expected = ((patch(source) - mean) / std) @ rotation
        assert torch.allclose(moved(target), expected, atol=1e-3)
        assert not torch.allclose(patch(target), expected, atol=1e-1)


def test_no_gradient_reaches_the_target_model(trained) -> None:
    patch, source = trained
    target_model = torch.nn.Linear(K, K)  # stands for the strong model; trainable on purpose
    target_logits = target_model(source)
    moved = transfer_patch(patch, source, target_logits)
    assert target_model.weight.grad is None and target_model.bias.grad is None
    assert moved.weight.grad_fn is None


def test_constant_target_logits_are_refused(trained) -> None:
    patch, source = trained
    flat = torch.ones_like(source)
    with pytest.raises(UsageError, match="constant"):
        transfer_patch(patch, source, flat)


def test_width_and_row_mismatches_are_refused(trained) -> None:
    patch, source = trained
    with pytest.raises(UsageError, match="differ in shape"):
        transfer_patch(patch, source, source[:10])
    with pytest.raises(UsageError, match="width"):
        transfer_patch(patch, source[:, :10], source[:, :10])


@pytest.mark.parametrize("tunes", ["all", "bias"])
def test_patch_plus_never_scores_below_the_plain_patch_on_validation(trained, tunes) -> None:
    """Shots and a teacher that both contradict the validation labels: every tuned epoch is
    worse on validation, so Patch+ must hand back the untouched patch, byte for byte."""
    patch, source = trained
    with torch.no_grad():
        right = patch(source)[:, :C].argmax(1)  # the plain patch scores 100% on these
    wrong = (right + 1) % C
    teacher = F.one_hot(wrong, C).float() * 10
    tuned, choice = select_tuned_patch(
        patch, source[:64], wrong[:64], source[64:200], right[64:200], source[200:],
        teacher[200:], epochs=3, lr=0.05 if tunes == "all" else 1.0, tunes=tunes,
    )  # fmt: skip
    with torch.no_grad():
        after = accuracy(tuned(source[64:200])[:, :C], right[64:200])
    assert after == choice.val_accuracy == choice.val_accuracy_before == 1.0
    assert choice.epoch == 0 and choice.agreement == 0.0
    assert min(choice.scores.values()) < 1.0  # tuning did make it worse: the guard was needed
    assert all(torch.equal(v, tuned.state_dict()[k]) for k, v in patch.state_dict().items())


def test_patch_plus_agreement_pulls_toward_the_teacher_on_unlabelled_inputs(trained) -> None:
    """The KL half: with a teacher that the validation labels follow and two shots a class,
    Patch+ keeps an agreement weight > 0, beats the labels alone on validation by far, and
    agrees with the teacher on held-out inputs."""
    patch, source = trained
    with torch.no_grad():
        teacher = patch(source)[:, :C].roll(1, dims=1)  # another task the patch does not know
    want = teacher.argmax(1)
    shots = torch.cat([(want[:64] == k).nonzero()[:2, 0] for k in range(C)])
    tuned, choice = select_tuned_patch(
        patch, source[shots], want[shots], source[64:200], want[64:200], source[200:],
        teacher[200:], epochs=10, lr=1e-2,
    )  # fmt: skip
    with torch.no_grad():
        agree = (tuned(source[200:])[:, :C].argmax(1) == want[200:]).float().mean()
    assert choice.agreement > 0 and choice.epoch > 0
    labels_alone = max(v for k, v in choice.scores.items() if k.startswith("β=0.0 "))
    assert choice.val_accuracy > labels_alone + 0.1 and agree > 0.8


def test_bias_only_few_shot_tuning_changes_nothing_but_the_output_bias(trained) -> None:
    patch, source = trained
    labels = (torch.arange(len(source)) + 1) % C  # labels the patch gets wrong: tuning must move
    teacher = F.one_hot(labels, C).float() * 10
    tuned, choice = select_tuned_patch(
        patch, source[:64], labels[:64], source[:64], labels[:64], source[64:], teacher[64:],
        epochs=20, lr=0.5, tunes="bias",
    )  # fmt: skip
    before, after = patch.state_dict(), tuned.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert choice.epoch > 0 and changed == {"mlp.3.bias"}


def test_linear_transfer_undoes_a_shear_that_a_rotation_cannot(trained) -> None:
    patch, source = trained
    s = (source - source.mean(1, keepdim=True)) / source.std(1, keepdim=True)
    shear = torch.eye(K) + 0.5 * torch.randn(K, K, generator=torch.Generator().manual_seed(9))
    target = s @ shear
    linear = transfer_patch(patch, source, target, identity_weight=0.0, map="linear")
    rotated = transfer_patch(patch, source, target, identity_weight=0.0, map="orthogonal")
    with torch.no_grad():
        want = patch(source)[:, :C].argmax(1)
        agree_linear = (linear(target)[:, :C].argmax(1) == want).float().mean()
        agree_rotated = (rotated(target)[:, :C].argmax(1) == want).float().mean()
    assert agree_linear > 0.9 and agree_linear > agree_rotated


def test_blend_zero_leaves_the_target_untouched(trained) -> None:
    patch, source = trained
    moved = transfer_patch(patch, source, 2 * source, map="linear")
    moved.set_blend(0.0)
    with torch.no_grad():
        assert torch.allclose(moved(2 * source), 2 * source, atol=1e-4)


def test_label_free_refinement_never_agrees_less_on_held_out_inputs(trained) -> None:
    """The target's logits relate to the source's one way on the inputs the KL reads and another
    on the held-out ones, where the moved patch (the patch itself) already agrees fully: every
    refitted epoch agrees less there, so the untouched patch must come back, byte for byte."""
    patch, source = trained
    held = held_out_rows(len(source))
    target = torch.where(held[:, None], source, source.roll(3, dims=1))
    tuned, choice = refine_unlabelled(patch, patch, source, target, C, epochs=3, lr=0.05)
    with torch.no_grad():
        teacher = patch(source[held])[:, :C].argmax(1)
        after = (tuned(target[held])[:, :C].argmax(1) == teacher).float().mean()
    assert after == choice.val_accuracy == choice.val_accuracy_before == 1.0
    assert choice.epoch == 0
    assert min(choice.scores.values()) < 1.0  # refitting did agree less: the guard was needed
    assert all(torch.equal(v, tuned.state_dict()[k]) for k, v in patch.state_dict().items())


def test_label_free_refinement_pulls_a_moved_patch_toward_its_teacher(trained) -> None:
    """A target that is the source in another basis plus noise: the transfer leaves some
    disagreement, the KL refit (no label anywhere) closes part of it on held-out inputs."""
    patch, source = trained
    g = torch.Generator().manual_seed(1)
    rotation, _ = torch.linalg.qr(torch.randn(K, K, generator=g))
    target = source @ rotation + 2 * torch.randn(source.shape, generator=g)
    moved = transfer_patch(patch, source, target, identity_weight=0.0)
    tuned, choice = refine_unlabelled(moved, patch, source, target, C, epochs=5, lr=1e-2)
    assert choice.epoch > 0 and choice.val_accuracy > choice.val_accuracy_before
