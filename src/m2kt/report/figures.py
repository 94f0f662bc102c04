"""The report's figures, each returned as PNG bytes (matplotlib, no display needed).

Benchmark figures are drawn here from a suite's results JSON, and each suite (`m2kt.bench`)
writes its results.png with the same function, so a report shows exactly what `m2kt bench` showed.
"""

from __future__ import annotations

import io
import math
from typing import Any

DPI = 100
# The efficiency curves drawn bold: each method, not its ablations.
MAIN_METHODS = ("packet", "logit KD", "logit KD + anchors", "supervised")


def efficiency_curves(results: dict[str, Any]) -> bytes:
    """Accuracy against task inputs read (all inputs where a run did not split them), one
    line per method, one panel per setting; budget 0 sits at the left of a symlog axis."""
    plt = _pyplot()
    settings = results["settings"]
    columns = min(3, len(settings))
    rows = math.ceil(len(settings) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    for ax, (title, r) in zip(axes.flat, settings.items(), strict=False):
        split = all("task_inputs" in p for ps in r["curves"].values() for p in ps)
        count = "task_inputs" if split else "inputs_total"
        for method, points in r["curves"].items():
            main = method.removesuffix(", blocks") in MAIN_METHODS  # not an ablation
            ax.errorbar(
                [p[count] for p in points],
                [100 * p["accuracy_mean"] for p in points],
                yerr=[100 * p["accuracy_std"] for p in points],
                label=method,
                marker="o" if main else None,
                linewidth=2 if main else 1,
                linestyle="-" if main else ":",
                capsize=2,
            )
        ax.axhline(100 * r["teacher_accuracy"], color="black", linestyle="--", label="teacher")
        ax.axhline(
            100 * r["student_accuracy"], color="grey", linestyle="--", label="student before"
        )
        if split:
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=-2)
        else:
            ax.set_xscale("log")
        ax.set_xlabel("task inputs read (all models)" if split else "inputs consumed (all models)")
        ax.set_ylabel("test accuracy %")
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return _png(fig)


def patch_bars(results: dict[str, Any]) -> bytes:
    """Test accuracy per method for each (task, pair) of a patch benchmark, mean ± std over seeds:
    one group of bars per run, one bar per method every run has, in the summaries' order."""
    plt = _pyplot()
    summaries = {name: run["summary"] for name, run in results["runs"].items()}
    groups = list(summaries)
    first = summaries[groups[0]]
    shown = [m for m in first if all(m in summaries[g] for g in groups)]
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(6, 3 * len(groups)), 4.5))
    for i, method in enumerate(shown):
        xs = [g + (i - len(shown) / 2) * width for g in range(len(groups))]
        means = [100 * summaries[g][method]["accuracy_mean"] for g in groups]
        stds = [100 * summaries[g][method]["accuracy_std"] for g in groups]
        ax.bar(xs, means, width, yerr=stds, label=method)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return _png(fig)


def safety_roc(results: dict[str, Any]) -> bytes:
    """The safety benchmark's ROC, one panel per side: detection against false alarms on a log
    axis, with the 1% and 5% false-alarm lines its targets are read at."""
    plt = _pyplot()
    curves = results["curves"]
    titles = {"export": "export (teacher space)", "ingest": "ingestion (student space)"}
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
        ax.set_title(f"{titles.get(side, side)}: AUROC {block['auroc']:.3f}", fontsize=9)
    return _png(fig)


