"""The new-computation rows with LoRA inside the student's blocks, on tiny transformers."""

from __future__ import annotations

import torch
from test_new_computation import TINY

from m2kt.bench.efficiency import blocks as eb
from m2kt.bench.efficiency import new_computation as nc
from m2kt.bench.efficiency.methods import nested_order
from m2kt.ingest.blocks import BlockSettings, has_block_adapter
from m2kt.models.fingerprint import weight_sha256


def test_every_method_trains_the_same_adapter_and_leaves_the_student_as_it_was() -> None:
    setting = nc.prepare("modsum", TINY, seed=0)
    frozen = weight_sha256(setting.student)
    order = nested_order(len(setting.task.train), seed=1)
    chosen = torch.tensor(order[:24])
    rows = nc.run_budget(setting, order[:24], seed=1, settings=nc.FitSettings(), adapters=())
    assert rows == {}
    packet, kd, supervised = _targets(setting, chosen)
    methods = eb.block_methods(packet, kd, supervised, ablations=True)
    inputs = {
        "packet": {"teacher": 24, "student": 24},
        "logit KD": {"teacher": 24, "student": 24},
        "supervised": {"teacher": 0, "student": 24},
    }
    small = BlockSettings(steps=6, eval_every=3, batch=16)
    rows = eb.run_block_methods(
        setting, chosen, methods, inputs, nc.FitSettings(), 1, "test", 24, small
    )
    assert set(rows) == set(methods) and all(r["adapter"] == "blocks" for r in rows.values())
    # the same LoRA and free slots for KD and supervised tuning: their parameters agree
    assert (
        rows["logit KD, blocks"]["trained_params"] == rows["supervised, blocks"]["trained_params"]
    )
    assert (
        rows["packet, blocks"]["layer_pairs"] and not rows["packet, blocks − reason"]["layer_pairs"]
    )
    assert rows["packet, blocks, last layers"]["layer_pairs"] == [[2, 1]]
    assert "hint" in rows["packet, blocks"]["final_loss"]
    assert rows["supervised, blocks"]["labels"] == 24 and rows["logit KD, blocks"]["labels"] == 0
    assert not has_block_adapter(setting.student) and weight_sha256(setting.student) == frozen


def test_hints_read_the_worked_step_and_the_answer_position() -> None:
    tokens = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [2, 1, 7, 1, 1, 9, 2, 0]])
    assert eb.positions(tokens, "modsum").tolist() == [[2, 7], [2, 6]]
    assert eb.positions(tokens, "boolean").tolist() == [[7], [6]]


def _targets(setting, chosen):
    s = setting
    student_x, teacher_x = s.student_states["train"][chosen], s.teacher_states["train"][chosen]
    probs = nc.concept_probabilities(teacher_x, s.teacher_concepts, s.teacher_scale)
    k = len(s.task.classes)
    taught = nc.class_centroids(student_x, probs.argmax(-1), k)
    labels = s.task.train.labels[chosen]
    packet = nc.Targets(taught, student_x, s.teacher_concepts, teacher_x, probs)
    kd = nc.Targets(taught, student_x, teacher_probs=probs)
    supervised = nc.Targets(
        nc.class_centroids(student_x, labels, k), student_x, probe_labels=labels
    )
    return packet, kd, supervised
