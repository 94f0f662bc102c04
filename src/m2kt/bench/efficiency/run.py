"""The data-efficiency benchmark: accuracy against inputs consumed, every method side by side.

Each setting (a regime, a task, a teacher and a student) is prepared once; then for every seed
and budget, every method runs on the same first-B inputs of that seed's order, and is scored
on the test split. Outputs: results.json (every row), results.md (curves and derived figures)
and results.png (the curves).
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from m2kt import __version__
from m2kt.atomic import atomic_write_bytes
from m2kt.bench.efficiency.curves import LEVELS, counted_by, curve, derived
from m2kt.bench.efficiency.methods import nested_order
from m2kt.bench.gap import gap_closed
from m2kt.ingest.fit import FitSettings
from m2kt.models.state_cache import StateCache
from m2kt.report.figures import efficiency_curves

BUDGETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0)  # 0: anchors and probes only


@dataclass
class Setting:
    """One prepared setting of a regime module (latent_skill or new_computation), which both
    provide `run_budget(setting, index, seed, settings)`."""

    title: str
    teacher_name: str
    student_name: str
    prepared: Any
    module: Any
    options: dict[str, Any] = field(default_factory=dict)  # more arguments of run_budget

    @property
    def pool(self) -> int:
        return len(self.prepared.task.train)

    def accuracy(self, split: str, who: str) -> float:
        return float(self.prepared.accuracy(split, who))

    def order(self, seed: int) -> list[int]:
        return nested_order(self.pool, seed)

    def run(self, index: list[int], seed: int, settings: FitSettings) -> dict[str, Any]:
        return dict(self.module.run_budget(self.prepared, index, seed, settings, **self.options))

    def budgets(self, shares: tuple[float, ...]) -> list[int]:
        """The budgets in inputs; 0 only where the regime can run without task inputs."""
        zero = getattr(self.module, "ZERO_BUDGET", False)
        return sorted({max(0 if zero else 1, round(f * self.pool)) for f in shares})

    def references(self, split: str) -> dict[str, float]:
        found = getattr(self.prepared, "references", None)
        return dict(found(split)) if found else {}


@dataclass(frozen=True)
class EfficiencyPlan:
    latent: tuple[tuple[str, str, str], ...]  # (task, teacher, student)
    symbolic: tuple[str, ...]  # families
    seeds: tuple[int, ...]
    budgets: tuple[float, ...] = BUDGETS
    per_split_limit: int | None = None
    quick: bool = False
    fresh_specs: tuple[str, str] | None = None  # (teacher, student) for the fresh spec family
    anchors: int = 1024  # anchor sentences each packet carries (KD + anchors reads the same)
    adapters: tuple[str, ...] = ("memory",)  # new computation: memory and/or blocks rows
    auditor: str | None = None  # latent: adds the packet screened with this auditor model


PLANS = {
    "quick": EfficiencyPlan(
        latent=(("bbc", "e1", "e2"),),
        symbolic=("modsum",),
        seeds=(0,),
        per_split_limit=400,
        quick=True,
        anchors=256,
    ),
    "full": EfficiencyPlan(
        latent=(
            ("bbc", "e1", "e2"),
            ("tweets", "e1", "e2"),
            ("bbc", "e2", "e1"),
            ("tweets", "e2", "e1"),
        ),
        symbolic=("modsum", "addition"),
        seeds=(0, 1, 2),
        fresh_specs=("e1", "e2"),
    ),
}


def only_regime(plan: EfficiencyPlan, regime: str) -> EfficiencyPlan:
    """The plan restricted to one regime ("latent" or "new-computation"), or whole ("both")."""
    if regime == "latent":
        return replace(plan, symbolic=())
    if regime == "new-computation":
        return replace(plan, latent=(), fresh_specs=None)
    return plan


def prepare_settings(
    plan: EfficiencyPlan, states: StateCache, log: Callable[[str], None], workdir: Path
) -> list[Callable[[], Setting]]:
    """Settings built lazily, each only when its turn comes. Packets are written to `workdir`;
    the views read through the state cache `states`."""

    def latent(task_name: str, teacher: str, student: str) -> Setting:
        from m2kt.bench.efficiency import latent_skill
        from m2kt.bench.patch.run import MAX_LENGTH
        from m2kt.models.load import load_model
        from m2kt.tasks import load_task

        task = load_task(task_name).limited(plan.per_split_limit)
        log(f"{task_name}: reading {len(task.train)}/{len(task.val)}/{len(task.test)} inputs")
        models = (teacher, student, *([plan.auditor] if plan.auditor else []))
        views = [load_model(m, max_length=MAX_LENGTH[task_name]) for m in models]
        for view in views:
            view.state_cache = states
        auditor = latent_skill.Auditor(plan.auditor, views[2]) if plan.auditor else None
        prepared = latent_skill.prepare(
            task,
            views[0],
            views[1],
            workdir / f"{task_name}-{teacher}-{student}",
            plan.anchors,
            auditor,
        )
        title = f"latent skill: {task_name}, {teacher} (tuned head) → {student}"
        return Setting(title, f"{teacher} + tuned head", student, prepared, latent_skill)

    def symbolic(family: str) -> Setting:
        from m2kt.bench.efficiency import new_computation

        log(f"{family}: training the teacher and pretraining the student")
        family_plan = new_computation.plan_for(family, plan.quick)
        prepared = new_computation.prepare(family, family_plan, seed=0)
        title = f"new computation: {family}"
        return Setting(
            title,
            prepared.teacher_name,
            prepared.student_name,
            prepared,
            new_computation,
            {"adapters": plan.adapters},
        )

    makers: list[Callable[[], Setting]] = [partial(latent, *entry) for entry in plan.latent]
    makers += [partial(symbolic, family) for family in plan.symbolic]
    return makers


def run_efficiency(
    plan: EfficiencyPlan,
    out_dir: Path,
    cache: Path | None,
    settings: FitSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    settings = settings or FitSettings()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="m2kt-efficiency-"))
    states = StateCache(cache / "states" if cache else None)
    try:
        for make in prepare_settings(plan, states, log, workdir):
            results |= _run_setting(make, plan, settings, log)
            states.flush()
        fresh = _fresh_specs(plan, states, workdir, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    record = {
        "m2kt_version": __version__,
        "plan": asdict(plan),
        "fit_settings": settings.as_dict(),
        "packet_settings": _packet_settings(plan),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "wall_clock_seconds": time.perf_counter() - started,
        "settings": results,
        "fresh_specs": fresh,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "results.json", json.dumps(record, indent=1).encode())
    atomic_write_bytes(out_dir / "results.md", markdown(record).encode())
    if results:  # a plan of the fresh spec family alone has no curve to draw
        atomic_write_bytes(out_dir / "results.png", efficiency_curves(record))
    return record


def _fresh_specs(
    plan: EfficiencyPlan, states: StateCache, workdir: Path, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The packet on the fresh spec family, with the default ingestion and the benchmark's."""
    if plan.fresh_specs is None:
        return None
    from m2kt.bench.efficiency.fresh_specs import measure
    from m2kt.bench.efficiency.latent_skill import PACKET_FIT
    from m2kt.models.load import load_model

    teacher, student = (load_model(m) for m in plan.fresh_specs)
    for view in (teacher, student):
        view.state_cache = states
    fits = {
        "packet (default ingestion)": FitSettings(),
        "packet (teacher slots)": replace(FitSettings(), **PACKET_FIT),  # type: ignore[arg-type]
    }
    found = measure(
        teacher, student, workdir / "fresh-specs", fits, log=log, verified_fit=FitSettings()
    )
    states.flush()
    return {"teacher": plan.fresh_specs[0], "student": plan.fresh_specs[1], "specs": found}


