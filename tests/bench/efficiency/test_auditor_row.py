"""The latent row of the packet screened with an auditor model (`bench efficiency --auditor`)."""

from __future__ import annotations

import json
from pathlib import Path

from m2kt.bench.efficiency.run import EfficiencyPlan, run_efficiency

FIELDS = {"gap_closed", "task_inputs", "anchor_inputs", "accuracy_mean", "accuracy_std"}


def test_the_auditor_row_ingests_the_same_packet_with_the_auditor_judging(tmp_path: Path) -> None:
    plan = EfficiencyPlan(
        latent=(("bbc", "e1", "e2"),),
        symbolic=(),
        seeds=(0,),
        budgets=(0.0,),
        per_split_limit=30,
        quick=True,
        anchors=32,
        auditor="e1",  # the teacher's model as the judge: small and fast; l1 in the real run
    )
    record = run_efficiency(plan, tmp_path, tmp_path / "cache", log=lambda _: None)
    (result,) = record["settings"].values()
    (rows,) = result["rows"]
    (packet,), (audited,), (plain,) = (
        rows["packet"],
        rows["packet, auditor e1"],
        rows["packet, no screen"],
    )
    # the same packet file, ingested three ways
    assert audited["packet_digest"] == packet["packet_digest"] == plain["packet_digest"]
    # ingest ran with the auditor: it read the probes and the screen's texts in e1's space,
    # counted where it read them, under its own key beside the teacher's and the student's
    read = audited["ingestion_inputs"]["auditor_safety_screen"]
    assert read > 0 and packet["ingestion_inputs"]["auditor_safety_screen"] == 0
    assert audited["inputs"]["auditor"] == {"task": 0, "anchor": 0, "probe": read}
    assert set(packet["inputs"]) == {"teacher", "student"}
    assert audited["inputs"]["student"] == packet["inputs"]["student"]
    assert audited["inputs_total"] == packet["inputs_total"] + read
    assert audited["safety_screen"] == "on" and audited["dropped_concepts"] == {}
    saved = json.loads((tmp_path / "results.json").read_text())
    (curves,) = (s["curves"] for s in saved["settings"].values())
    assert FIELDS | {"packet_digest"} <= set(curves["packet, auditor e1"][0])
    assert saved["plan"]["auditor"] == "e1"
    assert "saving over logit KD" in result["derived"]["packet, auditor e1"]
    assert "packet, auditor e1" in (tmp_path / "results.md").read_text()
