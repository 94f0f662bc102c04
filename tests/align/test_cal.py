import pytest
import torch

from m2kt.align import CALConfig, ConceptAlignmentLayer
from m2kt.errors import AdapterError, UsageError


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_least_squares_recovers_a_known_linear_map() -> None:
    x = _randn(200, 24, seed=0) * 3 + 1  # off-centre and scaled: the bias and λ must cope
    w, b = _randn(24, 16, seed=1), _randn(16, seed=2)
    layer = ConceptAlignmentLayer.fit(CALConfig("linear", 24, 16), x, x @ w + b, ridge=0.0)
    found = layer.tensors()
    assert found["W"].dtype == torch.float32
    assert torch.allclose(found["W"], w, atol=1e-4)
    assert torch.allclose(found["b"], b, atol=1e-4)


def test_ridge_means_the_same_at_every_scale() -> None:
    x, y = _randn(30, 20, seed=3), _randn(30, 10, seed=4)
    config = CALConfig("linear", 20, 10)
    small = ConceptAlignmentLayer.fit(config, x, y, ridge=0.5).tensors()["W"]
    large = ConceptAlignmentLayer.fit(config, x * 100, y * 100, ridge=0.5).tensors()["W"]
    assert torch.allclose(small, large, atol=1e-5)
    unshrunk = ConceptAlignmentLayer.fit(config, x, y, ridge=0.0).tensors()["W"]
    assert small.norm() < 0.9 * unshrunk.norm()


def test_low_rank_recovers_a_planted_rank_r_map() -> None:
    x = _randn(300, 32, seed=5)
    w = _randn(32, 3, seed=6) @ _randn(3, 20, seed=7)
    layer = ConceptAlignmentLayer.fit(CALConfig("low_rank", 32, 20, rank=3), x, x @ w, ridge=0.0)
    t = layer.tensors()
    assert t["A"].shape == (32, 3) and t["B"].shape == (3, 20)
    assert torch.allclose(t["A"] @ t["B"], w, atol=1e-4)
    assert layer.num_parameters() == 32 * 3 + 3 * 20 + 20


def test_low_rank_is_the_best_rank_r_fit_of_the_full_fit() -> None:
    x = _randn(100, 32, seed=8) * torch.linspace(0.1, 3, 32)  # anisotropic, as real states are
    y = x @ _randn(32, 20, seed=9) + 0.5 * _randn(100, 20, seed=10)  # no rank-4 map fits
    full = ConceptAlignmentLayer.fit(CALConfig("linear", 32, 20), x, y)
    low = ConceptAlignmentLayer.fit(CALConfig("low_rank", 32, 20, rank=4), x, y)
    with torch.no_grad():
        predictions = (full(x) - y.mean(0)).double()
        u, s, vh = torch.linalg.svd(predictions, full_matrices=False)
        best = (u[:, :4] * s[:4]) @ vh[:4]
        found = (low(x) - y.mean(0)).double()
    assert s[4] > 0.5 * s[3]  # the full fit is far from rank 4: the test has teeth
    assert (found - best).abs().max() < 1e-5 * best.abs().max()
    assert (found - predictions).norm() > 0.5 * predictions.norm()
    factors = low.tensors()
    assert torch.allclose(factors["A"].norm(dim=0), factors["B"].norm(dim=1), rtol=1e-3)


def test_procrustes_recovers_a_planted_rotation_and_scale() -> None:
    q, _ = torch.linalg.qr(_randn(16, 16, seed=12))
    x = _randn(100, 16, seed=13)
    y = 2.5 * x @ q + 4.0
    layer = ConceptAlignmentLayer.fit(CALConfig("linear", 16, 16), x, y, init="procrustes")
    t = layer.tensors()
    assert torch.allclose(t["W"], 2.5 * q, atol=1e-4)
    assert torch.allclose(t["b"], torch.full((16,), 4.0), atol=1e-4)


def test_procrustes_between_widths_is_semi_orthogonal() -> None:
    x = _randn(60, 24, seed=14)
    y = x @ _randn(24, 8, seed=15)
    layer = ConceptAlignmentLayer.fit(CALConfig("linear", 24, 8), x, y, init="procrustes")
    w = layer.tensors()["W"]
    scale = w.norm(dim=0).mean()
    assert torch.allclose(w.T @ w / scale**2, torch.eye(8), atol=1e-4)


