"""Concept Alignment Layers: trainable maps φ: R^{d_T} → R^{d_S} from a teacher's latent space
into a student's, started at a closed-form fit so that training only has to refine them.

For x [..., d_in] (teacher) and y [..., d_out] (student), with the tensor names used on disk:

    linear     y = x·W + b                          W [d_in, d_out], b [d_out]
    low_rank   y = (x·A)·B + b                      A [d_in, r], B [r, d_out], b [d_out]
    mlp        y = x·W + b + gelu(x·W1 + b1)·W2     W1 [d_in, h], b1 [h], W2 [h, d_out]

An mlp's W2 starts at zero, so every kind starts exactly at its closed-form linear fit.
`fit` solves in float64 and returns float32 parameters; it is built for the usual case of a few
dozen probe pairs in hundreds or thousands of dimensions (N < d_in), where only the ridge term
makes the least-squares problem well posed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from m2kt import __version__
from m2kt.adapter_files import CONFIG_FILE, load_adapter_dir, save_adapter_dir
from m2kt.errors import AdapterError, UsageError

CALKind = Literal["linear", "low_rank", "mlp"]
CALInit = Literal["least_squares", "procrustes"]
ADAPTER_TYPE = "concept_alignment_layer"
_METADATA_KEYS = ("adapter_type", "m2kt_version")
_DEAD = 1e-12  # singular values below this fraction of the largest one count as zero


@dataclass(frozen=True)
class CALConfig:
    """The shape of a Concept Alignment Layer; d_in is the teacher's width, d_out the student's.

    rank: low_rank only, required, 1 ≤ rank ≤ min(d_in, d_out).
    hidden: mlp only; defaults to min(d_in, d_out), so the nonlinear part adds at most twice the
    parameters of the linear map (h·(d_in + d_out) ≤ 2·d_in·d_out). The resolved width is stored,
    so a saved layer never depends on this default.
    """

    kind: CALKind
    d_in: int
    d_out: int
    rank: int | None = None
    hidden: int | None = None

    def __post_init__(self) -> None:
        kinds = get_args(CALKind)
        if self.kind not in kinds:
            raise UsageError(f"kind must be one of {', '.join(kinds)}; got {self.kind!r}")
        _check_positive_int("d_in", self.d_in)
        _check_positive_int("d_out", self.d_out)
        if self.kind == "low_rank":
            if self.rank is None:
                raise UsageError(
                    "rank is required for a low_rank CAL",
                    f"pass rank=r with 1 ≤ r ≤ {min(self.d_in, self.d_out)}",
                )
            _check_positive_int("rank", self.rank)
            narrow = min(self.d_in, self.d_out)
            if self.rank > narrow:
                side = "student" if self.d_out <= self.d_in else "teacher"
                raise UsageError(
                    f"rank {self.rank} is over min(d_in, d_out): a {side} of width {narrow} is "
                    f"too small for rank {self.rank}",
                    f"use rank ≤ {narrow}, or kind='linear'",
                )
        elif self.rank is not None:
            raise UsageError(
                f"rank is for low_rank CALs only; got rank={self.rank!r} for {self.kind}"
            )
        if self.kind == "mlp":
            if self.hidden is None:
                object.__setattr__(self, "hidden", min(self.d_in, self.d_out))
            _check_positive_int("hidden", self.hidden)
        elif self.hidden is not None:
            raise UsageError(
                f"hidden is for mlp CALs only; got hidden={self.hidden!r} for {self.kind}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields, plus the adapter type and the m2kt that wrote it."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"adapter_type": ADAPTER_TYPE, "m2kt_version": __version__, **values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CALConfig:
        """Rebuild a saved config. Keys this m2kt does not know are dropped with a warning, so
        files written by a newer m2kt still load; bad values raise UsageError naming the field."""
        if not isinstance(data, Mapping):
            raise UsageError(f"a CAL config must be a JSON object, got {type(data).__name__}")
        adapter_type = data.get("adapter_type", ADAPTER_TYPE)
        if adapter_type != ADAPTER_TYPE:
            raise UsageError(
                f"adapter_type is {adapter_type!r}: this is not a Concept Alignment Layer",
                "load it with the loader for that adapter type",
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - set(_METADATA_KEYS))
        if unknown:
            warnings.warn(f"ignoring CAL config keys unknown to m2kt: {unknown}", stacklevel=2)
        missing = [name for name in ("kind", "d_in", "d_out") if name not in data]
        if missing:
            raise UsageError(f"CAL config lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in known if name in data})


class ConceptAlignmentLayer(nn.Module):
    """φ: [..., d_in] → [..., d_out], one of the kinds in the module docstring.

    Built directly it starts at a seeded random map (LoRA-style for low_rank and mlp: B and W2
    zero); `fit` gives the closed-form start and `from_tensors` a saved one.
    """

    def __init__(self, config: CALConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        for name, shape in _tensor_shapes(config).items():
            if name in ("W", "A", "W1"):
                bound = 1.0 / math.sqrt(shape[0])
                value = (torch.rand(shape, generator=generator) * 2 - 1) * bound
            else:
                value = torch.zeros(shape)
            self.register_parameter(name, nn.Parameter(value))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.config.d_in:
            raise UsageError(
                f"input width {x.shape[-1]} does not match the layer, which expects "
                f"d_in={self.config.d_in}"
            )
        p = self.get_parameter
        x = x.to(p("b").dtype)
        low_rank = self.config.kind == "low_rank"
        y = (x @ p("A")) @ p("B") + p("b") if low_rank else x @ p("W") + p("b")
        if self.config.kind == "mlp":
            y = y + F.gelu(x @ p("W1") + p("b1")) @ p("W2")
        return y

    @classmethod
    def fit(
        cls,
        config: CALConfig,
        source: Tensor,
        target: Tensor,
        *,
        init: CALInit = "least_squares",
        ridge: float = 1e-2,
        seed: int = 0,
        weights: Tensor | None = None,
    ) -> ConceptAlignmentLayer:
        """The layer minimising ‖φ(source) − target‖², closed form; pairs [N, d_in], [N, d_out].

        least_squares: ridge regression on centred data with λ = ridge·tr(XᵀX)/d_in, i.e. ridge
        in units of the mean eigenvalue of XᵀX, so it means the same at every scale and N (0 is
        the minimum-norm least-squares map). For low_rank, reduced-rank regression: the ridge
        map projected onto the top-r principal directions of its fitted values, which gives the
        best rank-r approximation of those fitted values.
        procrustes: y ≈ s·x·Q + b with Q = U·Vᵀ from the SVD of XᵀY (centred) and the best
        global scale s; when d_in ≠ d_out, Q [d_in, d_out] is semi-orthogonal (orthonormal
        columns if d_in ≥ d_out, rows otherwise); for low_rank, the top-r singular pairs only.
        `ridge` is ignored here. In every case b makes the means match, and `seed` draws the
        mlp's W1 and any low_rank component the data leaves undetermined. `weights` [N] (> 0)
        weigh the pairs: weighted means, and each centred pair scaled by √weight.
        """
        if init not in get_args(CALInit):
            raise UsageError(f"init must be least_squares or procrustes; got {init!r}")
        if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge >= 0):
            raise UsageError(f"ridge must be a finite number ≥ 0; got {ridge!r}")
        x, y = _checked_pairs(config, source, target)
        w = torch.ones(len(x), dtype=x.dtype) if weights is None else weights.to(x.dtype)
        if w.shape != (len(x),) or not bool((w > 0).all()) or not torch.isfinite(w).all():
            raise UsageError(f"weights must be {len(x)} finite numbers > 0, one per pair")
        w = (w / w.mean()).unsqueeze(1).to(x.device)
        x_mean, y_mean = (w * x).mean(dim=0), (w * y).mean(dim=0)
        xc, yc = (x - x_mean) * w.sqrt(), (y - y_mean) * w.sqrt()
        generator = torch.Generator().manual_seed(seed)
        x_scale = float(xc.square().mean().sqrt())
        rank = config.rank if config.kind == "low_rank" else None
        if init == "procrustes":
            left, right = _scaled_procrustes(xc, yc, rank)
        else:
            weight = _ridge_map(xc, yc, ridge)
            left, right = _reduced_rank(xc, weight, rank) if rank else (weight, None)
        tensors: dict[str, Tensor] = {}
        if right is None:
            tensors["W"] = left
            linear = left
        else:
            a, b = _balanced_factors(left, right, x_scale, generator)
            tensors |= {"A": a, "B": b}
            linear = a @ b
        tensors["b"] = y_mean - x_mean @ linear
        if config.kind == "mlp":
            assert config.hidden is not None
            w1 = _random_projection(config.d_in, config.hidden, x_scale, generator).to(x)
            tensors |= {
                "W1": w1,
                "b1": -x_mean @ w1,
                "W2": x.new_zeros(config.hidden, config.d_out),
            }
        return cls.from_tensors(config, {k: v.to(torch.float32) for k, v in tensors.items()})

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def tensors(self) -> dict[str, Tensor]:
        """Every parameter by its plain name (W, b, ...; see the module docstring), detached."""
        return {name: value.detach().clone() for name, value in self.state_dict().items()}

    @classmethod
    def from_tensors(
        cls, config: CALConfig, tensors: Mapping[str, Tensor]
    ) -> ConceptAlignmentLayer:
        """Rebuild a layer from `tensors()`; names, shapes and values are checked against `config`.

        Raises AdapterError naming what the config expects and what was found.
        """
        expected = _tensor_shapes(config)
        described = _describe(config)
        if set(tensors) != set(expected):
            missing, extra = (
                sorted(set(expected) - set(tensors)),
                sorted(set(tensors) - set(expected)),
            )
            raise AdapterError(
                f"{described} has tensors {sorted(expected)}, found {sorted(tensors)} "
                f"(missing {missing}, unexpected {extra})",
                "the weights were saved for another layer; save them again with this config",
            )
        layer = cls(config)
        for name, shape in expected.items():
            value = tensors[name]
            if not isinstance(value, Tensor) or not value.is_floating_point():
                found = value.dtype if isinstance(value, Tensor) else type(value).__name__
                raise AdapterError(f"tensor {name} is {found}, a CAL holds floating-point tensors")
            if tuple(value.shape) != shape:
                raise AdapterError(
                    f"tensor {name} has shape {list(value.shape)}, {described} expects "
                    f"{list(shape)}",
                    "the weights were saved for another layer; check d_in, d_out, rank and hidden",
                )
            # contiguous: a closed form (torch.linalg.solve) returns column-major results, and a
            # saved copy is row-major; the same layout makes a reloaded layer compute bit for bit
            # what the fitted one did (another layout takes another matmul kernel)
            value = value.detach().to(torch.float32).clone(memory_format=torch.contiguous_format)
            if not torch.isfinite(value).all():
                raise AdapterError(f"tensor {name} holds NaN or infinite values", "fit it again")
            layer.register_parameter(name, nn.Parameter(value))
        return layer

    def save(self, directory: str | Path) -> None:
        """Save as an adapter directory (config JSON + safetensors), replacing it atomically."""
        save_adapter_dir(Path(directory), self.config.to_dict(), self.tensors())

    @classmethod
    def load(cls, directory: str | Path, *, max_bytes: int = 2**31) -> ConceptAlignmentLayer:
        """Load a layer written by `save`; every problem is an AdapterError saying what to do."""
        data, tensors = load_adapter_dir(Path(directory), max_bytes=max_bytes)
        try:
            config = CALConfig.from_dict(data)
        except UsageError as exc:
            raise AdapterError(
                f"{Path(directory) / CONFIG_FILE}: {exc.message}", exc.hint
            ) from None
        return cls.from_tensors(config, tensors)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer; got {value!r}")


def _tensor_shapes(config: CALConfig) -> dict[str, tuple[int, ...]]:
    d_in, d_out = config.d_in, config.d_out
    if config.kind == "low_rank":
        assert config.rank is not None
        return {"A": (d_in, config.rank), "B": (config.rank, d_out), "b": (d_out,)}
    shapes: dict[str, tuple[int, ...]] = {"W": (d_in, d_out), "b": (d_out,)}
    if config.kind == "mlp":
        assert config.hidden is not None
        shapes |= {
            "W1": (d_in, config.hidden),
            "b1": (config.hidden,),
            "W2": (config.hidden, d_out),
        }
    return shapes


def _describe(config: CALConfig) -> str:
    extra = {"low_rank": f", rank={config.rank}", "mlp": f", hidden={config.hidden}"}
    sizes = f"d_in={config.d_in}, d_out={config.d_out}{extra.get(config.kind, '')}"
    return f"a {config.kind} CAL ({sizes})"


def _checked_pairs(config: CALConfig, source: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """source and target as float64 [N, d], after the checks that give users a useful message."""
    for name, value in (("source", source), ("target", target)):
        if not isinstance(value, Tensor) or value.ndim != 2 or not value.is_floating_point():
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise UsageError(f"{name} must be a floating-point [N, width] tensor; got {shape}")
    if source.shape[1] != config.d_in:
        raise UsageError(
            f"teacher (source) width {source.shape[1]}, but the layer expects d_in={config.d_in}",
            "build the CALConfig with d_in equal to the teacher's width",
        )
    if target.shape[1] != config.d_out:
        raise UsageError(
            f"student (target) width {target.shape[1]}, but the layer expects d_out={config.d_out}",
            "build the CALConfig with d_out equal to the student's width",
        )
    if source.shape[0] != target.shape[0]:
        raise UsageError(f"{source.shape[0]} source rows but {target.shape[0]} target rows")
    if source.shape[0] < 2:
        raise UsageError(
            f"fitting needs at least 2 source/target pairs; got {source.shape[0]}",
            "collect more probe pairs",
        )
    x, y = source.detach().to(torch.float64), target.detach().to(torch.float64)
    for name, value in (("source", x), ("target", y)):
        if not torch.isfinite(value).all():
            raise UsageError(f"{name} holds NaN or infinite values", "drop or fix those rows")
    return x, y.to(x.device)


def _ridge_map(xc: Tensor, yc: Tensor, ridge: float) -> Tensor:
    """argmin ‖xc·W − yc‖² + λ‖W‖² with λ = ridge·tr(xcᵀxc)/d_in; [N, d_in], [N, d_out] → W."""
    n, d = xc.shape
    lam = ridge * float(xc.square().sum()) / d
    if lam == 0:
        return torch.linalg.pinv(xc) @ yc  # the λ → 0 limit: the minimum-norm solution
    if n < d:  # the dual form solves an [N, N] system instead of a [d_in, d_in] one
        eye = torch.eye(n, dtype=xc.dtype, device=xc.device)
        return xc.T @ torch.linalg.solve(xc @ xc.T + lam * eye, yc)
    eye = torch.eye(d, dtype=xc.dtype, device=xc.device)
    return torch.linalg.solve(xc.T @ xc + lam * eye, xc.T @ yc)


def _reduced_rank(xc: Tensor, weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(W·V, V) with V [d_out, r] the top-r principal directions of the fitted values xc·W."""
    fitted = xc @ weight
    _, vectors = torch.linalg.eigh(fitted.T @ fitted)  # ascending eigenvalues
    directions = vectors[:, -rank:].flip(-1)
    return weight @ directions, directions


