"""`m2kt bench extract` end to end on e2: a shipped spec and a frozen one, every figure present."""

from __future__ import annotations

import json
from pathlib import Path

from m2kt.bench.extract.run import ExtractPlan, run_extract_bench


def test_the_benchmark_reports_every_figure_per_teacher_spec_and_method(tmp_path: Path) -> None:
    plan = ExtractPlan(teachers=("e2",), specs=("topics", "cooking"), seeds=(0,))
    run_extract_bench(plan, tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["spec"]: r for r in result["runs"]}
    assert rows["topics"]["heldout"] == 20  # the packet's own verification probes
    assert rows["cooking"]["heldout"] == 24  # the sentences written apart from the spec
    for row in rows.values():
        for key in ("concept_accuracy", "linear_probe_accuracy", "chance", "layer", "best_layer"):
            assert row[key] is not None, key
        assert row["layers"][str(row["best_layer"])] == row["best_layer_accuracy"]
        assert row["best_layer_accuracy"] >= row["concept_accuracy"] - 1e-9 or (
            str(row["layer"]) not in row["layers"]
        )
    assert (tmp_path / "packets" / "e2-cooking-bottleneck-0.m2kt").is_file()
    assert "| e2 | cooking (frozen) | bottleneck |" in (tmp_path / "results.md").read_text()