def loss_curves(history: dict[str, list[float]]) -> bytes:
    """Each loss term (and the total) per training step, on a log scale when all positive."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for term, values in history.items():
        ax.plot(
            range(1, len(values) + 1), values, label=term, linewidth=2 if term == "total" else 1
        )
    if all(v > 0 for values in history.values() for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (unweighted term)")
    ax.legend(fontsize=8)
    return _png(fig)


ACCURACY_CHECKS = ("transfer", "held-in")  # the checks whose values are accuracies
CHECK_AXES = {
    "safety": "closeness to unsafe (lower is safer)",
    "screen": "screen score (lower is safer)",
}


def before_after(checks: list[dict[str, Any]]) -> bytes:
    """Each verification probe set before and after ingestion, with pass or fail.

    Accuracies are drawn in % on a fixed 0–100 axis; any other check (safety closeness, the
    safety screen, checks added later) on its own scale, which may be negative.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(checks), figsize=(2.6 * len(checks) + 0.6, 3.2), squeeze=False)
    for ax, check in zip(axes.flat, checks, strict=True):
        accuracy = check["name"] in ACCURACY_CHECKS
        scale = 100 if accuracy else 1
        values = [scale * check["before"], scale * check["after"]]
        colour = "tab:green" if check["passed"] else "tab:red"
        bars = ax.bar(["before", "after"], values, color=["tab:grey", colour])
        ax.bar_label(bars, fmt="%.1f" if accuracy else "%.3f", fontsize=8)
        ax.set_title(f"{check['name']} ({'ok' if check['passed'] else 'FAIL'})", fontsize=9)
        ax.set_ylabel("accuracy %" if accuracy else CHECK_AXES.get(check["name"], "value"))
        if accuracy:
            ax.set_ylim(0, 105)
        else:
            ax.axhline(0, color="black", linewidth=0.5)
    return _png(fig)


def abstraction_graph(graph: dict[str, Any]) -> bytes:
    """Concepts (blue, bottom row) under their abstract parents (orange, a row per level).

    is-a edges are solid, related (nearest-neighbour) edges dotted.
    """
    import networkx as nx

    plt = _pyplot()
    drawn = nx.DiGraph()
    for node in graph["nodes"]:
        drawn.add_node(node["id"], label=node["name"], kind=node["kind"])
    for edge in graph["edges"]:
        drawn.add_edge(edge["source"], edge["target"], type=edge["type"])
    layout = _layered(drawn)
    width = max(
        6.0, 0.9 * max(sum(1 for p in layout.values() if p[1] == y) for _, y in layout.values())
    )
    fig, ax = plt.subplots(figsize=(min(width, 16.0), 5.5))
    for kind, colour in (("concept", "tab:blue"), ("abstract", "tab:orange")):
        nodes = [n for n, d in drawn.nodes(data=True) if d["kind"] == kind]
        nx.draw_networkx_nodes(
            drawn, layout, nodelist=nodes, node_color=colour, node_size=200, ax=ax
        )
    for kind, style in (("is-a", "solid"), ("related", "dotted")):
        edges = [(u, v) for u, v, d in drawn.edges(data=True) if d["type"] == kind]
        connection = "arc3,rad=0.3" if kind == "related" else "arc3"
        nx.draw_networkx_edges(
            drawn, layout, edgelist=edges, style=style, alpha=0.5, connectionstyle=connection, ax=ax
        )
    labels = {n: d["label"][:28] for n, d in drawn.nodes(data=True)}
    nx.draw_networkx_labels(drawn, layout, labels, font_size=7, verticalalignment="bottom", ax=ax)
    ax.axis("off")
    return _png(fig)


def _layered(graph: Any) -> dict[str, tuple[float, float]]:
    """Concepts on row 0; a parent one row above its highest child, placed over its children."""
    import networkx as nx

    is_a = nx.DiGraph([(u, v) for u, v, d in graph.edges(data=True) if d["type"] == "is-a"])
    is_a.add_nodes_from(graph.nodes)
    level = {n: 0 for n in graph.nodes}
    order = list(nx.topological_sort(is_a)) if nx.is_directed_acyclic_graph(is_a) else []
    for node in order:
        for parent in is_a.successors(node):
            level[parent] = max(level[parent], level[node] + 1)
    x: dict[str, float] = {}
    for row in range(max(level.values(), default=0) + 1):
        members = [n for n in graph.nodes if level[n] == row]
        if row:

            def under(n: str) -> float:
                children = [x[c] for c in is_a.predecessors(n) if c in x]
                return sum(children) / len(children) if children else 0.0

            members.sort(key=under)
        for i, node in enumerate(members):
            x[node] = (i + 0.5) / len(members)
    return {n: (x[n], float(level[n])) for n in graph.nodes}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()
