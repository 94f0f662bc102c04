"""The main job: carry a weak model's adaptation to a stronger model, end to end, offline.

On BBC News, with the embedded models E2 (weak, 3 layers) and E1 (strong, 6 layers):
1. the weak model's class-name head is tuned on the labelled training split (the adaptation a
   user has paid for); a patch learns that gap from the same inputs without their labels;
2. the patch is signed, verified, and transferred to the strong model with one SVD;
3. the patched strong model is scored on the held-out test split beside the teacher, the
   untouched strong model and the baselines, with every input each model saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from m2kt.bench.patch.run import BenchPlan, run_benchmark
from m2kt.concepts.geometry import accuracy
from m2kt.packet import generate_keypair, load_packet
from m2kt.patch.api import load_patched_model, train_patch, transfer_patch_packet
from m2kt.progress import StageProgress
from m2kt.tasks import load_task

DEMO_PLAN = BenchPlan(tasks=("bbc",), pairs=(("e2", "e1"),), seeds=(0,))


@dataclass(frozen=True)
class DemoResult:
    weak_patch: Path
    strong_patch: Path
    public_key: Path
    patched_accuracy: float
    inputs_seen: dict[str, dict[str, int]]
    benchmark: dict[str, Any]


def run_demo(
    out_dir: str | Path,
    cache: Path | None,
    seed: int = 0,
    progress: StageProgress | None = None,
    log: Callable[[str], None] = print,
    per_split_limit: int | None = None,
) -> DemoResult:
    """`per_split_limit` caps every split (for a fast smoke run); the default uses them all."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task("bbc").limited(per_split_limit)
    private_key, public_key = fresh_keys(out)

    log("1/3 learning the patch on the weak model (e2) without labels")
    weak = train_patch("e2", task, seed=seed, cache=cache, progress=progress).signed(private_key)
    weak_path = weak.save(out / "bbc-e2.patch.m2kt")

    log("2/3 verifying the signed patch and transferring it to the strong model (e1)")
    verified = load_packet(weak_path, trusted_keys=[public_key])
    strong = transfer_patch_packet(verified, "e1", task, cache=cache, progress=progress)
    strong_path = strong.signed(private_key).save(out / "bbc-e1.patch.m2kt")

    log("3/3 scoring on the test split, beside the baselines")
    model = load_patched_model(load_packet(strong_path, trusted_keys=[public_key]), "e1")
    patched = accuracy(model.task_logits(task.test.texts, cache), task.test.labels)
    plan = replace(DEMO_PLAN, seeds=(seed,), per_split_limit=per_split_limit)
    benchmark = run_benchmark(plan, out / "benchmark", cache, log=lambda _: None)
    return DemoResult(
        weak_patch=weak_path,
        strong_patch=strong_path,
        public_key=public_key,
        patched_accuracy=patched,
        inputs_seen={
            "learn (on e2)": dict(weak.manifest.provenance.inputs_seen),
            "transfer (e2 → e1)": dict(strong.manifest.provenance.inputs_seen),
        },
        benchmark=benchmark,
    )


def fresh_keys(out: Path) -> tuple[Path, Path]:
    for stale in (out / "demo-signer.key", out / "demo-signer.pub"):
        stale.unlink(missing_ok=True)
    return generate_keypair(out, "demo-signer")
