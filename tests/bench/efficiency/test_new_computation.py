"""The new-computation regime: a teacher that computes, a frozen student that was asked
another question of the same inputs, and every method counted on the same inputs."""

from __future__ import annotations

import pytest
import torch

from m2kt.bench.efficiency import new_computation as nc
from m2kt.bench.efficiency.methods import nested_order
from m2kt.bench.efficiency.run import PLANS, only_regime
from m2kt.errors import UsageError
from m2kt.tasks.symbolic import symbolic_task
from m2kt.tasks.tiny_transformer import TrainSettings

TINY = nc.FamilyPlan(
    sizes=(60, 30, 30),
    options={"p": 5},
    teacher={"width": 16, "layers": 1, "heads": 2, "ff": 32},
    student={"width": 12, "layers": 2, "heads": 2, "ff": 24, "activation": "gelu"},
    teacher_training=TrainSettings(epochs=3),
    student_training=TrainSettings(epochs=3),
)


def test_every_method_reads_the_same_inputs_and_only_supervised_sees_labels() -> None:
    setting = nc.prepare("modsum", TINY, seed=0)
    assert setting.student_states["train"].shape == (60, 2 * 24)  # MLP units, last two blocks
    assert setting.teacher_states["test"].shape == (30, 16)
    order = nested_order(len(setting.task.train), seed=1)
    assert sorted(order) == list(range(60)) and order != list(range(60))
    rows = nc.run_budget(setting, order[:12], seed=1, settings=nc.FitSettings(steps=5))
    assert {"packet", "logit KD", "supervised"} <= set(rows)
    assert {f"packet − {t}" for t in ("geo", "struct", "reason", "kl")} <= set(rows)
    assert rows["packet"]["inputs"] == {"teacher": 12, "student": 12}
    assert rows["logit KD"]["inputs"] == {"teacher": 12, "student": 12}
    assert rows["supervised"]["inputs"] == {"teacher": 0, "student": 12}
    assert rows["supervised"]["labels"] == 12
    assert all(r["labels"] == 0 for name, r in rows.items() if name != "supervised")
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows.values())


def test_the_student_is_pretrained_on_another_function_of_the_same_inputs() -> None:
    task = symbolic_task("modsum", seed=0, train=40, val=10, test=10, p=7)
    other, classes = nc.OTHER_TASKS["modsum"][1](task, task.train)
    a, b, c = (torch.tensor([int(t.split()[i]) for t in task.train.texts]) for i in (0, 2, 4))
    assert classes == 7
    assert torch.equal(other, (a + b - c) % 7)
    assert torch.equal(task.train.labels, (a + b + c) % 7)
    assert not torch.equal(other, task.train.labels)


@pytest.mark.parametrize(
    ("text", "swapped"),
    [
        ("a = 1, b = 0 ; a and b", 1),  # read as a or b
        ("a = 1, b = 0 ; a or b", 0),  # read as a and b
        ("a = 0, b = 0 ; not (a or b)", 1),
        ("a = 1, b = 1, c = 0 ; (a and c) or not b", 0),  # (a or c) and not b
    ],
)
def test_boolean_pretraining_swaps_and_with_or(text: str, swapped: int) -> None:
    assert nc._evaluate_swapped(text) == swapped


def test_plans_and_regimes() -> None:
    assert PLANS["quick"].symbolic == ("modsum",)
    assert PLANS["full"].symbolic == ("modsum", "addition")  # a second family: not one task's
    assert nc.plan_for("addition", quick=False).options == {"digits": 2}
    assert only_regime(PLANS["full"], "latent").symbolic == ()
    assert only_regime(PLANS["full"], "new-computation").latent == ()
    with pytest.raises(UsageError, match="no quick plan"):
        nc.plan_for("binding", quick=True)


def test_the_second_family_runs_every_row_the_same_way() -> None:
    """Addition with carries (one digit here: 19 answers) through both adapters."""
    from m2kt.ingest.blocks import BlockSettings

    tiny = nc.FamilyPlan(
        sizes=(40, 10, 20),
        options={"digits": 1},
        teacher=TINY.teacher,
        student=TINY.student,
        teacher_training=TrainSettings(epochs=2),
        student_training=TrainSettings(epochs=2),
    )
    setting = nc.prepare("addition", tiny, seed=0)
    assert setting.student.config.classes == 10  # pretrained on |x − y|
    index = nested_order(40, seed=0)[:16]
    fit = nc.FitSettings(steps=4, select_steps=False)
    rows = nc.run_budget(setting, index, 0, fit, ablations=False, adapters=("memory",))
    blocks = nc.run_budget(
        setting, index, 0, fit, ablations=False, adapters=("blocks",), blocks=BlockSettings(steps=2)
    )
    assert {r["adapter"] for r in rows.values()} == {"memory"}
    assert {r["adapter"] for r in blocks.values()} == {"blocks"}
    for row in [*rows.values(), *blocks.values()]:
        assert {"accuracy", "inputs_total", "trained_params", "adapter"} <= set(row)
