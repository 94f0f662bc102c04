"""Orthogonal Procrustes, optionally pulled toward the identity."""

from __future__ import annotations

import torch


def orthogonal_procrustes(
    a: torch.Tensor, b: torch.Tensor, identity_weight: float = 0.0
) -> torch.Tensor:
    """The orthogonal Q [k, k] minimising ‖a·Q − b‖² − identity_weight·N·tr(Q) for a, b [N, k].

    It is Q = U·Vᵀ from the SVD of aᵀb/N + identity_weight·I. Dividing by N makes the weight
    mean the same thing whatever the number of rows: in units of the per-row cross-covariance,
    so 0 is plain Procrustes and a large weight keeps Q near the identity.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"a and b must be [N, k] of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    cross = a.double().T @ b.double() / a.shape[0]
    cross += identity_weight * torch.eye(a.shape[1], dtype=torch.float64)
    u, _, vh = torch.linalg.svd(cross)
    return (u @ vh).to(a.dtype)