def test_mlp_starts_at_the_linear_fit_and_trains() -> None:
    x = _randn(128, 8, seed=16)
    y = torch.sin(2 * x[:, :4]) + x[:, 4:] ** 2  # nonlinear: a linear map cannot fit it
    linear = ConceptAlignmentLayer.fit(CALConfig("linear", 8, 4), x, y)
    mlp = ConceptAlignmentLayer.fit(CALConfig("mlp", 8, 4, hidden=32), x, y)
    assert torch.equal(mlp(x), linear(x))
    assert mlp.config.hidden == 32
    optimiser = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = (mlp(x) - y).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("kind", ["linear", "low_rank", "mlp"])
@pytest.mark.parametrize("init", ["least_squares", "procrustes"])
def test_few_probes_give_finite_outputs(kind: str, init: str) -> None:
    x, y = _randn(8, 64, seed=17), _randn(8, 48, seed=18)
    config = CALConfig.from_dict(
        {"kind": kind, "d_in": 64, "d_out": 48, "rank": 16 if kind == "low_rank" else None}
    )
    for ridge in (1e-2, 0.0):
        layer = ConceptAlignmentLayer.fit(config, x, y, init=init, ridge=ridge)  # type: ignore[arg-type]
        assert all(torch.isfinite(t).all() for t in layer.tensors().values())
        assert torch.isfinite(layer(_randn(5, 64, seed=19))).all()


def test_low_rank_components_the_data_leaves_open_stay_trainable() -> None:
    x, y = _randn(4, 32, seed=20), _randn(4, 16, seed=21)  # 3 centred directions, rank 8
    layer = ConceptAlignmentLayer.fit(CALConfig("low_rank", 32, 16, rank=8), x, y)
    a = layer.tensors()["A"]
    assert (a.norm(dim=0) > 0).all()
    layer(x).square().sum().backward()
    assert layer.get_parameter("B").grad is not None
    assert (layer.get_parameter("B").grad.norm(dim=1) > 0).all()


def test_config_round_trip() -> None:
    for config in (
        CALConfig("linear", 768, 384),
        CALConfig("low_rank", 768, 384, rank=64),
        CALConfig("mlp", 768, 384),
    ):
        data = config.to_dict()
        assert data["adapter_type"] == "concept_alignment_layer"
        assert CALConfig.from_dict(data) == config
    assert CALConfig("mlp", 768, 384).hidden == 384  # the default is resolved and stored


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "conv", "d_in": 4, "d_out": 4}, "kind"),
        ({"kind": "linear", "d_in": 0, "d_out": 4}, "d_in"),
        ({"kind": "linear", "d_in": 4, "d_out": "4"}, "d_out"),
        ({"kind": "linear", "d_in": 4, "d_out": True}, "d_out"),
        ({"kind": "low_rank", "d_in": 4, "d_out": 4}, "rank"),
        ({"kind": "low_rank", "d_in": 4, "d_out": 4, "rank": 2.0}, "rank"),
        ({"kind": "linear", "d_in": 4, "d_out": 4, "rank": 2}, "rank"),
        ({"kind": "mlp", "d_in": 4, "d_out": 4, "hidden": -1}, "hidden"),
        ({"kind": "linear", "d_in": 4, "d_out": 4, "hidden": 8}, "hidden"),
        ({"kind": "linear", "d_in": 4}, "d_out"),
        ({"adapter_type": "lora", "kind": "linear", "d_in": 4, "d_out": 4}, "adapter_type"),
    ],
)
def test_config_rejects_bad_fields(data: dict, field: str) -> None:
    with pytest.raises(UsageError, match=field):
        CALConfig.from_dict(data)


def test_config_warns_about_unknown_keys() -> None:
    with pytest.warns(UserWarning, match="future_option"):
        config = CALConfig.from_dict({"kind": "linear", "d_in": 4, "d_out": 2, "future_option": 1})
    assert config == CALConfig("linear", 4, 2)


def test_rank_too_big_names_the_narrow_side() -> None:
    with pytest.raises(UsageError, match="student of width 32 is too small for rank 64"):
        CALConfig("low_rank", 768, 32, rank=64)
    with pytest.raises(UsageError, match="teacher of width 16 is too small for rank 20"):
        CALConfig("low_rank", 16, 384, rank=20)


