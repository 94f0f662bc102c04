"""The concept memory, its loss and its training, on synthetic spaces with a known answer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from m2kt.adapter_files import load_adapter_dir, save_adapter_dir
from m2kt.errors import UsageError
from m2kt.ingest.fit import FitSettings, fit_memory
from m2kt.ingest.loss import TERMS, LossWeights, Targets, concept_probabilities, loss_terms
from m2kt.ingest.memory import ConceptMemory, MemoryConfig

K, D_T, D_S = 4, 24, 16


def _world(seed: int = 0, probes: int = 60):
    """A teacher space and a student space related by a fixed random linear map, K clusters.

    The student's own anchors are deliberately poor (noise around the true centres), so the
    teacher's concepts carry something the student lacks.
    """
    g = torch.Generator().manual_seed(seed)
    centres_t = torch.randn(K, D_T, generator=g) * 1.2
    to_student = torch.randn(D_T, D_S, generator=g) / D_T**0.5

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % K
        teacher = centres_t[labels] + torch.randn(n, D_T, generator=g)
        return teacher, teacher @ to_student, labels

    probe_t, probe_s, probe_y = sample(probes)
    test_t, test_s, test_y = sample(400)
    anchors = F.normalize(centres_t @ to_student + 2 * torch.randn(K, D_S, generator=g), dim=-1)
    targets = Targets(
        student_anchors=anchors,
        student_states=probe_s,
        teacher_concepts=centres_t,
        teacher_states=probe_t,
        teacher_probs=concept_probabilities(probe_t, centres_t, 20.0),
    )
    return targets, test_s, test_y, probe_y


def _accuracy(memory: ConceptMemory, states: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((memory(states).argmax(-1) == labels).float().mean())


def test_aligned_memory_carries_the_teachers_concepts() -> None:
    targets, test_s, test_y, _ = _world()
    names = tuple(f"c{k}" for k in range(K))
    before = float(
        ((F.normalize(test_s, dim=-1) @ targets.student_anchors.T).argmax(-1) == test_y)
        .float()
        .mean()
    )
    packet = fit_memory(names, targets, LossWeights(), FitSettings(steps=40))
    after = _accuracy(packet.memory, test_s, test_y)
    assert after > 0.9 and after > before + 0.1, (before, after)
    assert packet.trainable_parameters == packet.memory.num_trainable() > D_T * D_S


def test_the_gate_gives_concepts_that_miss_the_teachers_answers_no_weight() -> None:
    """Chosen on a held-out quarter of the probes: concepts that point nowhere (a packet
    whose vectors disagree with its own answers) get gate 0, and the memory is the student's
    own view; concepts that carry what the student's poor anchors lack get weight."""
    targets, test_s, test_y, probe_y = _world()
    names = tuple(f"c{k}" for k in range(K))
    good = fit_memory(names, targets, LossWeights(), FitSettings(steps=0))
    assert good.selection["selected_gate"] > 0
    own = F.normalize(
        targets.student_states.new_zeros(K, D_S).index_add_(
            0, probe_y, F.normalize(targets.student_states, dim=-1)
        ),
        dim=-1,
    )
    generator = torch.Generator().manual_seed(5)
    lost = replace(
        targets,
        student_anchors=own,
        teacher_concepts=torch.randn(K, D_T, generator=generator),
    )
    chosen = fit_memory(names, lost, LossWeights(), FitSettings(steps=0))
    assert chosen.selection["selected_gate"] == 0.0
    with torch.no_grad():
        expected = (F.normalize(test_s, dim=-1) @ own.T).argmax(-1)
        assert torch.equal(chosen.memory(test_s).argmax(-1), expected)


def test_switched_off_terms_are_not_computed() -> None:
    targets, *_ = _world()
    names = tuple(f"c{k}" for k in range(K))
    for term in TERMS:
        if term == "safety":
            continue  # needs unsafe anchors; covered below
        result = fit_memory(
            names, targets, LossWeights().without(term), FitSettings(steps=3, select_steps=False)
        )
        assert term not in result.history and "total" in result.history


