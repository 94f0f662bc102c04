"""Aggregate benchmark records over seeds into a markdown table and a bar plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

METHOD_ORDER = (
    "weak zero-shot",
    "weak fine-tuned",
    "weak + patch",
    "strong zero-shot",
    "logit arithmetic",
    "ensemble",
    "strong + patch (orthogonal)",
    "strong + patch",
    "strong + patch+",
    "strong fine-tuned",
)


def gap_closed(rows: dict[str, Any], method: str) -> float:
    """Share of the strong model's own fine-tuning gain that `method` reaches."""
    zs, ft = rows["strong zero-shot"]["accuracy"], rows["strong fine-tuned"]["accuracy"]
    return (rows[method]["accuracy"] - zs) / (ft - zs) if ft != zs else float("nan")


def summarise(seeds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of accuracy, gap closed, seconds and parameters per method."""
    out: dict[str, dict[str, Any]] = {}
    for method in METHOD_ORDER:
        acc = [s[method]["accuracy"] for s in seeds]
        gap = [gap_closed(s, method) for s in seeds]
        out[method] = {
            "accuracy_mean": statistics.fmean(acc),
            "accuracy_std": statistics.pstdev(acc),
            "gap_closed_mean": statistics.fmean(gap),
            "seconds_mean": statistics.fmean(s[method]["seconds"] for s in seeds),
            "trained_params": seeds[0][method]["trained_params"],
            "labels": seeds[0][method]["labels"],
            "inputs_seen": seeds[0][method]["inputs_seen"],
        }
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
        "| method | test accuracy % (mean ± std) | gap closed | labels used | inputs seen "
        "| trained params | wall-clock s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f} | "
            f"{100 * s['gap_closed_mean']:.0f}% | {int(s['labels']):,} | "
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
    return "\n".join(lines)


def bar_plot(summaries: dict[str, dict[str, dict[str, Any]]], path: Path) -> Path:
    """One group of bars per (task, pair), one bar per method, with std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(summaries)
    width = 0.8 / len(METHOD_ORDER)
    fig, ax = plt.subplots(figsize=(max(6, 3 * len(groups)), 4.5))
    for i, method in enumerate(METHOD_ORDER):
        xs = [g + (i - len(METHOD_ORDER) / 2) * width for g in range(len(groups))]
        means = [100 * summaries[g][method]["accuracy_mean"] for g in groups]
        stds = [100 * summaries[g][method]["accuracy_std"] for g in groups]
        ax.bar(xs, means, width, yerr=stds, label=method)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
