"""L_reason inside the student: the teacher's hidden states as hints for the student's layers.

A packet's traces hold the teacher's state after every layer (and after each worked step) on
its probes. With an adapter inside the student's blocks those states can pull on the student's
own intermediate layers, as FitNets hints do, instead of on its output alone:

1. *Pairing.* Which student layer should look like which teacher layer is chosen on the
   packet's probes before training, by linear CKA between the frozen student's states and the
   teacher's (Kornblith et al., 2019): for each teacher layer in depth order, the most similar
   student layer at or after the previous pick (so the pairing keeps depth order). `last`
   pairs the last layers only (the ablation).
2. *Projector.* One small linear map per pair from the student's width to the teacher's,
   started at its ridge least-squares fit on the frozen pairs and then learned with the adapter.
3. *Loss.* The mean over pairs and positions of ‖unit(P·h_S) − unit(h_T)‖², on unit vectors
   like every other term, so its weight means the same for every pair of models.

States are [N, d] (one position per probe) or [N, P, d] (P positions, e.g. the state after the
worked step (a + b) and at the answer); teacher and student must share N and P.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from m2kt.align.cal import CALConfig, ConceptAlignmentLayer
from m2kt.errors import UsageError

PairingKind = Literal["cka", "last"]
Pairs = tuple[tuple[int, int], ...]  # (student layer, teacher layer)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two readings [N, a] and [N, b] of the same N inputs (1 = same geometry)."""
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    cross = (x.T @ y).pow(2).sum()
    norms = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(cross / norms) if norms > 0 else 0.0


def pair_layers(
    student: Mapping[int, torch.Tensor], teacher: Mapping[int, torch.Tensor], how: PairingKind
) -> Pairs:
    """The (student layer, teacher layer) pairs the hints compare; see the module docstring."""
    if not student or not teacher:
        raise UsageError("layer hints need states of at least one layer on each side")
    if how == "last":
        return ((max(student), max(teacher)),)
    if how != "cka":
        raise UsageError(f"unknown layer pairing {how!r}", "choose cka or last")
    pairs: list[tuple[int, int]] = []
    lowest = min(student)
    for t_layer in sorted(teacher):
        t = _flat(teacher[t_layer])
        candidates = [s for s in sorted(student) if s >= lowest]
        scores = {s: linear_cka(_flat(student[s]), t) for s in candidates}
        best = max(candidates, key=lambda s: (scores[s], -s))
        if (best, t_layer) not in pairs:
            pairs.append((best, t_layer))
        lowest = best
    return tuple(pairs)


class LayerHints(nn.Module):
    """One projector per layer pair, fitted in closed form on the frozen pairs, then learned."""

    def __init__(
        self,
        pairs: Pairs,
        student: Mapping[int, torch.Tensor],
        teacher: Mapping[int, torch.Tensor],
        *,
        rows: torch.Tensor | None = None,
        ridge: float = 0.1,
        seed: int = 0,
    ) -> None:
        """`student` (frozen) and `teacher` hold the states of the same probes, for the
        projectors' start. Those probes are, in order, the rows `rows` of the training probes
        (all of them when None): the training probes may include some without layer traces."""
        super().__init__()
        self.pairs = pairs
        count = len(next(iter(teacher.values())))
        rows = torch.arange(count) if rows is None else rows
        # slot[i]: which of the hints' probes training row i is (−1: none)
        self.slot = torch.full((int(rows.max()) + 1,), -1, dtype=torch.long)
        self.slot[rows] = torch.arange(len(rows))
        self.teacher = {t: teacher[t].float() for _, t in pairs}
        self.projectors = nn.ModuleDict()
        for s_layer, t_layer in pairs:
            source = _flat(student[s_layer]).float()
            target = _flat(self.teacher[t_layer])
            config = CALConfig(kind="linear", d_in=source.shape[1], d_out=target.shape[1])
            self.projectors[_key(s_layer, t_layer)] = ConceptAlignmentLayer.fit(
                config, source, target, init="least_squares", ridge=ridge, seed=seed
            )

    def loss(
        self, student: Mapping[int, torch.Tensor], at: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean over pairs of ‖unit(P·h_S) − unit(h_T)‖²; `student` holds the states of the
        training rows `at` (all rows, in order, when None); rows without traces are skipped."""
        first = student[self.pairs[0][0]]
        at = torch.arange(len(first)) if at is None else at
        inside = at < len(self.slot)
        slot = torch.full_like(at, -1)
        slot[inside] = self.slot[at[inside]]
        keep = torch.nonzero(slot >= 0).flatten()
        if len(keep) == 0:
            return first.sum() * 0.0
        total = torch.tensor(0.0)
        for s_layer, t_layer in self.pairs:
            target = _flat(self.teacher[t_layer][slot[keep]])
            mapped = self.projectors[_key(s_layer, t_layer)](_flat(student[s_layer][keep]))
            distance = (F.normalize(mapped, dim=-1) - F.normalize(target, dim=-1)).pow(2)
            total = total + distance.sum(-1).mean()
        return total / len(self.pairs)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def as_dict(self) -> dict[str, list[list[int]]]:
        return {"pairs": [list(p) for p in self.pairs]}


def _flat(states: torch.Tensor) -> torch.Tensor:
    """[N, d] or [N, P, d] → [N·P, d]."""
    return states.reshape(-1, states.shape[-1])


def _key(s_layer: int, t_layer: int) -> str:
    return f"s{s_layer}_t{t_layer}"
