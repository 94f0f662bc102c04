"""A linear map between latent spaces, fitted in closed form and pulled toward the identity."""

from __future__ import annotations

import torch


def ridge_to_identity(
    a: torch.Tensor, b: torch.Tensor, identity_weight: float = 0.0
) -> torch.Tensor:
    """The A [k, k] minimising ‖a·A − b‖²/N + identity_weight·‖A − I‖² for a, b [N, k].

    Unlike Procrustes, A may scale and shear, so it can undo differences between two models'
    logit geometry that no rotation can; the weight, per input as in `orthogonal_procrustes`,
    keeps it near the identity when the inputs are few.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"a and b must be [N, k] of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    n, k = a.shape
    eye = torch.eye(k, dtype=torch.float64)
    gram = a.double().T @ a.double() / n + identity_weight * eye
    cross = a.double().T @ b.double() / n + identity_weight * eye
    # A tiny jitter keeps the solve defined when λ = 0 and a has fewer rows than columns.
    gram += 1e-8 * torch.trace(gram) / k * eye
    return torch.linalg.solve(gram, cross).to(a.dtype)
