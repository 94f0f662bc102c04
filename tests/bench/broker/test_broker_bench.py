"""`m2kt bench broker` on a small plan (two server processes, SQLite; the full plan adds one
process and PostgreSQL): it stops by itself, counts no wrong answers and no index/file
disagreements, and writes its table."""

from __future__ import annotations

import json
from pathlib import Path

from m2kt.bench.broker.run import OPERATIONS, BenchPlan, run_broker_bench


def test_broker_bench_small_plan(tmp_path: Path) -> None:
    plan = BenchPlan(clients=4, operations=40, digests=2, backends=("sqlite",), processes=(2,))
    result = run_broker_bench(plan, tmp_path)
    assert [(r["backend"], r["processes"]) for r in result["runs"]] == [("sqlite", 2)]
    for run in result["runs"]:
        assert run["operations"] == 40 and run["wrong_answers"] == 0
        assert run["index_file_disagreements"] == 0
        assert sum(run[op]["count"] for op in OPERATIONS) == 40
    assert result["pull_speedup_two_processes"] == {}  # no one-process run to compare with
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == result["runs"]
    assert "| sqlite | 2 |" in (tmp_path / "results.md").read_text()