def _scaled_procrustes(xc: Tensor, yc: Tensor, rank: int | None) -> tuple[Tensor, Tensor | None]:
    """s·U·Vᵀ from the SVD of xcᵀyc (its top `rank` pairs when given), s the best global scale.

    Returns (W, None), or for a rank the factors (s·U_r, V_r) with W = s·U_r·V_rᵀ.
    """
    u, singular, vh = torch.linalg.svd(xc.T @ yc, full_matrices=False)
    k = rank or singular.numel()
    u, singular, v = u[:, :k], singular[:k], vh[:k].T
    # tr((x·Q)ᵀy) = ΣS and ‖x·Q‖ = ‖x·U‖ because V has orthonormal columns.
    projected = float((xc @ u).square().sum())
    scale = float(singular.sum()) / projected if projected > 0 else 0.0
    if rank is None:
        return scale * u @ v.T, None
    return scale * u, v


def _balanced_factors(
    left: Tensor, directions: Tensor, x_scale: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A [d_in, r], B [r, d_out] with A·B = left·directionsᵀ and A, B equally scaled.

    A component the data leaves at zero gets a random column in A and a zero row in B: the
    product is unchanged, but both stay trainable (all-zero A and B would get no gradient).
    """
    u, singular, qh = torch.linalg.svd(left, full_matrices=False)
    root = singular.sqrt()
    a = u * root
    b = (root[:, None] * qh) @ directions.T
    dead = singular <= _DEAD * float(singular.max())
    if dead.any():
        fresh = _random_projection(a.shape[0], int(dead.sum()), x_scale, generator)
        a[:, dead] = fresh.to(a)
        b[dead] = 0
    return a, b


def _random_projection(d_in: int, width: int, x_scale: float, generator: torch.Generator) -> Tensor:
    """[d_in, width] Gaussian scaled so that centred inputs of scale x_scale map to unit scale."""
    scale = 1.0 / (math.sqrt(d_in) * (x_scale if x_scale > 0 else 1.0))
    return torch.randn(d_in, width, generator=generator, dtype=torch.float64) * scale
