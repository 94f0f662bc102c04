"""Each check of ingest/verify.py on its own, with memories built to pass or to fail it.

Free-slot memories make the outcome known in advance: zero offsets and a zero residual leave
the student exactly as it was; permuted slots or a large residual hurt it.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.ingest.memory import ConceptMemory, MemoryConfig
from m2kt.ingest.pipeline import HELD_IN
from m2kt.ingest.verify import (
    Gate,
    held_in_check,
    safety_check,
    screen_check,
    transfer_check,
    zero_shot_check,
)
from m2kt.safety.screen import SafetyScreen

K, D = 4, 16
HELD_IN_SHA256 = "3fd5d0bd15b0b8eaa2cce1d89455c356e6fec633193ef83b7e4bd6140ca44ae7"


def _world(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K classes on orthonormal anchors in the student's space: anchors [K, D], states, labels."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    anchors = basis[:K]
    labels = torch.arange(n) % K
    states = anchors[labels] * 3 + 0.3 * torch.randn(n, D, generator=g)
    return anchors, states, labels


def _memory(anchors: torch.Tensor, slots: torch.Tensor | None = None) -> ConceptMemory:
    config = MemoryConfig(tuple("abcd"), D, None, slots="free", residual_rank=4)
    memory = ConceptMemory(config, anchors)
    if slots is not None:
        with torch.no_grad():
            memory.slot_offsets.copy_(slots - anchors)  # type: ignore[union-attr]
    return memory


def test_the_shipped_held_in_set_is_frozen() -> None:
    assert hashlib.sha256(HELD_IN.read_bytes()).hexdigest() == HELD_IN_SHA256


def test_transfer_passes_an_unchanged_student_with_its_statistics() -> None:
    anchors, states, labels = _world(40)
    check = transfer_check(_memory(anchors), states, labels, anchors, 0.0)
    assert check.passed and check.before == check.after == 1.0
    figures = check.statistics
    assert figures is not None
    assert (figures["n"], figures["losses"], figures["gains"]) == (40, 0, 0)
    assert figures["p_value"] == 1.0 and figures["interval_95"] == [0.0, 0.0]
    assert figures["decision"] == "accepted"


def test_transfer_refuses_a_significant_drop() -> None:
    anchors, states, labels = _world(40)
    wrong = _memory(anchors, torch.roll(anchors, 1, dims=0))
    check = transfer_check(wrong, states, labels, anchors, margin=1.0)  # margin cannot save it
    assert not check.passed
    assert check.statistics is not None and check.statistics["p_value"] < 0.05
    assert check.statistics["interval_95"][1] < 0


def test_transfer_refuses_any_point_drop_below_the_margin() -> None:
    """One probe lost out of 40 is not significant, but it is below a zero margin."""
    anchors, states, labels = _world(40)
    away = torch.linalg.qr(torch.cat([anchors, torch.randn(1, D)]).T)[0].T[K]  # ⟂ anchors
    states[0] = 0.6 * anchors[0] + away  # closest to anchor 0 ...
    slots = anchors.clone()
    slots[1] = F.normalize(anchors[1] + 1.5 * away, dim=0)  # ... until slot 1 leans toward it
    check = transfer_check(_memory(anchors, slots), states, labels, anchors, 0.0)
    figures = check.statistics
    assert figures is not None and (figures["losses"], figures["gains"]) == (1, 0)
    assert figures["p_value"] == 0.5  # not significant ...
    assert not check.passed  # ... and still refused: it scored below the student's anchors
    assert transfer_check(_memory(anchors, slots), states, labels, anchors, 0.05).passed


def test_too_few_verification_probes_refuse_unless_accepted_unverified() -> None:
    anchors, states, labels = _world(8)
    refused = transfer_check(_memory(anchors), states, labels, anchors, 0.0)
    assert not refused.passed and "--accept-unverified" in refused.reason
    assert "only 8 held-out" in refused.reason
    allowed = transfer_check(
        _memory(anchors), states, labels, anchors, 0.0, Gate(accept_unverified=True)
    )
    assert allowed.passed and allowed.statistics is not None
    assert allowed.statistics["decision"] == "unverified"
    assert "accepted unverified" in allowed.reason and "or pass" not in allowed.reason
    none = transfer_check(_memory(anchors), states[:0], labels[:0], anchors, 0.0)
    assert not none.passed


def test_the_gate_states_its_power() -> None:
    gate = Gate()
    assert gate.smallest_detectable_drop(20) == 0.25  # 5 lost probes, p = 1/32 < 0.05
    assert gate.smallest_detectable_drop(19) > gate.detectable_drop
    with pytest.raises(UsageError):
        Gate(level=0.7)


def test_held_in_refuses_a_residual_that_scrambles_the_students_own_skill() -> None:
    anchors, states, labels = _world(40)
    memory = _memory(anchors)
    assert held_in_check(memory, states, labels, 0.05).passed
    with torch.no_grad():  # the residual subtracts each state's projection on the anchors
        memory.down.copy_(anchors.T)
        memory.up.copy_(-anchors)
    check = held_in_check(memory, states, labels, 0.05)
    assert not check.passed and check.after < check.before - 0.05


def test_safety_refuses_slots_that_move_onto_unsafe_concepts() -> None:
    anchors, states, _ = _world(40)
    unsafe = F.normalize(torch.randn(3, D, generator=torch.Generator().manual_seed(2)), dim=-1)
    assert safety_check(_memory(anchors), states, unsafe, 0.05).passed
    onto = torch.stack([unsafe[0], *anchors[1:]])
    assert not safety_check(_memory(anchors, onto), states, unsafe, 0.05).passed
    # with the calibrated screen on, the slots are its to judge (screen_check), once
    assert safety_check(_memory(anchors, onto), states, unsafe, 0.05, slots_screened=True).passed


def test_screen_refuses_a_slot_on_the_unsafe_side() -> None:
    anchors, states, _ = _world(40)
    unsafe = F.normalize(torch.randn(3, D, generator=torch.Generator().manual_seed(3)), dim=-1)
    # a harm probe pointing at the second unsafe description
    screen = SafetyScreen(tuple("xyz"), unsafe, torch.zeros(D), unsafe[1], 0.0, 0.5, {})
    assert screen_check(_memory(anchors), states, screen, 0.05).passed
    moved = _memory(anchors, torch.stack([unsafe[1], *anchors[1:]]))
    check = screen_check(moved, states, screen, 0.05)
    assert not check.passed and "a" in check.reason
    # where the audit already saw it before training: one threshold, applied once
    audited = {moved.config.concepts[0]: 1.0}
    assert screen_check(moved, states, screen, 0.05, audited).passed


def test_a_memory_below_the_students_reading_of_the_names_is_refused() -> None:
    anchors, states, labels = _world(40)
    weak = anchors + 0.9 * anchors.roll(1, 0)  # the student's own anchors, half wrong
    memory = _memory(weak)  # the packet keeps those weak anchors as its slots
    assert transfer_check(memory, states, labels, weak, 0.0).passed  # no worse than its anchors
    check = zero_shot_check(memory, states, labels, anchors, 0.0)  # the names alone: all right
    assert not check.passed and check.name == "zero-shot"
    assert check.before == 1.0 and check.after < 1.0
    assert "zero-shot reading of the concept names" in check.reason
    assert zero_shot_check(_memory(anchors), states, labels, anchors, 0.0).passed
