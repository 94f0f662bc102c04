"""The data-efficiency benchmark in a reduced quick mode: runs end to end and counts honestly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m2kt.bench.efficiency import fresh_specs
from m2kt.bench.efficiency.curves import curve, derived, inputs_to_reach
from m2kt.bench.efficiency.methods import method_row
from m2kt.bench.efficiency.run import EfficiencyPlan, run_efficiency
from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.tasks import load_task


def test_latent_regime_end_to_end(tmp_path: Path) -> None:
    plan = EfficiencyPlan(
        latent=(("bbc", "e1", "e2"),),
        symbolic=(),
        seeds=(0,),
        budgets=(0.0, 0.1),
        per_split_limit=60,
        quick=True,
        anchors=64,
    )
    record = run_efficiency(plan, tmp_path, tmp_path / "cache", log=lambda _: None)
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.md", "results.png"}
    (result,) = record["settings"].values()
    assert result["pool"] == 60 and result["budgets"] == [0, 6]
    task = load_task("bbc")  # every method's student reads each class in each prompt template
    prompts = len(task.class_names) * len(task.templates)
    for rows, b in zip(result["rows"], result["budgets"], strict=True):
        (packet,), (kd,), (kd_anchors,), (sft,) = (
            rows["packet"],
            rows["logit KD"],
            rows["logit KD + anchors"],
            rows["supervised"],
        )
        # counted where each model read: the packet went through extract and ingest
        assert packet["inputs"]["teacher"]["task"] == packet["inputs"]["student"]["task"] == b
        assert packet["inputs"]["teacher"]["anchor"] == packet["inputs"]["student"]["anchor"] == 64
        assert packet["packet_digest"].startswith("sha256:") and packet["accepted"]
        assert packet["ingestion_inputs"]["student_task"] == b
        assert kd["inputs"] == {
            "teacher": {"task": b, "anchor": 0, "probe": 0},
            "student": {"task": b, "anchor": 0, "probe": prompts},
        }
        assert kd_anchors["inputs"]["teacher"] == {"task": b, "anchor": 64, "probe": 0}
        assert sft["inputs"]["teacher"] == {"task": 0, "anchor": 0, "probe": 0}
        assert sft["labels"] == b and packet["labels"] == kd["labels"] == 0
        assert all(0 <= r[0]["accuracy"] <= 1 for r in rows.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"].keys() == record["settings"].keys()
    point = result["curves"]["packet"][0]
    assert {"gap_closed", "task_inputs", "anchor_inputs", "packet_digest"} <= set(point)
    assert "saving over logit KD" in result["derived"]["packet"]
    # a second run reads its states from the cache and counts the same inputs
    again = run_efficiency(plan, tmp_path / "again", tmp_path / "cache", log=lambda _: None)
    (second,) = again["settings"].values()
    assert second["rows"][1]["packet"][0]["inputs"] == result["rows"][1]["packet"][0]["inputs"]


def test_a_plan_without_curves_writes_its_tables_and_no_plot(tmp_path: Path) -> None:
    """A plan of the fresh spec family alone has no curve: the plot was a ZeroDivisionError
    after the measurements were done."""
    plan = EfficiencyPlan(latent=(), symbolic=(), seeds=(0,))
    record = run_efficiency(plan, tmp_path, None, log=lambda _: None)
    assert record["settings"] == {}
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md"}


def test_inputs_to_reach_interpolates_and_refuses_to_guess() -> None:
    points = [
        {"accuracy_mean": 0.5, "inputs_total": 10},
        {"accuracy_mean": 0.7, "inputs_total": 30},
        {"accuracy_mean": 0.9, "inputs_total": 70},
    ]
    assert inputs_to_reach(points, 0.6) == 20
    assert inputs_to_reach(points, 0.4) == 10
    assert inputs_to_reach(points, 0.95) is None
    kd = [{"accuracy_mean": a, "inputs_total": n} for a, n in ((0.5, 10), (0.6, 100), (0.9, 400))]
    out = derived({"packet": points, "logit KD": kd}, before=0.5, teacher=0.9)
    # Gap 50% = 0.7: packet at 30 inputs, KD at 100 + (0.1/0.3)·300 = 200 → saving 6.7×.
    assert abs(out["packet"]["saving over logit KD"]["gap 50%"] - 200 / 30) < 1e-9


def test_rows_that_count_no_task_inputs_are_measured_by_all_inputs() -> None:
    """The new-computation rows (memory and in-block alike, `method_row`) count no task inputs:
    their levels are reached at the inputs they read, not at 0."""

    def rows(accuracy: float, b: int) -> dict[str, list[dict[str, Any]]]:
        seen = {"teacher": b, "student": b}
        row = method_row(accuracy, seen, 0, 10, "blocks", 0.0, {}, {})
        return {"packet, blocks": [row], "logit KD, blocks": [row | {"accuracy": accuracy / 2}]}

    points = curve([rows(0.5, 10), rows(0.9, 50)], before=0.5, teacher=0.9)
    out = derived(points, before=0.5, teacher=0.9)
    # Gap 50% = 0.7: half-way from 20 to 100 inputs read.
    assert abs(out["packet, blocks"]["gap 50%"] - 60) < 1e-9
    assert out["logit KD, blocks"]["gap 50%"] is None


FILES = (".yaml", ".heldout.yaml", ".verify.yaml")


def test_the_fresh_spec_family_is_frozen(monkeypatch) -> None:
    for name in fresh_specs.FROZEN:
        assert fresh_specs.frozen_path(name).is_file()
    spec = load_spec(fresh_specs.frozen_path("emotions.yaml"))
    heldout = load_spec(fresh_specs.frozen_path("emotions.heldout.yaml"))
    assert len(spec.concepts) >= 5 and min(len(c.probes) for c in spec.concepts) >= 8
    assert not set(spec.all_probes()) & set(heldout.all_probes())
    for name in fresh_specs.NAMES:  # the third set: the user's sentences, apart from both
        texts = {f: load_spec(fresh_specs.frozen_path(f"{name}{f}")) for f in FILES}
        assert len({tuple(c.name for c in t.concepts) for t in texts.values()}) == 1
        assert sum(len(t.all_probes()) for t in texts.values()) == len(
            set().union(*(t.all_probes() for t in texts.values()))
        )
    edited = dict(fresh_specs.FROZEN, **{"emotions.yaml": "0" * 64})
    monkeypatch.setattr(fresh_specs, "FROZEN", edited)
    with pytest.raises(UsageError, match="not the frozen file"):
        fresh_specs.frozen_path("emotions.yaml")
