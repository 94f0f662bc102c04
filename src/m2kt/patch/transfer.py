"""Carry a patch to another model in closed form: forward passes only, no gradient anywhere.

Both models' logits over the same unlabelled inputs are standardised. The target's are then
brought to where the patch expects its inputs, by one of two maps fitted in closed form and
pulled toward the identity by λ (per input, so it means the same for any number of inputs):

- `orthogonal` (TransMiter): in the patch's rotated basis, an orthogonal Q from the SVD of
  AᵀB/N + λI; the target's rotation becomes Qᵀ·W, so outputs come back in the target's axes.
  Standardised logits are zero-mean, so Q is pinned to keep the constant direction: without
  that, at λ = 0, its sign would be left to rounding and differ between CPUs.
- `linear`: a ridge map M from the target's standardised logits to the source's; the patch then
  runs as trained. M can also undo scaling and shearing between the two models' logit spaces.

The MLP is carried unchanged in both.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch

from m2kt.align import orthogonal_procrustes, ridge_to_identity
from m2kt.errors import UsageError
from m2kt.patch.adapter import LogitPatch, standardise

TransferMap = Literal["orthogonal", "linear"]
TRANSFER_MAPS: tuple[TransferMap, ...] = ("orthogonal", "linear")


@torch.no_grad()
def transfer_patch(
    patch: LogitPatch,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    identity_weight: float | None = None,
    map: TransferMap = "orthogonal",
) -> LogitPatch:
    """A copy of `patch` for the target model.

    source_logits: [N, K] the source (weak pre-trained) model's logits on N unlabelled inputs.
    target_logits: [N, K] the target model's logits on the same inputs, same class axes.
    identity_weight: λ; defaults to the patch config's.
    """
    if source_logits.shape != target_logits.shape:
        raise UsageError(
            f"source and target logits differ in shape: {tuple(source_logits.shape)} vs "
            f"{tuple(target_logits.shape)}; both models need the same class axes and inputs"
        )
    if source_logits.shape[1] != patch.config.logit_dim:
        raise UsageError(
            f"logits have width {source_logits.shape[1]}, the patch expects "
            f"{patch.config.logit_dim}"
        )
    flat = (target_logits.std(dim=-1) < 1e-6).nonzero().flatten()
    if len(flat) > 0:
        raise UsageError(
            f"the target's logits are constant on {len(flat)} inputs (first: row {int(flat[0])}); "
            "its class-name head is degenerate",
            "check that the target model loaded correctly and its prompts are not empty",
        )
    if map not in TRANSFER_MAPS:
        raise UsageError(f"unknown transfer map {map!r}", f"choose one of {TRANSFER_MAPS}")
    weight = patch.config.identity_weight if identity_weight is None else identity_weight
    expected = patch.mapped(source_logits)  # what the patch's rotation received on the source
    target = standardise(target_logits)[0]
    moved = copy.deepcopy(patch)
    if map == "orthogonal":
        # Standardised rows are zero-mean: both sides leave out the constant direction, which
        # the patch's rotation carries to W·1. The target's constant must stay the constant.
        constant = patch.weight @ torch.ones(patch.config.logit_dim)
        q = orthogonal_procrustes(
            target @ patch.weight.T,
            expected @ patch.weight.T,
            weight,
            fixed=constant / constant.norm(),
        )
        moved.set_rotation(q.T @ patch.weight)
        moved.set_input_map(torch.eye(patch.config.logit_dim))
    else:
        moved.set_input_map(ridge_to_identity(target, expected, weight))
    return moved.eval()
