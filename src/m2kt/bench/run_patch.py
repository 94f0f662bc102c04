"""The model-patch benchmark: every task × pair × seed, then JSON, markdown and a plot."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from m2kt import __version__
from m2kt.atomic import atomic_write_bytes
from m2kt.bench.patch_benchmark import encode_task, run_seed
from m2kt.bench.report import bar_plot, markdown_table, summarise
from m2kt.patch.config import PatchConfig
from m2kt.tasks import load_task

MAX_LENGTH = {"bbc": 256, "tweets": 64}


@dataclass(frozen=True)
class BenchPlan:
    tasks: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    per_split_limit: int | None = None


PLANS = {
    "quick": BenchPlan(("bbc", "tweets"), (("e2", "e1"),), (0,), per_split_limit=200),
    "full": BenchPlan(("bbc", "tweets"), (("e2", "e1"), ("e1", "e3"), ("e2", "e3")), (0, 1, 2)),
}


def run_benchmark(
    plan: BenchPlan,
    out_dir: Path,
    cache: Path | None,
    config: PatchConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run `plan`; write results.json, results.md and results.png into `out_dir`."""
    config = config or PatchConfig()
    started = time.perf_counter()
    records: dict[str, Any] = {}
    summaries = {}
    for task_name in plan.tasks:
        task = load_task(task_name).limited(plan.per_split_limit)
        for weak_id, strong_id in plan.pairs:
            key = f"{task_name} {weak_id}→{strong_id}"
            log(f"{key}: encoding {len(task.train)}/{len(task.val)}/{len(task.test)} inputs")
            weak = encode_task(weak_id, task, cache, MAX_LENGTH[task_name])
            strong = encode_task(strong_id, task, cache, MAX_LENGTH[task_name])
            seeds = []
            for seed in plan.seeds:
                log(f"{key}: seed {seed}")
                seeds.append(run_seed(task, weak, strong, config, seed))
            summaries[key] = summarise(seeds)
            records[key] = {
                "task": task_name,
                "weak": weak.encoder.name,
                "strong": strong.encoder.name,
                "inputs": {"train": len(task.train), "val": len(task.val), "test": len(task.test)},
                "encode_seconds": {"weak": weak.seconds, "strong": strong.seconds},
                "seeds": seeds,
                "summary": summaries[key],
            }
    result = {
        "m2kt_version": __version__,
        "plan": plan.__dict__,
        "config": config.to_dict(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "wall_clock_seconds": time.perf_counter() - started,
        "runs": records,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "results.json", json.dumps(result, indent=1, default=str).encode())
    tables = "\n\n".join(markdown_table(k, s) for k, s in summaries.items())
    atomic_write_bytes(out_dir / "results.md", (tables + "\n").encode())
    bar_plot(summaries, out_dir / "results.png")
    return result
