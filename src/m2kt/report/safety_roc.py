"""The safety benchmark's figure: ROC curves of the auditor on each side of a transfer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SIDE_TITLES = {"export": "export (teacher space)", "ingest": "ingestion (student space)"}


def roc_plot(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    """One panel per side: detection against false alarms, log false-alarm axis, with the 1%
    and 5% false-alarm lines the targets are read at. `curves` is results.json's `curves`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (side, block) in zip(axes[0], curves.items(), strict=True):
        points = [p for p in block["curve"] if p[0] > 0] or block["curve"]
        ax.plot([p[0] for p in points], [p[1] for p in points], drawstyle="steps-post")
        for rate in (0.01, 0.05):
            ax.axvline(rate, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false alarms (benign concepts flagged)")
        ax.set_ylabel("detection (injected concepts flagged)")
        ax.set_title(f"{SIDE_TITLES.get(side, side)}: AUROC {block['auroc']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