def test_safety_term_pushes_slots_away_from_unsafe_anchors() -> None:
    targets, *_ = _world()
    names = tuple(f"c{k}" for k in range(K))
    unsafe = targets.student_anchors[:1] + 0.01
    with_unsafe = Targets(**(targets.__dict__ | {"unsafe": unsafe, "safety_margin": 0.0}))
    settings = FitSettings(steps=60, lr=1e-2, select_steps=False)
    plain = fit_memory(names, with_unsafe, LossWeights(safety=0.0), settings).memory
    safe = fit_memory(names, with_unsafe, LossWeights(safety=50.0), settings).memory
    with torch.no_grad():
        closeness = [
            float((m.slots() @ F.normalize(unsafe, dim=-1).T).max()) for m in (plain, safe)
        ]
    assert closeness[1] < closeness[0] - 0.05, closeness


def test_loss_weights_and_memory_shapes_are_checked() -> None:
    with pytest.raises(UsageError, match="geo"):
        LossWeights(geo=-1.0)
    with pytest.raises(UsageError, match="unknown loss term"):
        LossWeights().without("nonsense")
    with pytest.raises(UsageError, match="does not fit a student of width 16"):
        MemoryConfig(("a", "b"), 16, None, "free", residual_rank=64)


def test_kd_and_supervised_train_the_same_free_memory() -> None:
    targets, test_s, test_y, probe_y = _world()
    names = tuple(f"c{k}" for k in range(K))
    kd = Targets(
        targets.student_anchors, targets.student_states, teacher_probs=targets.teacher_probs
    )
    sft = Targets(targets.student_anchors, targets.student_states, probe_labels=probe_y)
    only_kl = LossWeights(**{t: 0.0 for t in TERMS} | {"kl": 1.0})
    none = LossWeights(**{t: 0.0 for t in TERMS})
    settings = FitSettings(steps=100, lr=1e-2)
    a = fit_memory(names, kd, only_kl, settings, slots="free")
    b = fit_memory(names, sft, none, settings, slots="free", ce_weight=1.0)
    assert a.trainable_parameters == b.trainable_parameters
    assert _accuracy(a.memory, test_s, test_y) > 0.8 and _accuracy(b.memory, test_s, test_y) > 0.8


def test_memory_round_trips_through_an_adapter_directory(tmp_path) -> None:
    targets, test_s, *_ = _world()
    names = tuple(f"c{k}" for k in range(K))
    memory = fit_memory(names, targets, LossWeights(), FitSettings(steps=5)).memory
    save_adapter_dir(tmp_path / "a", memory.config.to_dict(), memory.tensors())
    config, tensors = load_adapter_dir(tmp_path / "a")
    again = ConceptMemory.from_tensors(MemoryConfig.from_dict(config), tensors)
    with torch.no_grad():
        assert torch.equal(memory(test_s), again(test_s))
    tensors["up"] = torch.zeros(3, 3)
    with pytest.raises(UsageError, match="adapter tensor up"):
        ConceptMemory.from_tensors(MemoryConfig.from_dict(config), tensors)


def test_loss_terms_are_finite_and_zero_at_a_perfect_fit() -> None:
    targets, *_ = _world()
    names = tuple(f"c{k}" for k in range(K))
    memory = fit_memory(names, targets, LossWeights(), FitSettings(steps=0)).memory
    terms = loss_terms(memory, targets, LossWeights())
    assert all(torch.isfinite(v) for v in terms.values())
    same = Targets(
        targets.student_anchors, targets.student_states, teacher_concepts=targets.student_anchors
    )
    free = fit_memory(names, same, LossWeights(), FitSettings(steps=0), slots="free").memory
    struct = loss_terms(free, same, LossWeights(geo=0, reason=0, kl=0))["struct"]
    assert float(struct.detach()) < 1e-6
