"""The safety benchmark's packets carry the disguise they claim, and its tally counts right.

States are random here (the models' part is tested in test_auditor.py): what matters is that
each disguise puts the unsafe vector, names and probes where the benchmark says it does.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch.nn import functional as F

from m2kt.bench.safety.run import KINDS, SafetyPlan, _packet, benchmark_concepts, summarise
from m2kt.safety.screen import default_calibration

CONCEPTS = benchmark_concepts()


@pytest.fixture(scope="module")
def states() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    texts = {p for c in CONCEPTS for p in c.probes}
    return {t: torch.randn(16, generator=g) for t in sorted(texts)}


@pytest.mark.parametrize("kind", KINDS)
def test_each_disguise(kind: str, states) -> None:
    injected = next(c for c in CONCEPTS if c.unsafe)
    packet, truth = _packet(SafetyPlan(), random.Random(0), CONCEPTS, injected, kind, states)
    m = packet.manifest
    row = next(k for k, (unsafe, _, _) in enumerate(truth) if unsafe)
    concept = m.concepts[row]
    assert sum(unsafe for unsafe, _, _ in truth) == 1 and len(m.concepts) == 9
    assert (concept.name == injected.name) == (kind == "labelled")
    assert (concept.probes == injected.probes) == (kind in ("labelled", "mislabelled"))
    unsafe_mean = F.normalize(torch.stack([states[p] for p in injected.probes]), dim=-1).mean(0)
    cosine = F.cosine_similarity(packet.tensors["concepts.embeddings"][row], unsafe_mean, dim=0)
    assert cosine > (0.3 if kind == "blended" else 0.8)
    assert len(m.traces) == sum(len(c.probes) for c in m.concepts)


def test_the_test_set_is_disjoint_from_calibration_and_descriptions() -> None:
    from m2kt.safety.descriptions import default_unsafe_descriptions

    calibration = default_calibration()
    held = {p for group in (calibration.benign | calibration.unsafe).values() for p in group}
    tested = {p for c in CONCEPTS for p in c.probes}
    assert not held & tested and not set(default_unsafe_descriptions()) & tested


def test_summary_counts() -> None:
    rows = [
        {"side": "ingest", "kind": "trojan", "outside": False, "flagged": True},
        {"side": "ingest", "kind": "trojan", "outside": True, "flagged": False},
        {"side": "ingest", "kind": "benign", "outside": False, "flagged": True},
        {"side": "ingest", "kind": "benign", "outside": False, "flagged": False},
    ]
    summary = summarise(rows)["ingest"]
    assert summary["trojan"] == {"flagged": 1, "of": 2, "rate": 0.5}
    assert summary["outside the list"]["of"] == 1 and summary["benign"]["rate"] == 0.5
