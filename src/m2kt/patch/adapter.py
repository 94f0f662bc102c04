"""The patch: a residual MLP in a rotated, per-sample standardised logit space.

    s  = (z − μ(z)) / σ(z)                       standardise each sample across its K logits
    x  = (s · M) · Wᵀ                            map (M = I until a linear transfer), rotate
    x ← x + MLP(x)                               LayerNorm → K·e → GELU → K, last layer zero
    y  = x · W                                   rotate back (W orthogonal)
    z' = (s + α·(y − s)) · σ(z) + μ(z)           blend (α = 1 until a transfer picks it), undo s

It starts as the identity (the MLP's last layer is zero) and is blind to each model's logit
scale and offset. A transfer to another model changes only W (orthogonal transfer, as in
TransMiter), or M (linear transfer), and α; the MLP is carried unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal

from m2kt.patch.config import PatchConfig

_EPS = 1e-6


def standardise(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample standardised logits and the mean and std to undo it."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True).clamp(min=_EPS)
    return (logits - mean) / std, mean, std


class LogitPatch(nn.Module):
    """Maps a model's K logits to adapted K logits; the first C are the task's."""

    input_map: torch.Tensor
    blend: torch.Tensor

    def __init__(self, config: PatchConfig, seed: int = 0) -> None:
        super().__init__()
        k = config.logit_dim
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        rotation, _ = torch.linalg.qr(torch.randn(k, k, generator=generator))
        self.rotation = nn.Linear(k, k, bias=False)
        with torch.no_grad():
            self.rotation.weight.copy_(rotation)
        expand, project = nn.Linear(k, k * config.expansion), nn.Linear(k * config.expansion, k)
        with torch.no_grad():
            expand.weight.copy_(_uniform_init(expand.weight.shape, generator))
            expand.bias.zero_()
            project.weight.zero_()  # the patch starts as the identity
            project.bias.zero_()
        self.mlp = nn.Sequential(nn.LayerNorm(k), expand, nn.GELU(), project)
        self.register_buffer("input_map", torch.eye(k))
        self.register_buffer("blend", torch.ones(1))

    @property
    def weight(self) -> torch.Tensor:
        """The current rotation W [K, K]."""
        return self.rotation.weight

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        s, mean, std = standardise(logits)
        with parametrize.cached():
            w = self.rotation.weight
            x = s @ self.input_map @ w.T
            x = x + self.mlp(x)
            y = x @ w
        return (s + self.blend * (y - s)) * std + mean

    def mapped(self, logits: torch.Tensor) -> torch.Tensor:
        """s · M: standardised logits as the patch's rotation and MLP receive them."""
        return standardise(logits)[0] @ self.input_map

    def keep_orthogonal(self) -> None:
        """Constrain W to stay orthogonal while training (Cayley map: fast at K = 1,024)."""
        if not parametrize.is_parametrized(self.rotation, "weight"):
            orthogonal(self.rotation, "weight", orthogonal_map="cayley")

    def freeze_rotation(self) -> None:
        """Drop the constraint, keeping the current W as a plain weight."""
        if parametrize.is_parametrized(self.rotation, "weight"):
            parametrize.remove_parametrizations(self.rotation, "weight", leave_parametrized=True)

    def set_rotation(self, weight: torch.Tensor) -> None:
        self.freeze_rotation()
        with torch.no_grad():
            self.rotation.weight.copy_(weight)

    def set_input_map(self, input_map: torch.Tensor) -> None:
        self.input_map.copy_(input_map)

    def set_blend(self, blend: float) -> None:
        self.blend.fill_(blend)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _uniform_init(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default Linear init, drawn from our own generator for determinism."""
    bound = 1.0 / shape[1] ** 0.5
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound
