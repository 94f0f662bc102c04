"""One symbolic family of the full new-computation plan, at chosen budgets, seeds and adapters.

`m2kt bench efficiency --mode full --regime new-computation` runs every family with every
ablation; this runs one family through the same functions (`prepare`, the benchmark's
per-setting loop and its markdown), optionally without the ablations, and keeps the prepared
setting (teacher and student, 15 min to train on 2 shared cores) in a file so that later runs
at other budgets or seeds skip the training. Usage:

    python benchmarks/new_computation_family.py addition --budgets 1 --seeds 0 \
        --adapter blocks --no-ablations --setting out/addition.pt --out out/addition-b3000-s0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from m2kt import __version__
from m2kt.bench.efficiency import new_computation as nc
from m2kt.bench.efficiency.run import PLANS, Setting, _run_setting, markdown
from m2kt.ingest.fit import FitSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(nc.FULL))
    parser.add_argument("--budgets", required=True, help="shares of the pool, e.g. 0.1,1")
    parser.add_argument("--seeds", required=True, help="e.g. 0,1")
    parser.add_argument("--adapter", choices=("memory", "blocks", "both"), default="blocks")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--setting", type=Path, help="the prepared setting, read or written")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    adapters = ("memory", "blocks") if args.adapter == "both" else (args.adapter,)
    plan = replace(
        PLANS["full"],
        latent=(),
        fresh_specs=None,
        symbolic=(args.family,),
        budgets=tuple(float(b) for b in args.budgets.split(",")),
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        adapters=adapters,
    )
    started = time.perf_counter()
    if args.setting and args.setting.exists():
        prepared = torch.load(args.setting, weights_only=False)  # a file this script wrote
    else:
        prepared = nc.prepare(args.family, nc.plan_for(args.family, quick=False), seed=0)
        if args.setting:
            torch.save(prepared, args.setting)
    options = {"adapters": adapters, "ablations": not args.no_ablations}
    title = f"new computation: {args.family}"

    def make() -> Setting:
        return Setting(title, prepared.teacher_name, prepared.student_name, prepared, nc, options)

    results = _run_setting(make, plan, FitSettings(), print)
    record = {
        "plan": {"seeds": list(plan.seeds), "budgets": list(plan.budgets), "adapters": adapters},
        "ablations": not args.no_ablations,
        "prepare_seconds": prepared.seconds,
        "wall_clock_seconds": time.perf_counter() - started,
        "m2kt_version": __version__,
        "settings": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    (args.out / "results.md").write_text(markdown(record))


if __name__ == "__main__":
    main()