def test_fit_refuses_bad_inputs_with_both_sides_named() -> None:
    config = CALConfig("linear", 384, 256)
    with pytest.raises(UsageError, match=r"768.*d_in=384"):
        ConceptAlignmentLayer.fit(config, torch.zeros(10, 768), torch.zeros(10, 256))
    with pytest.raises(UsageError, match=r"128.*d_out=256"):
        ConceptAlignmentLayer.fit(config, torch.zeros(10, 384), torch.zeros(10, 128))
    with pytest.raises(UsageError, match="at least 2"):
        ConceptAlignmentLayer.fit(config, torch.ones(1, 384), torch.ones(1, 256))
    with pytest.raises(UsageError, match="10 source rows but 9"):
        ConceptAlignmentLayer.fit(config, torch.ones(10, 384), torch.ones(9, 256))
    bad = torch.ones(10, 384)
    bad[3, 7] = float("nan")
    with pytest.raises(UsageError, match="source holds NaN"):
        ConceptAlignmentLayer.fit(config, bad, torch.ones(10, 256))
    with pytest.raises(UsageError, match="ridge"):
        ConceptAlignmentLayer.fit(config, torch.ones(10, 384), torch.ones(10, 256), ridge=-1.0)
    with pytest.raises(UsageError, match="init"):
        ConceptAlignmentLayer.fit(config, torch.ones(10, 384), torch.ones(10, 256), init="svd")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"input width 10.*d_in=384"):
        ConceptAlignmentLayer(config)(torch.zeros(2, 10))


def test_tensors_round_trip_and_are_checked_against_the_config() -> None:
    config = CALConfig("low_rank", 12, 6, rank=2)
    layer = ConceptAlignmentLayer.fit(config, _randn(20, 12, seed=22), _randn(20, 6, seed=23))
    tensors = layer.tensors()
    again = ConceptAlignmentLayer.from_tensors(config, tensors)
    x = _randn(3, 12, seed=24)
    assert torch.equal(again(x), layer(x))
    with pytest.raises(AdapterError, match=r"missing \['B'\], unexpected \['W'\]"):
        ConceptAlignmentLayer.from_tensors(
            config, {"A": tensors["A"], "W": tensors["B"], "b": tensors["b"]}
        )
    with pytest.raises(AdapterError, match=r"shape \[12, 3\].*expects \[12, 2\]"):
        ConceptAlignmentLayer.from_tensors(config, tensors | {"A": torch.zeros(12, 3)})
    with pytest.raises(AdapterError, match="NaN"):
        ConceptAlignmentLayer.from_tensors(config, tensors | {"b": torch.full((6,), float("inf"))})
    with pytest.raises(AdapterError, match="floating-point"):
        ConceptAlignmentLayer.from_tensors(
            config, tensors | {"b": torch.zeros(6, dtype=torch.int64)}
        )


def test_save_and_load_a_layer(tmp_path) -> None:
    layer = ConceptAlignmentLayer.fit(
        CALConfig("mlp", 10, 5, hidden=7), _randn(9, 10, seed=25), _randn(9, 5, seed=26)
    )
    layer.save(tmp_path / "cal")
    loaded = ConceptAlignmentLayer.load(tmp_path / "cal")
    assert loaded.config == layer.config
    assert all(torch.equal(loaded.tensors()[k], v) for k, v in layer.tensors().items())
    (tmp_path / "cal" / "adapter_config.json").write_text(
        '{"kind": "low_rank", "d_in": 10, "d_out": 5}'
    )
    with pytest.raises(AdapterError, match="adapter_config.json: rank is required"):
        ConceptAlignmentLayer.load(tmp_path / "cal")


def test_a_reloaded_layer_computes_bit_for_bit_what_the_fitted_one_did(tmp_path) -> None:
    """The closed form returns a column-major map and a saved one is row-major: with the
    layouts left different, one thread took another matmul kernel and the outputs differed in
    the last bits (an ingested adapter, saved and reloaded, answered differently)."""
    x, y = _randn(1000, 384, seed=27), _randn(1000, 384, seed=28)  # N > d: the primal solve
    layer = ConceptAlignmentLayer.fit(CALConfig("linear", 384, 384), x, y)
    assert all(p.is_contiguous() for p in layer.parameters())
    layer.save(tmp_path / "cal")
    loaded = ConceptAlignmentLayer.load(tmp_path / "cal")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            assert torch.equal(loaded(x[:7]), layer(x[:7]))
    finally:
        torch.set_num_threads(threads)
