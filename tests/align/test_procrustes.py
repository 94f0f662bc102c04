import pytest
import torch

from m2kt.align import orthogonal_procrustes


def _rotation(k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(seed)))
    return q


def test_recovers_a_known_rotation() -> None:
    a = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    q = _rotation(16, 1)
    found = orthogonal_procrustes(a, a @ q)
    assert torch.allclose(found, q, atol=1e-4)
    assert torch.allclose(found @ found.T, torch.eye(16), atol=1e-5)


def test_identity_weight_pulls_toward_identity_whatever_n() -> None:
    q = _rotation(8, 2)
    small = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    large = small.repeat(20, 1)  # same statistics, 20× the rows
    for weight in (0.3, 3.0):
        assert torch.allclose(
            orthogonal_procrustes(small, small @ q, weight),
            orthogonal_procrustes(large, large @ q, weight),
            atol=1e-5,
        )
    near = orthogonal_procrustes(small, small @ q, 1e6)
    assert torch.allclose(near, torch.eye(8), atol=1e-3)


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError):
        orthogonal_procrustes(torch.zeros(3, 4), torch.zeros(3, 5))


def test_ridge_recovers_a_general_linear_map_and_shrinks_to_identity() -> None:
    from m2kt.align import ridge_to_identity

    g = torch.Generator().manual_seed(7)
    a = torch.randn(400, 12, generator=g)
    m = torch.randn(12, 12, generator=g)  # not orthogonal: scales and shears
    assert torch.allclose(ridge_to_identity(a, a @ m), m, atol=1e-3)
    assert torch.allclose(ridge_to_identity(a, a @ m, 1e6), torch.eye(12), atol=1e-3)


def test_a_direction_both_sides_leave_out_is_pinned_not_left_to_rounding() -> None:
    """Zero-mean rows leave aᵀb without the constant direction. Rounding noise along it (what
    another CPU or BLAS build produces) must not change Q, and Q must keep that direction."""
    k = 12
    g = torch.Generator().manual_seed(11)
    a = torch.randn(300, k, generator=g, dtype=torch.float64)
    a -= a.mean(1, keepdim=True)
    q = _rotation(k, 4).double()
    b = a @ q
    b -= b.mean(1, keepdim=True)
    constant = torch.ones(k, dtype=torch.float64) / k**0.5
    found = []
    for seed in range(8):
        noise = torch.randn(300, 1, generator=torch.Generator().manual_seed(seed)) * 1e-9
        found.append(orthogonal_procrustes(a + noise * constant, b, fixed=constant))
    for other in found[1:]:
        assert torch.allclose(other, found[0], atol=1e-6)
    assert torch.allclose(found[0] @ constant, constant, atol=1e-6)
