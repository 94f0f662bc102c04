"""Smoke test of the benchmark's quick mode: real models, real data, tiny splits."""

from pathlib import Path

from m2kt.bench.report import METHOD_ORDER
from m2kt.bench.run_patch import PLANS, BenchPlan, run_benchmark


def test_quick_mode_writes_every_method_for_every_run(tmp_path: Path) -> None:
    quick = PLANS["quick"]
    plan = BenchPlan(quick.tasks, quick.pairs, quick.seeds, per_split_limit=60)
    result = run_benchmark(plan, tmp_path / "out", tmp_path / "cache", log=lambda _: None)
    assert set(result["runs"]) == {"bbc e2→e1", "tweets e2→e1"}
    for run in result["runs"].values():
        rows = run["seeds"][0]
        assert set(rows) == set(METHOD_ORDER)
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows.values())
        assert rows["strong + patch"]["transfer"]["map"] in ("orthogonal", "linear")
        assert rows["strong + patch (orthogonal)"]["transfer"]["map"] == "orthogonal"
        assert rows["strong + patch"]["labels"] == run["inputs"]["val"]
        assert rows["weak + patch"]["labels"] == 0  # the patch itself never sees a label
    table = (tmp_path / "out" / "results.md").read_text()
    assert "strong + patch" in table and "logit arithmetic" in table
    assert (tmp_path / "out" / "results.png").stat().st_size > 10_000
