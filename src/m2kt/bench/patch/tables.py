"""Aggregate benchmark records over seeds into a markdown table and a bar plot."""

from __future__ import annotations

import statistics
from typing import Any

from m2kt.bench.gap import gap_closed

METHOD_ORDER = (
    "weak zero-shot",
    "weak fine-tuned",
    "weak + patch",
    "strong zero-shot",
    "logit arithmetic",
    "ensemble",
    "strong + patch (orthogonal)",
    "strong + patch (label-free, no refine)",
    "strong + patch (label-free)",
    "strong + patch",
    "patch + weak ensemble",
    "ensemble (weights on validation)",
    "patch + weak ensemble (weights on validation)",
    "patch + weak + zero-shot (weights on validation)",
    "strong + patch+",
    "strong + patch+ (bias only)",
    "patch+ + weak + zero-shot (weights on validation)",
    "strong fine-tuned",
    "weak fine-tuned (full)",
    "strong + patch (full teacher)",
    "strong fine-tuned (full)",
)
# Rows named after a setting ("strong + patch, fit 64 tokens", "…, K=512") follow, as found.


def methods(seeds: list[dict[str, Any]]) -> list[str]:
    """The methods every seed has, in METHOD_ORDER, then any others (the K sweep) as found;
    results written before a method existed simply lack its row."""
    common = [m for m in seeds[0] if all(m in s for s in seeds)]
    return [m for m in METHOD_ORDER if m in common] + [m for m in common if m not in METHOD_ORDER]


def share_of_gain(rows: dict[str, Any], method: str) -> float:
    """Share of the strong model's own fine-tuning gain that `method` reaches."""
    zs, ft = rows["strong zero-shot"]["accuracy"], rows["strong fine-tuned"]["accuracy"]
    return gap_closed(rows[method]["accuracy"], zs, ft)


def summarise(seeds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of accuracy, gap closed, seconds and parameters per method."""
    out: dict[str, dict[str, Any]] = {}
    for method in methods(seeds):
        acc = [s[method]["accuracy"] for s in seeds]
        gap = [share_of_gain(s, method) for s in seeds]
        val = [s[method].get("val_accuracy", float("nan")) for s in seeds]
        out[method] = {
            "accuracy_mean": statistics.fmean(acc),
            "accuracy_std": statistics.pstdev(acc),
            "val_accuracy_mean": statistics.fmean(val),
            "gap_closed_mean": statistics.fmean(gap),
            "inference_cost": seeds[0][method].get("inference_cost", 1),
            "seconds_mean": statistics.fmean(s[method]["seconds"] for s in seeds),
            "trained_params": seeds[0][method]["trained_params"],
            "labels": seeds[0][method]["labels"],
            "inputs_seen": seeds[0][method]["inputs_seen"],
        }
        if "share_of_full_ft_gain" in seeds[0][method]:
            gains = [s[method]["share_of_full_ft_gain"] for s in seeds]
            out[method]["full_gap_closed_mean"] = statistics.fmean(gains)
        for key in (
            "flops",
            "strong_full_ft_estimate",
            "strong_full_ft_timed",
            "passes_seconds",
            "passes_seconds_again",
        ):
            if key in seeds[0][method]:
                out[method][key] = seeds[0][method][key]
    patched = [s["strong + patch"] for s in seeds]
    out["strong + patch"] |= {
        "step_seconds_mean": statistics.fmean(r["step_seconds"] for r in patched),
        "inference_overhead_mean": statistics.fmean(r["inference_overhead"] for r in patched),
        "transfers": [r["transfer"] for r in patched],
    }
    out["strong fine-tuned"]["step_seconds_mean"] = statistics.fmean(
        s["strong fine-tuned"]["step_seconds"] for s in seeds
    )
    return out


def markdown_table(title: str, summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| method | test accuracy % (mean ± std) | gap closed | validation % | inference cost "
        "| labels used | inputs seen | trained params | wall-clock s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f} | "
            f"{100 * s['gap_closed_mean']:.0f}% | {100 * s['val_accuracy_mean']:.1f} | "
            f"{s['inference_cost']} | {int(s['labels']):,} | "
            f"{int(s['inputs_seen']):,} | {int(s['trained_params']):,} | {s['seconds_mean']:.1f} |"
        )
    patch, tuned = summary["strong + patch"], summary["strong fine-tuned"]
    lines += [
        "",
        f"Transfer step {patch['step_seconds_mean']:.2f} s (the strong model's prompt head and one "
        f"SVD or solve per candidate; chosen per seed: {patch['transfers']}) vs strong fine-tuning "
        "step "
        f"{tuned['step_seconds_mean']:.2f} s, both after the same forward pass over the training "
        f"inputs; patch inference overhead {100 * patch['inference_overhead_mean']:.2f}% of the "
        "strong model's own time.",
    ]
    full = {m: s for m, s in summary.items() if "flops" in s}
    if full:
        lines += ["", _full_fine_tuning_line(summary, full)]
    return "\n".join(lines)


def _full_fine_tuning_line(
    summary: dict[str, dict[str, Any]], full: dict[str, dict[str, Any]]
) -> str:
    """Cost and gain of the rows with full fine-tuning, and each transfer's saving against fully
    fine-tuning the strong model (measured, or estimated where that run is missing)."""
    moved = summary["strong + patch (full teacher)"]
    if "strong fine-tuned (full)" in summary:
        reference = summary["strong fine-tuned (full)"]
        seconds, flops, how = reference["seconds_mean"], reference["flops"], "model"
    else:
        seconds, flops = moved["strong_full_ft_estimate"].values()
        how = "model would be (estimated: the weak model's run scaled by compute per token)"
    rows, savings = [], []
    for method, s in full.items():
        gain = s.get("full_gap_closed_mean")
        share = f", {100 * gain:.0f}% of its gain" if gain is not None else ""
        rows.append(f"{method} {s['seconds_mean']:.0f} s, {s['flops']:.2g} FLOPs{share}")
        if method.startswith("strong + patch (full teacher"):
            savings.append(
                f"{method}: {seconds / s['seconds_mean']:.1f}× in wall-clock and "
                f"{flops / s['flops']:.1f}× in FLOPs"
            )
    line = (
        f"Full fine-tuning (every weight): {'; '.join(rows)}. Cheaper than fully fine-tuning "
        f"the strong {how}, every forward pass a transfer needs included: {'; '.join(savings)}."
    )
    timed = {m: s for m, s in full.items() if "strong_full_ft_timed" in s}
    if timed:  # short passes and a slice of the strong model's fine-tuning, back to back
        t = next(iter(timed.values()))["strong_full_ft_timed"]
        ratios = "; ".join(
            f"{m}: {t['seconds'] / r['seconds_mean']:.1f}× (its forward passes "
            f"{r['passes_seconds']:.0f} s before, {r['passes_seconds_again']:.0f} s after)"
            for m, r in timed.items()
        )
        line += (
            f" Timed back to back in this run (the short passes, then {t['steps_timed']:.0f} "
            f"steps and a validation pass of the strong model's full fine-tuning, scaled to the "
            f"whole run: {t['seconds']:.0f} s, then the short passes again; a transfer's time is "
            f"the mean of both): {ratios}."
        )
    return line
