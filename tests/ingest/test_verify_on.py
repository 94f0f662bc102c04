"""`IngestSettings(verify_on=CSV)`: the user's own labelled sentences judge the packet.

A packet from e1 with two probes a concept has no verification probes at all: without the
user's sentences it is refused as unverifiable (tests/cli/test_ingest_command.py). With 24
sentences of the user's, written apart from it, it is verified; the same packet with its
concepts shifted (every slot on the wrong concept) is rolled back by them alone, the packet's
own checks having nothing to see it by.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.extract.pipeline import extract_packet
from m2kt.ingest.pipeline import Ingestion, IngestSettings, ingest
from m2kt.ingest.user_sentences import read_user_sentences
from m2kt.ingest.verify import Gate
from m2kt.models.load import load_model
from m2kt.packet import Packet

from conftest import MINE, TWO_PROBES, shifted_concepts, write_csv

UNVERIFIED = Gate(accept_unverified=True)


@pytest.fixture(scope="module")
def packet(tmp_path_factory: pytest.TempPathFactory) -> Packet:
    spec = tmp_path_factory.mktemp("spec") / "two.yaml"
    spec.write_text(TWO_PROBES)
    return extract_packet(load_model("e1"), load_spec(spec)).packet


@pytest.fixture(scope="module")
def mine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("mine") / "mine.csv", MINE)


@pytest.fixture(scope="module")
def student():
    return load_model("e2")


@pytest.fixture(scope="module")
def judged(packet, mine, student) -> Ingestion:
    """The default gate, which refuses the packet alone for want of probes, and your file."""
    return ingest(student, packet, IngestSettings(verify_on=str(mine)))


def test_enough_sentences_of_the_users_verify_a_packet_whose_own_probes_cannot(
    judged, mine
) -> None:
    assert judged.accepted, judged.verdict.reasons()
    report = judged.report
    assert report["verification"] == "verified"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["transfer"]["statistics"]["n"] == 0  # the packet's own: nothing to judge
    assert checks["yours: transfer"]["statistics"]["n"] == 24
    assert checks["transfer"]["reason"] == (
        "only 0 held-out verification probes, too few: verified on your 24 sentences instead"
    )
    yours = report["verified_on"]
    assert yours is not None
    assert yours["sha256"] == hashlib.sha256(mine.read_bytes()).hexdigest()
    assert yours["n"] == yours["rows"] == 24
    assert yours["packet"] == checks["yours: transfer"]["after"]
    assert yours["own_anchors"] == checks["yours: transfer"]["before"]
    assert yours["zero_shot"] == checks["yours: zero-shot"]["before"]
    assert yours["packet"] >= max(yours["own_anchors"], yours["zero_shot"])


def test_the_users_sentences_are_never_fitted_to(packet, student, judged) -> None:
    """The memory is the same to the bit with and without them, and so is what was trained."""
    alone = ingest(student, packet, IngestSettings(gate=UNVERIFIED))
    assert alone.memory is not None and judged.memory is not None
    ours, theirs = alone.memory.tensors(), judged.memory.tensors()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    inputs, more = alone.report["inputs"], judged.report["inputs"]
    assert more["student_training"] == inputs["student_training"]
    assert more["student"] == inputs["student"] + 24  # read once, for the checks


def test_a_packet_worse_than_the_student_on_the_users_sentences_is_rolled_back(
    packet, mine, student
) -> None:
    """Accepted unverified without them (its own checks have no probes), the shifted packet
    is refused by the user's sentences, each check naming the packet's figure and its
    baseline's; the student is left as it was."""
    bad = shifted_concepts(packet)
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    outcome = ingest(student, bad, IngestSettings(gate=UNVERIFIED, verify_on=str(mine)))
    assert not outcome.accepted and outcome.memory is None
    failed = {c.name: c for c in outcome.verdict.checks if not c.passed}
    assert set(failed) == {"yours: transfer", "yours: zero-shot"}
    transfer, zero_shot = failed["yours: transfer"], failed["yours: zero-shot"]
    assert f"{transfer.after:.1%} after against {transfer.before:.1%}" in transfer.reason
    assert "the student's own anchors" in transfer.reason and str(mine) in transfer.reason
    assert f"against {zero_shot.before:.1%} with the student's zero-shot" in zero_shot.reason
    after = student.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert outcome.report["student"]["weight_sha256_after"] == student.weight_sha256


def test_sentences_the_packet_carries_are_not_held_out(packet, student, tmp_path) -> None:
    carried = packet.manifest.concepts[0].probes[0]
    shared = write_csv(tmp_path / "shared.csv", {"sport": [carried], "business": ["Profits."]})
    with pytest.raises(UsageError, match="shares 1 texts with the packet"):
        ingest(student, packet, IngestSettings(verify_on=str(shared)))


def test_a_repeated_sentence_is_judged_once(tmp_path) -> None:
    """Each copy would be one more paired outcome for the gate's test: twelve sentences
    written twice must not pass for the 24 that verify a packet."""
    twice = {name: texts[:6] * 2 for name, texts in MINE.items() if name in ("sport", "business")}
    found = read_user_sentences(write_csv(tmp_path / "twice.csv", twice), ["sport", "business"])
    assert found.texts == MINE["sport"][:6] + MINE["business"][:6]
    assert found.concepts == ["sport"] * 6 + ["business"] * 6
    assert found.repeated == 12 and found.report(12)["rows"] == 12


def test_a_sentence_with_two_labels_is_refused(tmp_path) -> None:
    both = {"sport": ["The match ended in a draw."], "business": ["The match ended in a draw."]}
    with pytest.raises(UsageError, match="labelled both 'sport' and 'business'"):
        read_user_sentences(write_csv(tmp_path / "both.csv", both), ["sport", "business"])


def test_a_directory_is_refused_as_no_file_of_yours(tmp_path) -> None:
    """Not with the task reader's hint, which offers bbc or tweets: --verify-on takes neither."""
    (tmp_path / "mine.csv").mkdir()
    with pytest.raises(UsageError, match="--verify-on file .*mine.csv is not a regular") as refused:
        read_user_sentences(tmp_path / "mine.csv", ["sport", "business"])
    assert "tweets" not in refused.value.hint


def test_concepts_your_sentences_never_name_are_said_to_be_unchecked(
    packet, student, tmp_path
) -> None:
    """A verdict on your sentences covers the concepts they name: the others are listed in the
    report and said in a note, not passed over as verified."""
    left_out = sorted(MINE)[0]
    partial = write_csv(tmp_path / "partial.csv", {k: v for k, v in MINE.items() if k != left_out})
    outcome = ingest(student, packet, IngestSettings(verify_on=str(partial), gate=UNVERIFIED))
    assert outcome.report["verified_on"]["unchecked_concepts"] == [left_out]
    assert any(f"name no {left_out!r}" in n for n in outcome.report["notes"]), outcome.report
