"""Ingestion end to end on real embedded models: a packet from e1 into a frozen e2.

One packet is made to succeed (the shipped topics spec read by e1) and one to fail (the same
packet with its concept vectors shifted by one, so every slot points at the wrong topic): the
failing one must be rolled back with the student bit-identical.
"""

from __future__ import annotations

import json

import pytest
import torch

from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.extract.pipeline import extract_packet
from m2kt.ingest.evaluate import load_ingested
from m2kt.ingest.pipeline import REPORT_FILE, IngestSettings, ingest
from m2kt.ingest.verify import Gate, Margins
from m2kt.models.load import load_model
from m2kt.packet import Packet

from conftest import shifted_concepts


@pytest.fixture(scope="module")
def topics_packet() -> Packet:
    return extract_packet(load_model("e1"), load_spec("topics")).packet


@pytest.fixture(scope="module")
def student():
    return load_model("e2")


def test_a_good_packet_is_accepted_saved_and_reloaded(topics_packet, student, tmp_path) -> None:
    outcome = ingest(student, topics_packet)
    assert outcome.accepted, outcome.verdict.reasons()
    transfer = next(c for c in outcome.verdict.checks if c.name == "transfer")
    assert transfer.after >= transfer.before
    report = outcome.report
    assert report["packet"]["digest"] == topics_packet.digest
    assert report["inputs"]["teacher"] > 0 and report["inputs"]["student_training"] > 0
    assert report["trainable_parameters"] == outcome.memory.num_trainable()
    out = outcome.save(tmp_path / "adapter")
    assert json.loads((out / REPORT_FILE).read_text())["accepted"] is True
    loaded = load_ingested(out)
    loaded.check_student(student)
    states = loaded.states(student, ["The striker scored twice", "Shares fell sharply"])
    with torch.no_grad():
        assert torch.equal(loaded.memory(states), outcome.memory(states))
    names = [loaded.memory.config.concepts[int(i)] for i in loaded.memory(states).argmax(-1)]
    assert names == ["sport", "business"]


def test_a_bad_packet_is_rolled_back_bit_exactly(topics_packet, student) -> None:
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    outcome = ingest(student, shifted_concepts(topics_packet), IngestSettings())
    assert not outcome.accepted and outcome.memory is None
    assert any("held-out verification probes" in r for r in outcome.verdict.reasons())
    after = student.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert outcome.report["student"]["weight_sha256_after"] == student.weight_sha256


def test_a_held_in_check_that_fails_refuses_a_packet_whose_concepts_are_fine(
    topics_packet, student
) -> None:
    """Demand a held-in gain no adapter can give: the transfer passes, the verdict does not."""
    outcome = ingest(student, topics_packet, IngestSettings(margins=Margins(held_in=-1.0)))
    checks = {c.name: c for c in outcome.verdict.checks}
    assert checks["transfer"].passed and not checks["held-in"].passed
    assert not outcome.accepted and outcome.memory is None


def test_the_held_in_set_must_share_no_text_with_the_packet(topics_packet, student) -> None:
    with pytest.raises(UsageError, match="shares 60 texts with the packet"):
        ingest(student, topics_packet, IngestSettings(held_in="topics"))


def test_verification_probes_are_the_packets_and_the_report_gives_the_statistics(
    topics_packet, student
) -> None:
    outcome = ingest(student, topics_packet)
    figures = outcome.verdict.checks[0].statistics
    verification = [t for c in topics_packet.manifest.concepts for t in c.verification]
    assert figures is not None and figures["n"] == len(verification) == 20
    assert {"difference", "interval_95", "p_value", "decision"} <= set(figures)
    assert outcome.report["checks"][0]["statistics"] == figures


def test_a_packet_whose_anchor_pairs_are_broken_is_refused_at_the_floor(
    topics_packet, student
) -> None:
    """Shuffle the teacher's anchor states: the map fitted on them explains nothing of the
    held-out anchors, and ingestion refuses it, naming the measured R² and the floor."""
    tensors = dict(topics_packet.tensors)
    states = tensors["anchors.states"]
    tensors["anchors.states"] = states[
        torch.randperm(len(states), generator=torch.Generator().manual_seed(0))
    ]
    outcome = ingest(
        student, topics_packet.rebuilt(tensors), IngestSettings(gate=Gate(accept_unverified=True))
    )
    assert not outcome.accepted
    (reason,) = [r for r in outcome.verdict.reasons() if r.startswith("anchor alignment")]
    assert "(floor 0.2)" in reason
    assert outcome.report["alignment"]["heldout_r2"] < 0.2


def test_a_good_packets_alignment_is_reported(topics_packet, student) -> None:
    outcome = ingest(student, topics_packet)
    alignment = outcome.report["alignment"]
    assert alignment["heldout_r2"] >= 0.2 and alignment["anchors_heldout"] == 205
    assert outcome.report["inputs"]["student_anchors"] == 1024


def test_a_stricter_level_needs_more_probes_and_the_report_says_unverifiable(
    topics_packet, student
) -> None:
    """At level 0.01 the exact test needs 7 lost probes to speak: 20 cannot show a 25% drop."""
    outcome = ingest(student, topics_packet, IngestSettings(gate=Gate(level=0.01)))
    assert not outcome.accepted and outcome.report["verification"] == "unverifiable"
    assert any("the test needs 28" in r for r in outcome.verdict.reasons())
