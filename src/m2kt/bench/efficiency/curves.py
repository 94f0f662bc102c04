"""Derived figures of a data-efficiency curve: gap closed, inputs to a level, saving factor.

A curve is, per method, the mean accuracy and mean inputs consumed at each budget. "Inputs to
reach a level" interpolates linearly in inputs between the first budget at or above the level
and the one before it; a method that never gets there has no figure (None), never a guess.
"""

from __future__ import annotations

import statistics
from typing import Any

LEVELS = {"gap 50%": ("gap", 0.5), "gap 80%": ("gap", 0.8), "85% of teacher": ("teacher", 0.85)}


def curve(budget_rows: list[dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, per budget: mean and spread of accuracy over seeds, mean inputs consumed.

    `budget_rows[i][method]` holds one row per seed at budget i.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for per_budget in budget_rows:
        for method, rows in per_budget.items():
            accuracy = [r["accuracy"] for r in rows]
            out.setdefault(method, []).append(
                {
                    "accuracy_mean": statistics.fmean(accuracy),
                    "accuracy_std": statistics.pstdev(accuracy),
                    "inputs_total": statistics.fmean(r["inputs_total"] for r in rows),
                    "inputs": rows[0]["inputs"],
                    "labels": rows[0]["labels"],
                    "trained_params": rows[0]["trained_params"],
                    "adapter": rows[0].get("adapter", "memory"),
                    "seconds_mean": statistics.fmean(r["seconds"] for r in rows),
                    "seeds": len(rows),
                }
            )
    return out


def inputs_to_reach(points: list[dict[str, Any]], target: float) -> float | None:
    previous = None
    for point in points:
        if point["accuracy_mean"] >= target:
            if previous is None or previous["accuracy_mean"] >= target:
                return float(point["inputs_total"])
            a0, a1 = previous["accuracy_mean"], point["accuracy_mean"]
            x0, x1 = previous["inputs_total"], point["inputs_total"]
            return float(x0 + (target - a0) / (a1 - a0) * (x1 - x0))
        previous = point
    return None


def derived(
    curves: dict[str, list[dict[str, Any]]], before: float, teacher: float
) -> dict[str, dict[str, Any]]:
    """Inputs each method needs for each level, and the packet's saving over logit KD."""
    out: dict[str, dict[str, Any]] = {}
    for method, points in curves.items():
        row: dict[str, Any] = {}
        for name, (kind, share) in LEVELS.items():
            target = before + share * (teacher - before) if kind == "gap" else share * teacher
            row[name] = inputs_to_reach(points, target)
        out[method] = row
    for suffix in ("", ", blocks"):  # each adapter's packet against KD through the same one
        packet, kd = "packet" + suffix, "logit KD" + suffix
        if packet in out and kd in out:
            saving = {}
            for name in LEVELS:
                ours, theirs = out[packet][name], out[kd][name]
                saving[name] = theirs / ours if ours and theirs else None
            out[packet]["saving over logit KD"] = saving
    return out
