"""Carry a patch to another model with one SVD: forward passes only, no gradient anywhere.

Both models' logits over the same unlabelled inputs, standardised and rotated by the source
patch's W, are aligned by an orthogonal Q (Procrustes, pulled toward the identity); the target's
rotation becomes Qᵀ·W and the MLP is kept as it is.
"""

from __future__ import annotations

import copy

import torch

from m2kt.align import orthogonal_procrustes
from m2kt.errors import UsageError
from m2kt.patch.adapter import LogitPatch


@torch.no_grad()
def transfer_patch(
    patch: LogitPatch,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    identity_weight: float | None = None,
) -> LogitPatch:
    """A copy of `patch` for the target model.

    source_logits: [N, K] the source (weak pre-trained) model's logits on N unlabelled inputs.
    target_logits: [N, K] the target model's logits on the same inputs, same class axes.
    identity_weight: λ per input; defaults to the patch config's.
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
    weight = patch.config.identity_weight if identity_weight is None else identity_weight
    q = orthogonal_procrustes(patch.latent(target_logits), patch.latent(source_logits), weight)
    moved = copy.deepcopy(patch)
    moved.set_rotation(q.T @ patch.weight)
    return moved.eval()
