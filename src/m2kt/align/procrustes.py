"""Orthogonal Procrustes, optionally pulled toward the identity."""

from __future__ import annotations

import torch


def orthogonal_procrustes(
    a: torch.Tensor,
    b: torch.Tensor,
    identity_weight: float = 0.0,
    fixed: torch.Tensor | None = None,
) -> torch.Tensor:
    """The orthogonal Q [k, k] minimising ‖a·Q − b‖² − identity_weight·N·tr(Q) for a, b [N, k].

    It is Q = U·Vᵀ from the SVD of aᵀb/N + identity_weight·I. Dividing by N makes the weight
    mean the same thing whatever the number of rows: in units of the per-row cross-covariance,
    so 0 is plain Procrustes and a large weight keeps Q near the identity.

    fixed: [m, k] orthonormal directions that a and b leave out by construction (their rows are
    orthogonal to them, up to rounding) and that Q must map to themselves. Without it such a
    direction is a zero singular value of aᵀb, and with no identity weight its image would be
    chosen by rounding noise, differently on each CPU and BLAS build. a and b are projected off
    these directions and each gets a unit singular value that pins it, so Q is unique.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"a and b must be [N, k] of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    dtype = a.dtype
    a, b = a.double(), b.double()
    eye = torch.eye(a.shape[1], dtype=torch.float64)
    pinned = torch.zeros_like(eye)
    if fixed is not None:
        basis = fixed.double().reshape(-1, a.shape[1])
        pinned = basis.T @ basis
        a, b = a @ (eye - pinned), b @ (eye - pinned)
    cross = a.T @ b / a.shape[0] + identity_weight * eye + pinned
    u, _, vh = torch.linalg.svd(cross)
    return (u @ vh).to(dtype)
