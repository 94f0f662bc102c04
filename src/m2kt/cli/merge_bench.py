"""Measure a merge: a student ingests packet A, packet B, and their merge.

Teacher A reads one half of a concept spec, teacher B (another model) the other half, the two
sharing --overlap concepts; a few probes per concept are held out from everything. The student
is scored on the held-out probes of all concepts; beside it each teacher (on its own concepts),
the untouched student (its own anchors of every concept) and one packet of teacher A over all
concepts as a reference. Writes merge-results.json and merge-results.md to --out.

Example:
  m2kt merge-bench --teachers e1,l1 --student e2 --spec topics --out out/merge-bench
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import concept_spec, console, model_reference, output_directory

NAME = "merge-bench"
SUMMARY = "measure what merging two teachers' packets gives a student"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teachers", default="e1,l1", metavar="A,B", help="default e1,l1")
    parser.add_argument("--student", default="e2", type=model_reference, metavar="MODEL")
    parser.add_argument("--spec", default="topics", type=concept_spec, metavar="SPEC")
    parser.add_argument("--overlap", type=int, default=2, metavar="N", help="shared concepts")
    parser.add_argument("--heldout", type=int, default=2, metavar="N", help="probes per concept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/merge-bench", type=output_directory, metavar="DIR")


def run(args: argparse.Namespace) -> int:
    from m2kt.bench.merge_benchmark import MergePlan, markdown, run_merge_benchmark
    from m2kt.errors import UsageError

    teachers = tuple(args.teachers.split(","))
    if len(teachers) != 2:
        raise UsageError(f"--teachers takes two models, got {args.teachers!r}")
    plan = MergePlan(teachers, args.student, args.spec, args.overlap, args.heldout, args.seed)  # type: ignore[arg-type]
    result = run_merge_benchmark(plan, args.out, log=lambda m: console.log(m))
    console.print(markdown(result), markup=False)
    console.print(f"wrote {args.out}/merge-results.json and merge-results.md")
    return 0
