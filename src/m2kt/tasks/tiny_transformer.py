"""A small transformer over a symbolic task's tokens, trained from scratch on its labels.

The new-computation benchmark needs a teacher that computes a task and a student of another
shape that does not; both are these, trained in seconds on the CPU. They live with the tasks
because they are part of a task's setting, not of any method that moves knowledge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.reproducible import one_thread


@dataclass(frozen=True)
class TransformerConfig:
    """A small pre-LayerNorm encoder over a symbolic task's tokens with a cosine-classifier head:
    logits = `scale` · cos(final state of the last real token, class vector)."""

    vocab: int
    length: int
    classes: int
    width: int = 128
    layers: int = 2
    heads: int = 4
    ff: int = 512
    activation: Literal["relu", "gelu"] = "relu"
    scale: float = 16.0

    def __post_init__(self) -> None:
        if min(self.vocab, self.length, self.classes, self.width, self.layers, self.ff) < 1:
            raise UsageError(f"every size of a transformer must be ≥ 1: {self}")
        if self.width % self.heads:
            raise UsageError(f"width {self.width} is not a multiple of {self.heads} heads")

    def describe(self) -> str:
        return f"{self.layers}×{self.width} transformer ({self.heads} heads, {self.activation})"


class _Block(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(c.width)
        self.attn = nn.MultiheadAttention(c.width, c.heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(c.width)
        self.up = nn.Linear(c.width, c.ff)
        self.down = nn.Linear(c.ff, c.width)
        self.act: nn.Module = nn.GELU() if c.activation == "gelu" else nn.ReLU()

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output [N, T, d] and its MLP activations [N, T, ff]."""
        h = self.attn_norm(x)
        x = x + self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        hidden = self.act(self.up(self.mlp_norm(x)))
        return x + self.down(hidden), hidden


class TinyTransformer(nn.Module):
    """Token and position embeddings, `layers` blocks, a final LayerNorm read at the last real
    token (token 0 is padding, only ever at the end) and a cosine-classifier head."""

    def __init__(self, config: TransformerConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.embed = nn.Embedding(config.vocab, config.width)
            self.position = nn.Parameter(0.02 * torch.randn(config.length, config.width))
            self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
            self.norm = nn.LayerNorm(config.width)
            vectors = torch.randn(config.classes, config.width) / config.width**0.5
            self.class_vectors = nn.Parameter(vectors)

    def run(self, tokens: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Residual states after the embeddings and after each block ([N, T, d] each), and
        each block's MLP activations ([N, T, ff] each)."""
        pad = tokens == 0
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        states, hidden = [x], []
        for block in self.blocks:
            x, h = block(x, pad if bool(pad.any()) else None)
            states.append(x)
            hidden.append(h)
        return states, hidden

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The state the head reads [N, d]: the final LayerNorm at the last real token."""
        return self.norm(at_last(self.run(tokens)[0][-1], tokens))

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        cosines = F.normalize(pooled, dim=-1) @ F.normalize(self.class_vectors, dim=-1).T
        return self.config.scale * cosines

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits(self.pooled(tokens))


def at_last(states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    last = (tokens != 0).sum(1) - 1
    return states[torch.arange(len(tokens)), last]


@dataclass(frozen=True)
class TrainSettings:
    """Label training of a whole network: AdamW with a one-cycle schedule."""

    epochs: int
    lr: float = 3e-3
    weight_decay: float = 0.5
    batch: int = 256


def train_classifier(
    model: TinyTransformer,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    seed: int,
) -> TinyTransformer:
    """Cross-entropy on (tokens, labels) for `settings.epochs` epochs; returns the model in eval
    mode with its gradients switched off. Trains on one thread (`m2kt.reproducible`), so the
    same seed gives the same weights whatever thread count the caller runs with."""
    with one_thread():
        _train(model, tokens, labels, settings, seed)
    model.eval()
    model.requires_grad_(False)
    return model


def _train(
    model: TinyTransformer,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.98)
    )
    steps = settings.epochs * math.ceil(len(tokens) / settings.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.lr, total_steps=steps, pct_start=0.1
    )
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(tokens), generator=generator)
        for start in range(0, len(tokens), settings.batch):
            batch = order[start : start + settings.batch]
            loss = F.cross_entropy(model(tokens[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
