"""The model-patch benchmark: every task × pair × seed, then JSON, markdown and a plot."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from m2kt import __version__
from m2kt.atomic import atomic_write_bytes
from m2kt.bench.patch.full_finetune import fine_tune_encoder, time_fine_tuning
from m2kt.bench.patch.seed import (
    SPLITS,
    EncodedModel,
    FullyFineTuned,
    ShortInputs,
    encode_task,
    run_seed,
)
from m2kt.bench.patch.tables import markdown_table, summarise
from m2kt.errors import UsageError
from m2kt.patch.api import MIN_FIT_LENGTH
from m2kt.patch.config import PatchConfig
from m2kt.report.figures import patch_bars
from m2kt.tasks import TextClassificationTask, load_task

MAX_LENGTH = {"bbc": 256, "tweets": 64}


@dataclass(frozen=True)
class BenchPlan:
    """Tasks (embedded names or CSV paths) × (weak, strong) pairs × seeds; `logit_dims` are
    widths K tried beside the config's, as extra rows (the K sweep). `full_finetune`: also
    fine-tune both encoders end to end (seed 0; kept under `finetuned/` and reused) and learn
    the patch from the fully fine-tuned weak one ("weak": that one only). `fit_lengths`: also
    transfer with both models reading the transfer's inputs truncated to each length (tasks
    whose own length is not longer skip it); with `full_finetune`, `ft_timing_steps` of the
    strong model's full fine-tuning are timed back to back with them (of BBC's 160 steps, 10
    time a step at 6% of the cost)."""

    tasks: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    per_split_limit: int | None = None
    logit_dims: tuple[int, ...] = ()
    full_finetune: Literal["", "weak", "both"] = ""
    fit_lengths: tuple[int, ...] = ()
    ft_timing_steps: int = 10

    def __post_init__(self) -> None:
        short = [n for n in self.fit_lengths if n < MIN_FIT_LENGTH]
        if short:  # a negative length was a traceback once the models had loaded
            raise UsageError(
                f"fit length {short[0]} is too short", f"pass at least {MIN_FIT_LENGTH} tokens"
            )


PLANS = {
    "quick": BenchPlan(("bbc", "tweets"), (("e2", "e1"),), (0,), per_split_limit=200),
    "full": BenchPlan(
        ("bbc", "tweets"),
        (("e2", "e1"), ("e1", "e3"), ("e2", "e3")),
        (0, 1, 2),
        logit_dims=(128, 512),
    ),
}


def _fully_fine_tuned(
    model_id: str,
    task: TextClassificationTask,
    where: Path,
    cache: Path | None,
    max_length: int,
    log: Callable[[str], None],
    splits: tuple[str, ...],
) -> tuple[EncodedModel, dict[str, Any]]:
    """`model_id` fine-tuned end to end on `task` (reused if `where` has it), `splits` encoded."""
    directory = where / f"{task.name}-{Path(model_id).name}"
    if not (directory / "cost.json").is_file():
        log(f"{task.name}: fully fine-tuning {model_id} (every weight)")
        fine_tune_encoder(model_id, task, directory, max_length=max_length)
    cost = json.loads((directory / "cost.json").read_text())
    return encode_task(str(directory), task, cache, max_length, splits), cost


def _both_fully_fine_tuned(
    plan: BenchPlan,
    task: TextClassificationTask,
    pair: tuple[str, str],
    max_length: int,
    where: Path,
    cache: Path | None,
    log: Callable[[str], None],
) -> FullyFineTuned:
    """The weak encoder (and with `full_finetune="both"` the strong one) fully fine-tuned: the
    weak one teaches on the training split; the strong one is scored."""
    weak_id, strong_id = pair
    sides = (weak_id,) if plan.full_finetune == "weak" else pair
    tuned = {
        m: _fully_fine_tuned(m, task, where, cache, max_length, log, splits)
        for m, splits in zip(sides, (SPLITS, ("val", "test")), strict=False)
    }
    weak_full, weak_cost = tuned[weak_id]
    strong_full, strong_cost = tuned.get(strong_id, (None, None))
    return FullyFineTuned(weak_full, weak_cost, strong_full, strong_cost)


def _short_inputs(
    plan: BenchPlan,
    task: TextClassificationTask,
    pair: tuple[str, str],
    max_length: int,
    cache: Path | None,
    full: FullyFineTuned | None,
    log: Callable[[str], None],
) -> tuple[ShortInputs, ...]:
    """The transfer's inputs read truncated to each of `plan.fit_lengths` shorter than the
    task's own `max_length`. Set against full fine-tuning (`full`), the short passes are timed
    now, not read from the cache, back to back with a timed slice of the strong model's full
    fine-tuning (`full.strong_timed`), then timed once more (`again`): the load may drift."""
    weak_id, strong_id = pair

    def passes(length: int, cache: Path | None) -> tuple[EncodedModel, EncodedModel]:
        weak = encode_task(weak_id, task, cache, length, ("train",))
        return weak, encode_task(strong_id, task, cache, length, ("train", "val"))

    live = None if full else cache
    shorts = tuple(
        ShortInputs(length, *passes(length, live))
        for length in plan.fit_lengths
        if length < max_length
    )
    if full and shorts:
        steps = plan.ft_timing_steps
        log(
            f"{task.name} {weak_id}→{strong_id}: timing {steps} steps of fully fine-tuning "
            f"{strong_id}"
        )
        full.strong_timed = time_fine_tuning(strong_id, task, steps, max_length=max_length)
        for short in shorts:
            weak, strong = passes(short.length, None)
            short.again = sum(weak.seconds.values()) + sum(strong.seconds.values())
    return shorts


def run_benchmark(
    plan: BenchPlan,
    out_dir: Path,
    cache: Path | None,
    config: PatchConfig | None = None,
    log: Callable[[str], None] = print,
    finetuned_dir: Path | None = None,
) -> dict[str, Any]:
    """Run `plan`; write results.json, results.md and results.png into `out_dir`.

    Fully fine-tuned encoders go to `finetuned_dir` (default `out_dir/finetuned`), one directory
    per task and model with its `cost.json`; one already there is reused, not trained again."""
    config = config or PatchConfig()
    started = time.perf_counter()
    records: dict[str, Any] = {}
    summaries = {}
    for task_name in plan.tasks:
        task = load_task(task_name).limited(plan.per_split_limit)
        max_length = MAX_LENGTH.get(task_name, 256)
        for pair in plan.pairs:
            weak_id, strong_id = pair
            key = f"{task.name} {weak_id}→{strong_id}"
            log(f"{key}: encoding {len(task.train)}/{len(task.val)}/{len(task.test)} inputs")
            weak = encode_task(weak_id, task, cache, max_length)
            strong = encode_task(strong_id, task, cache, max_length)
            full = None
            if plan.full_finetune:
                where = finetuned_dir or out_dir / "finetuned"
                full = _both_fully_fine_tuned(plan, task, pair, max_length, where, cache, log)
            shorts = _short_inputs(plan, task, pair, max_length, cache, full, log)
            seeds = []
            for seed in plan.seeds:
                log(f"{key}: seed {seed}")
                seeds.append(
                    run_seed(task, weak, strong, config, seed, plan.logit_dims, full, shorts)
                )
            summaries[key] = summarise(seeds)
            records[key] = {
                "task": task.name,
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
    atomic_write_bytes(out_dir / "results.png", patch_bars(result))
    return result