def _packet_settings(plan: EfficiencyPlan) -> dict[str, Any] | None:
    if not plan.latent:
        return None
    from m2kt.bench.efficiency.latent_skill import PACKET_FIT

    return {"ingest_fit": PACKET_FIT, "anchors": plan.anchors}


def _run_setting(
    make: Callable[[], Setting],
    plan: EfficiencyPlan,
    settings: FitSettings,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One setting, every budget and seed: its entry in results.json."""
    prepared = time.perf_counter()
    setting = make()
    teacher, before = setting.accuracy("test", "teacher"), setting.accuracy("test", "student")
    log(f"{setting.title}: teacher {teacher:.1%}, student before {before:.1%}")
    budgets = setting.budgets(plan.budgets)
    per_budget: list[dict[str, list[dict[str, Any]]]] = []
    for b in budgets:
        rows: dict[str, list[dict[str, Any]]] = {}
        for seed in plan.seeds:
            for method, row in setting.run(setting.order(seed)[:b], seed, settings).items():
                gap = gap_closed(row["accuracy"], before, teacher)
                rows.setdefault(method, []).append(
                    row | {"seed": seed, "budget": b, "gap_closed": gap}
                )
        per_budget.append(rows)
        shown = ", ".join(
            f"{m} {sum(r['accuracy'] for r in rs) / len(rs):.1%}"
            for m, rs in rows.items()
            if " − " not in m
        )
        log(f"{setting.title}: {b} inputs: {shown}")
    curves = curve(per_budget, before, teacher)
    return {
        setting.title: {
            "teacher": setting.teacher_name,
            "student": setting.student_name,
            "teacher_accuracy": teacher,
            "student_accuracy": before,
            "references": setting.references("test"),
            "pool": setting.pool,
            "budgets": budgets,
            "curves": curves,
            "derived": derived(curves, before, teacher),
            "rows": per_budget,
            "seconds": time.perf_counter() - prepared,
        }
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"Data efficiency, m2kt {record['m2kt_version']}, seeds {record['plan']['seeds']}, "
        f"{record['wall_clock_seconds'] / 60:.1f} min",
        "",
    ]
    for title, r in record["settings"].items():
        teacher, before = r["teacher_accuracy"], r["student_accuracy"]
        lines += [
            f"### {title}: teacher {r['teacher']} {teacher:.1%}, student {r['student']} "
            f"before {before:.1%}, KD pool {r['pool']} inputs",
            "",
            "Test accuracy % (mean ± std over seeds), gap closed in brackets, at each budget "
            "(training inputs B; below each method the texts all models read: task inputs, "
            "anchor texts, and everything, probes included, as the model views counted them).",
            "",
            *[f"Reference: {name} {value:.1%}." for name, value in r.get("references", {}).items()],
            "",
            "| method | " + " | ".join(f"B={b}" for b in r["budgets"]) + " | trained params |",
            "|---|" + "---|" * (len(r["budgets"]) + 1),
        ]
        for method, points in r["curves"].items():
            cells = [
                f"{100 * p['accuracy_mean']:.1f} ± {100 * p['accuracy_std']:.1f} "
                f"({gap_closed(p['accuracy_mean'], before, teacher):.2f})"
                for p in points
            ]
            lines.append(
                f"| {method} | "
                + " | ".join(cells)
                + f" | {max(p['trained_params'] for p in points):,} |"
            )
            lines.append(
                "| ↳ inputs: task / anchors / all | "
                + " | ".join(
                    f"{p.get('task_inputs', 0):.0f} / {p.get('anchor_inputs', 0):.0f} / "
                    f"{p['inputs_total']:.0f}"
                    for p in points
                )
                + " | |"
            )
        counted = "task inputs" if counted_by(r["curves"]) == "task_inputs" else "inputs"
        lines += [
            "",
            "| method | " + " | ".join(f"{counted} to {n}" for n in LEVELS) + " |",
            "|---|" + "---|" * len(LEVELS),
        ]
        for method, row in r["derived"].items():
            lines.append(f"| {method} | " + " | ".join(_count(row[n]) for n in LEVELS) + " |")
        for method, row in r["derived"].items():
            saving = row.get("saving over logit KD", {})
            if saving:
                lines.append(
                    f"| **saving of {method} over the better logit KD row (same adapter)** | "
                    + " | ".join(f"{v:.1f}×" if v else "n/a" for v in saving.values())
                    + " |"
                )
        lines.append("")
    fresh = record.get("fresh_specs")
    if fresh:
        specs = fresh["specs"]
        columns = [k for k, v in next(iter(specs.values())).items() if isinstance(v, float)]
        lines += [
            f"### Fresh spec family (frozen before tuning): teacher {fresh['teacher']}, "
            f"student {fresh['student']}, held-out sentences, accuracy %",
            "",
            "| spec | concepts | held-out | " + " | ".join(columns) + " |",
            "|---|---|---|" + "---|" * len(columns),
        ]
        for spec_name, spec_row in specs.items():
            spec_cells = " | ".join(
                f"{100 * spec_row[c]:.1f}"
                # refused: the student keeps no adapter, and the cell is its zero-shot reading
                + (" (rolled back)" if _refused(spec_row.get(f"{c}: verdict")) else "")
                for c in columns
            )
            lines.append(
                f"| {spec_name} | {spec_row['concepts']} | {spec_row['heldout']} | {spec_cells} |"
            )
        lines.append("")
    return "\n".join(lines)


def _refused(verdict: dict[str, Any] | None) -> bool:
    return verdict is not None and not verdict["accepted"]


def _count(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f}"
