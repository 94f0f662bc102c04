"""Which anchor texts align two models best? The measurement behind m2kt's shipped anchor set.

    python benchmarks/anchor_sets.py [--out benchmarks/results/anchor-sets.json]

For each candidate set, a linear map from the teacher's space (e1, mean pooling, layers 3 and
6) to the student's (e2, its last layer) is fitted in closed form on `FIT` anchors, the ridge
chosen on held-out anchors of the same set, exactly as ingestion does it
(`m2kt.align.quality.anchor_alignment`). It is then scored on texts no candidate contains:
BBC News validation articles and tweets validation posts (real task-domain text, never the test
split) and the `topics` spec's probes: R² of the mapped vectors and top-1 retrieval of each
text's own student vector. A set that only aligns with itself would score well on its own
held-out anchors and badly here.

Candidates: `words` (the shipped sentences, benchmarks/build_anchor_set.py), `bare words`
(the same 4,096 words alone), `stdlib` (first sentences of Python standard-library
docstrings: public, task-agnostic, technical prose).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

from m2kt.align.quality import anchor_alignment, score_alignment
from m2kt.anchors import load_anchor_set
from m2kt.concepts.probing import read_probes
from m2kt.concepts.spec import load_spec
from m2kt.models.load import load_model
from m2kt.patch.aux_classes import shipped_aux_names
from m2kt.tasks import load_task

FIT = (256, 1024, 2048)
EVAL = 300


def stdlib_sentences(limit: int = 4096) -> list[str]:
    """First sentences of docstrings of the standard library's pure-Python modules."""
    import importlib
    import inspect
    import warnings

    found: list[str] = []
    warnings.simplefilter("ignore")
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "tkinter", "turtle"}:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - some modules need a platform or a display
            continue
        for _, obj in [(name, module), *inspect.getmembers(module)]:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            if not doc:
                continue
            first = re.split(r"(?<=[.!?])\s", " ".join(doc.split()), maxsplit=1)[0]
            if 30 <= len(first) <= 200 and first not in found:
                found.append(first)
    return found[:limit]


def read(view, texts: list[str], layer: int) -> torch.Tensor:
    return (
        read_probes(view, texts, [layer], poolings=["mean"], truncate=True)
        .states[("mean", layer)]
        .float()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/anchor-sets.json")
    args = parser.parse_args()
    started = time.perf_counter()
    words = load_anchor_set("words")
    candidates = {
        "words": list(words.texts),
        "bare words": list(shipped_aux_names()),
        "stdlib": stdlib_sentences(),
    }
    bbc, tweets = load_task("bbc"), load_task("tweets")
    evaluation = {
        "bbc validation": list(bbc.val.texts[:EVAL]),
        "tweets validation": list(tweets.val.texts[:EVAL]),
        "topics probes": load_spec("topics").all_probes(),
    }
    teacher, student = load_model("e1"), load_model("e2")
    (student_layer,) = student.check_layers([-1])
    results: dict[str, object] = {"fit_sizes": FIT, "candidates": {}}
    for layer in (3, 6):
        eval_states = {
            k: (read(teacher, v, layer), read(student, v, student_layer))
            for k, v in evaluation.items()
        }
        for name, texts in candidates.items():
            t, s = read(teacher, texts, layer), read(student, texts, student_layer)
            for fit in FIT:
                if fit > len(texts):
                    continue
                found = anchor_alignment(t[:fit], s[:fit], seed=0)
                row = {
                    "anchors": fit,
                    "ridge": found.ridge,
                    "heldout_r2": found.r2,
                    "heldout_retrieval": found.retrieval,
                }
                for key, (te, st) in eval_states.items():
                    r2, retrieval = score_alignment(found.layer, te, st)
                    row[f"{key} r2"], row[f"{key} retrieval"] = r2, retrieval
                results["candidates"][f"{name} | e1 layer {layer} | {fit}"] = row  # type: ignore[index]
                print(name, layer, row, flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
