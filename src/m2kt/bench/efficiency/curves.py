"""Derived figures of a data-efficiency curve: gap closed, inputs to a level, saving factor.

A curve is, per method, the mean accuracy and mean inputs consumed at each budget. "Inputs to
reach a level" interpolates linearly in inputs between the first budget at or above the level
and the one before it; a method that never gets there has no figure (None), never a guess.
"""

from __future__ import annotations

import statistics
from typing import Any

from m2kt.bench.gap import gap_closed

# The latent rows' name for the packet screened with an auditor model (+ the model's name).
AUDITED = "packet, auditor "
LEVELS = {"gap 50%": ("gap", 0.5), "gap 80%": ("gap", 0.8), "85% of teacher": ("teacher", 0.85)}


def curve(
    budget_rows: list[dict[str, list[dict[str, Any]]]], before: float, teacher: float
) -> dict[str, list[dict[str, Any]]]:
    """Per method, per budget: mean and spread of accuracy over seeds, the gap closed, mean
    inputs read (all, task inputs, anchors; per model in `inputs`, from the first seed).

    `budget_rows[i][method]` holds one row per seed at budget i. Task and anchor inputs are
    means only where the rows count them (the latent-skill rows): `derived` measures by task
    inputs only then, and a zero written for rows that never counted them (new computation)
    would read as "reached with no inputs".
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for per_budget in budget_rows:
        for method, rows in per_budget.items():
            accuracy = [r["accuracy"] for r in rows]
            mean = statistics.fmean(accuracy)
            point = {
                "budget": rows[0].get("budget"),
                "accuracy_mean": mean,
                "accuracy_std": statistics.pstdev(accuracy),
                "gap_closed": gap_closed(mean, before, teacher),
                "inputs_total": statistics.fmean(r["inputs_total"] for r in rows),
                "inputs": rows[0]["inputs"],
                "labels": rows[0]["labels"],
                "trained_params": rows[0]["trained_params"],
                "adapter": rows[0].get("adapter", "memory"),
                "seconds_mean": statistics.fmean(r["seconds"] for r in rows),
                "seeds": len(rows),
            }
            for count in ("task_inputs", "anchor_inputs"):  # only where the rows counted them
                if all(count in r for r in rows):
                    point[count] = statistics.fmean(r[count] for r in rows)
            digests = [r["packet_digest"] for r in rows if "packet_digest" in r]
            if digests:
                point["packet_digest"] = digests
                point["accepted"] = sum(bool(r.get("accepted")) for r in rows)
            out.setdefault(method, []).append(point)
    return out


def inputs_to_reach(
    points: list[dict[str, Any]], target: float, count: str = "inputs_total"
) -> float | None:
    """Inputs (`count`: a point's key) where the curve first reaches `target`, interpolated."""
    previous = None
    for point in points:
        if point["accuracy_mean"] >= target:
            if previous is None or previous["accuracy_mean"] >= target:
                return float(point[count])
            a0, a1 = previous["accuracy_mean"], point["accuracy_mean"]
            x0, x1 = previous[count], point[count]
            return float(x0 + (target - a0) / (a1 - a0) * (x1 - x0))
        previous = point
    return None


def counted_by(curves: dict[str, list[dict[str, Any]]]) -> str:
    """The count the derived figures use: task inputs where every point has them, else all."""
    split = all("task_inputs" in p for points in curves.values() for p in points)
    return "task_inputs" if split else "inputs_total"


def derived(
    curves: dict[str, list[dict[str, Any]]], before: float, teacher: float
) -> dict[str, dict[str, Any]]:
    """Task inputs (`counted_by`) each method needs for each level, and the packet's saving
    over the better logit-KD row (the one that needs fewer task inputs for that level)."""
    out: dict[str, dict[str, Any]] = {}
    count = counted_by(curves)
    for method, points in curves.items():
        row: dict[str, Any] = {}
        for name, (kind, share) in LEVELS.items():
            target = before + share * (teacher - before) if kind == "gap" else share * teacher
            row[name] = inputs_to_reach(points, target, count)
        out[method] = row
    for suffix in ("", ", blocks"):  # each adapter's packet against KD through the same one
        # the packet, and (memory adapter) the packet screened with an auditor model
        packets = [
            m for m in out if m == "packet" + suffix or (not suffix and m.startswith(AUDITED))
        ]
        kd_rows = [
            m for m in out if m.startswith("logit KD") and m.endswith(", blocks") == bool(suffix)
        ]
        for packet in packets if kd_rows else []:
            saving = {}
            for name in LEVELS:
                ours = out[packet][name]
                found = [out[m][name] for m in kd_rows if out[m][name] is not None]
                theirs = min(found) if found else None
                saving[name] = theirs / ours if ours and theirs else None
            out[packet]["saving over logit KD"] = saving
    return out
