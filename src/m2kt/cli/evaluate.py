"""Score or use a student with an ingested adapter.

With --task, accuracy on the task's test split (its classes must be the adapter's concepts),
before (the student's own concept anchors) and after (the concept memory); --split all scores
every row, which is how to judge a packet on sentences of your own written apart from the spec
(a CSV of any size). With --text, the concept the student now assigns to each text, with its
probability.

Examples:
  m2kt evaluate --student e2 --adapter adapters/bbc --task bbc
  m2kt evaluate --student e2 --adapter adapters/topics --task my-sentences.csv --split all
  m2kt evaluate --student e2 --adapter adapters/topics --text "The striker scored twice"
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import console, error_console, model_reference, shown

NAME = "evaluate"
SUMMARY = "score a student with an ingested adapter, or predict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--student",
        required=True,
        type=model_reference,
        metavar="MODEL",
        help="the model the adapter was ingested into",
    )
    parser.add_argument("--adapter", required=True, metavar="DIR", help="from `m2kt ingest`")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", metavar="TASK", help="bbc, tweets or a CSV file")
    what.add_argument("--text", action="append", metavar="TEXT", help="text to classify")
    parser.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        default="test",
        help="which inputs of the task to score (all: every row, unsplit; default test)",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="score at most N inputs")
    parser.add_argument("--max-length", type=int, metavar="N", help="cap the context in tokens")


def run(args: argparse.Namespace) -> int:
    from m2kt.cli._common import progress_bars
    from m2kt.errors import UsageError
    from m2kt.ingest.evaluate import load_ingested, score
    from m2kt.models.load import load_model
    from m2kt.tasks import Split, by_concept, load_labelled, load_task

    labelled: tuple[str, tuple[str, ...], Split] | None
    if args.text:
        labelled = None
    elif args.split == "all":
        labelled = load_labelled(args.task)
    else:
        task = load_task(args.task)
        labelled = (task.name, task.class_names, getattr(task, args.split))
    ingested = load_ingested(args.adapter)
    view = load_model(args.student, max_length=args.max_length)
    ingested.check_student(view)
    concepts = ingested.memory.config.concepts
    if ingested.dropped:
        error_console.print(
            "note: this adapter cannot answer "
            + ", ".join(shown(n) for n in ingested.dropped)
            + ": the safety auditor dropped them at ingestion (ingestion_report.json says why); "
            "it answers only " + ", ".join(shown(c) for c in concepts)
        )
    if args.text:
        for text, found in zip(args.text, ingested.predict(view, args.text), strict=True):
            console.print(f"{shown(found.concept)} ({found.probability:.0%})  {shown(text)}")
        return 0
    assert labelled is not None
    name, classes, split = labelled
    split = split.spread(args.limit)
    if sorted(classes) != sorted(concepts):
        raise UsageError(
            f"task {name} has classes {list(classes)}, the adapter's concepts are {list(concepts)}",
            "evaluate on a task whose classes are the packet's concepts"
            + (
                f" (dropped at ingestion: {', '.join(ingested.dropped)})"
                if ingested.dropped
                else ""
            ),
        )
    split = by_concept(split, classes, concepts, name)
    with progress_bars() as progress:
        states = ingested.states(view, split.texts, lambda d, t: progress("read", d, t))
        before = None
        if ingested.adapter == "blocks":  # the student's own anchors read the frozen student
            before = ingested.states(
                view, split.texts, lambda d, t: progress("read, frozen", d, t), adapted=False
            )
    names = ingested.states(view, list(concepts), adapted=False)
    result = score(ingested, states, split.labels, names, before)
    console.print(
        f"{name} {args.split} ({len(split)} inputs): {result['before']:.1%} with the "
        f"student's own anchors, {result['zero_shot']:.1%} with its zero-shot reading of the "
        f"concept names, {result['after']:.1%} with the ingested packet"
    )
    if result["after"] < result["zero_shot"]:
        console.print("the packet does not beat the student's zero-shot reading of the names")
    return 0
