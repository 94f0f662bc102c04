"""The methods a data-efficiency benchmark compares, each training the same concept memory.

Both regimes (latent skill, new computation) build their own targets; this module owns what
is common: which loss weights each method uses, training each one, scoring it, and the row it
leaves in the results (with the inputs every model read and the labels it used).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import torch

from m2kt.ingest.fit import FitSettings, fit_memory
from m2kt.ingest.loss import TERMS, LossWeights, Targets
from m2kt.ingest.memory import SlotSource
from m2kt.reproducible import one_thread

Run = tuple[Targets, LossWeights, SlotSource, float]  # targets, weights, slots, CE weight


def nested_order(pool: int, seed: int) -> list[int]:
    """A seeded order of a pool's training inputs; budget B takes its first B, so a larger
    budget always holds a smaller one's inputs."""
    order = list(range(pool))
    random.Random(seed).shuffle(order)
    return order


def only(term: str | None = None) -> LossWeights:
    """Every term off but `term` (all off when None)."""
    zero = dict.fromkeys(TERMS, 0.0)
    return LossWeights(**(zero | ({term: 1.0} if term else {})))


def method_runs(
    packet: Targets, kd: Targets, supervised: Targets, ablations: bool
) -> dict[str, Run]:
    """The packet on the full composite loss, logit KD (KL only, free slots), supervised tuning
    (cross-entropy only, free slots) and, with `ablations`, the packet with each term dropped.
    The safety term is never ablated: these benchmarks carry no unsafe anchors, so it is 0."""
    runs: dict[str, Run] = {
        "packet": (packet, LossWeights(), "aligned", 0.0),
        "logit KD": (kd, only("kl"), "free", 0.0),
        "supervised": (supervised, only(), "free", 1.0),
    }
    if ablations:
        for term in TERMS:
            if term != "safety":
                runs[f"packet − {term}"] = (packet, LossWeights().without(term), "aligned", 0.0)
    return runs


def score_methods(
    concepts: tuple[str, ...],
    runs: dict[str, Run],
    inputs: dict[str, dict[str, int]],
    settings: FitSettings,
    seed: int,
    evaluation: tuple[torch.Tensor, torch.Tensor],
    labels_used: int,
) -> dict[str, dict[str, Any]]:
    """Train every method on one thread (the fits are small; more threads only contend, and
    change the sums: `m2kt.reproducible`) and score it on `evaluation` (student states,
    labels). `inputs[method]` counts what each model read for it; an ablation reads what the
    packet reads. The supervised row used `labels_used` labels, every other none."""
    fit = replace(settings, seed=seed)
    rows: dict[str, dict[str, Any]] = {}
    with one_thread():
        for name, (targets, weights, slots, ce) in runs.items():
            started = time.perf_counter()
            result = fit_memory(concepts, targets, weights, fit, slots=slots, ce_weight=ce)
            with torch.no_grad():
                predicted = result.memory(evaluation[0]).argmax(-1)
            rows[name] = method_row(
                float((predicted == evaluation[1]).float().mean()),
                inputs[name.split(" − ")[0]],
                labels_used if name == "supervised" else 0,
                result.trainable_parameters,
                "memory",
                started,
                result.history,
                result.selection,
            )
    return rows


def method_row(
    accuracy: float,
    seen: dict[str, int],
    labels: int,
    trained_params: int,
    adapter: str,
    started: float,
    history: dict[str, list[float]],
    selection: dict[str, float],
) -> dict[str, Any]:
    """One method's row in results.json: its accuracy, the inputs each model read, the labels
    it used, what it trained, and how long it took since `started` (perf_counter)."""
    return {
        "accuracy": accuracy,
        "inputs": seen,
        "inputs_total": sum(seen.values()),
        "labels": labels,
        "trained_params": trained_params,
        "adapter": adapter,
        "seconds": time.perf_counter() - started,
        "final_loss": {t: v[-1] for t, v in history.items()},
        "selection": selection,
    }
