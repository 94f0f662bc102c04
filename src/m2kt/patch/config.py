"""Settings of a model patch, saved with it so that a patch can be rebuilt from its packet."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from m2kt import __version__
from m2kt.errors import UsageError


@dataclass(frozen=True)
class PatchConfig:
    """Shape and training settings; defaults follow TransMiter where measurement did not say
    otherwise (see README, "Model patches").

    logit_dim: K, task plus auxiliary classes. expansion: MLP width as a multiple of K.
    temperature / teacher_sharpening: KL temperature τ and the extra factor T_t < 1 that sharpens
    the fine-tuned teacher. noise_prob / noise_std: logit noise augmentation (std relative to each
    row's own std). identity_weight: λ of the Procrustes transfer, per input (see align).
    """

    logit_dim: int = 256
    expansion: int = 4
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.05
    temperature: float = 1.0
    teacher_sharpening: float = 0.25
    noise_prob: float = 0.5
    noise_std: float = 0.5
    identity_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.logit_dim < 3 or self.expansion < 1 or self.epochs < 1 or self.batch_size < 1:
            raise UsageError(
                "logit_dim ≥ 3, expansion ≥ 1, epochs ≥ 1 and batch_size ≥ 1 are needed"
            )
        if not (self.temperature > 0 and 0 < self.teacher_sharpening <= 1):
            raise UsageError("temperature must be > 0 and teacher_sharpening in (0, 1]")
        if not (0 <= self.noise_prob <= 1 and self.noise_std >= 0 and self.identity_weight >= 0):
            raise UsageError(
                "noise_prob in [0, 1], noise_std ≥ 0 and identity_weight ≥ 0 are needed"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"m2kt_version": __version__}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PatchConfig:
        """Rebuild from a saved config; keys this version does not know are dropped with a
        warning, so a config written by a newer m2kt still loads."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - {"m2kt_version"})
        if unknown:
            warnings.warn(f"ignoring patch config keys unknown to m2kt: {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in values.items() if k in known})
