"""How well does a closed-form map carry one model's space onto another's? Judged on anchors
held out of the fit: R² of the mapped vectors, and top-1 retrieval (does each mapped teacher
vector find its own text's student vector among all the held-out ones?)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from m2kt.align.cal import CALConfig, ConceptAlignmentLayer

RIDGES = (0.001, 0.01, 0.1, 1.0)  # in units of the mean eigenvalue of XᵀX (CAL's convention)
HOLDOUT = 0.2


@dataclass(frozen=True)
class AnchorAlignment:
    """The map fitted on the fit anchors with the ridge that held-out anchors preferred."""

    layer: ConceptAlignmentLayer
    ridge: float
    r2: float  # on the held-out anchors
    retrieval: float  # top-1, on the held-out anchors
    fitted: int
    heldout: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "ridge": self.ridge,
            "heldout_r2": round(self.r2, 4),
            "heldout_retrieval": round(self.retrieval, 4),
            "anchors_fitted": self.fitted,
            "anchors_heldout": self.heldout,
        }


def anchor_alignment(
    teacher: torch.Tensor,
    student: torch.Tensor,
    ridges: tuple[float, ...] = RIDGES,
    holdout: float = HOLDOUT,
    seed: int = 0,
) -> AnchorAlignment:
    """Fit teacher [A, d_T] → student [A, d_S] (unit vectors, linear CAL) on 1 − `holdout` of
    the pairs for each ridge; keep the ridge with the best held-out R²."""
    count = len(teacher)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    cut = max(2, round(holdout * count))
    held, kept = order[:cut], order[cut:]
    config = CALConfig(kind="linear", d_in=teacher.shape[1], d_out=student.shape[1])
    best: AnchorAlignment | None = None
    for ridge in ridges:
        layer = ConceptAlignmentLayer.fit(
            config,
            F.normalize(teacher[kept].float(), dim=-1),
            F.normalize(student[kept].float(), dim=-1),
            ridge=ridge,
        )
        r2, retrieval = score_alignment(layer, teacher[held], student[held])
        if best is None or r2 > best.r2:
            best = AnchorAlignment(layer, ridge, r2, retrieval, len(kept), len(held))
    assert best is not None
    return best


def score_alignment(
    layer: ConceptAlignmentLayer, teacher: torch.Tensor, student: torch.Tensor
) -> tuple[float, float]:
    """(R², top-1 retrieval) of `layer` on pairs it was not fitted on, unit vectors."""
    target = F.normalize(student.float(), dim=-1)
    with torch.no_grad():
        mapped = layer(F.normalize(teacher.float(), dim=-1))
    residual = (target - mapped).square().sum()
    total = (target - target.mean(0)).square().sum().clamp(min=1e-12)
    found = (F.normalize(mapped, dim=-1) @ target.T).argmax(-1)
    retrieval = (found == torch.arange(len(target))).float().mean()
    return float(1 - residual / total), float(retrieval)
