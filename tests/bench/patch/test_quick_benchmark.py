"""Smoke test of the benchmark's quick mode: real models, real data, tiny splits."""

from pathlib import Path

import pytest

from m2kt.bench.patch.full_finetune import compute_parameters, fine_tune_encoder
from m2kt.bench.patch.run import PLANS, BenchPlan, run_benchmark
from m2kt.bench.patch.tables import METHOD_ORDER
from m2kt.models import load_model
from m2kt.tasks import load_task

FULL = {"weak fine-tuned (full)", "strong + patch (full teacher)", "strong fine-tuned (full)"}


def test_quick_mode_writes_every_method_for_every_run(tmp_path: Path) -> None:
    quick = PLANS["quick"]
    plan = BenchPlan(quick.tasks, quick.pairs, quick.seeds, per_split_limit=60)
    result = run_benchmark(plan, tmp_path / "out", tmp_path / "cache", log=lambda _: None)
    assert set(result["runs"]) == {"bbc e2→e1", "tweets e2→e1"}
    for run in result["runs"].values():
        rows = run["seeds"][0]
        assert set(rows) == set(METHOD_ORDER) - FULL
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows.values())
        for r in rows.values():  # what the issue asks of every row
            assert {"accuracy", "share_of_ft_gain", "inference_cost", "seconds"} <= set(r)
            assert {"labels", "inputs_seen", "val_accuracy"} <= set(r)
        costs = {m: r["inference_cost"] for m, r in rows.items()}
        assert costs["ensemble"] == 2 and costs["logit arithmetic"] == 3
        assert costs["strong + patch"] == 1 and costs["patch + weak ensemble"] == 2
        assert costs["patch+ + weak + zero-shot (weights on validation)"] == 2
        for plus in ("strong + patch+", "strong + patch+ (bias only)"):  # never below on val
            assert rows[plus]["val_accuracy"] >= rows["strong + patch"]["val_accuracy"]
        assert rows["strong + patch (label-free)"]["labels"] == 0
        assert rows["strong fine-tuned"]["share_of_ft_gain"] == 1.0
        assert rows["strong + patch"]["transfer"]["map"] in ("orthogonal", "linear")
        assert rows["strong + patch (orthogonal)"]["transfer"]["map"] == "orthogonal"
        assert rows["strong + patch"]["labels"] == run["inputs"]["val"]
        assert rows["weak + patch"]["labels"] == 0  # the patch itself never sees a label
    table = (tmp_path / "out" / "results.md").read_text()
    assert "strong + patch" in table and "logit arithmetic" in table
    assert (tmp_path / "out" / "results.png").stat().st_size > 10_000


def test_full_fine_tuning_tunes_every_weight_and_feeds_the_benchmark(tmp_path: Path) -> None:
    """A real end-to-end fine-tune on a few articles: saved, reloadable, costed, and the
    benchmark learns a patch from it and sets it against the fully fine-tuned strong model."""
    task = load_task("bbc").limited(10)
    before = load_model("e2").encoder(32)
    cost = fine_tune_encoder("e2", task, tmp_path / "e2", epochs=1, max_length=32)
    assert cost.parameters == sum(p.numel() for p in before.model.parameters())
    assert cost.flops == 6 * compute_parameters(before.model) * cost.train_tokens > 0
    assert cost.epochs_run == 1
    after = load_model(str(tmp_path / "e2")).encoder(32)
    assert after.weight_sha256 != before.weight_sha256 or cost.best_epoch == 0
    again = load_model(str(tmp_path / "e2")).encoder(32)
    assert again.weight_sha256 == after.weight_sha256  # nothing left to random initialisation
    plan = BenchPlan(
        ("bbc",),
        (("e2", "e1"),),
        (0,),
        per_split_limit=10,
        full_finetune="both",
        fit_lengths=(16,),
        ft_timing_steps=1,
    )
    result = run_benchmark(plan, tmp_path / "out", tmp_path / "cache", log=lambda _: None)
    rows = result["runs"]["bbc e2→e1"]["seeds"][0]
    short = "strong + patch (full teacher, fit 16 tokens)"
    assert set(rows) >= FULL | {short, "strong + patch, fit 16 tokens"}
    assert all("share_of_full_ft_gain" in rows[m] and rows[m]["flops"] > 0 for m in FULL)
    assert rows[short]["transfer"]["fit_length"] == 16
    # 16 tokens cost less than 256 in FLOPs, with the weak model's pass added
    assert rows[short]["flops"] < rows["strong + patch (full teacher)"]["flops"]
    # its passes timed before and after the slice of fine-tuning; its time is their mean
    first, second = rows[short]["passes_seconds"], rows[short]["passes_seconds_again"]
    assert rows[short]["seconds"] == pytest.approx(
        (first + second) / 2 + rows[short]["step_seconds"]
    )
    timed = rows[short]["strong_full_ft_timed"]
    assert timed["seconds"] == pytest.approx(
        2 * timed["seconds_per_step"] + 3 * timed["seconds_per_validation"]
    )
    assert (tmp_path / "out" / "finetuned" / "bbc-e1" / "cost.json").is_file()
    assert "× in wall-clock" in (tmp_path / "out" / "results.md").read_text()
