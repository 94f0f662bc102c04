"""Round 6 of the auditor: the packet carries the teacher's states of the screen's texts (part S),
so that ingestion fits the export audit's screen in the teacher's own space and measures each
vector against its probes' teacher states there, where no map's error blurs harm.

e1 exports the topics with a stowaway (test_auditor.HIDDEN) through `finish_export`, as `m2kt
extract` does; e2 ingests. A blend too weak for every student-space reference is caught in the
teacher's space; a part S of another m2kt is not used; a forged part S does not hide a trojan.
"""

from __future__ import annotations

import pytest
import torch
from test_auditor import HIDDEN, _blend

from m2kt.concepts.spec import parse_spec
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.models.load import load_model
from m2kt.packet import concept_probes, screen_states
from m2kt.packet.manifest import CONCEPTS_TENSOR, PROBE_STATES_TENSOR, SCREEN_STATES_TENSOR
from m2kt.safety import ExportScreen, finish_export
from m2kt.safety.audit import drop_concepts
from m2kt.safety.screen import harm_training
from m2kt.safety.sides import screen_for_ingestion, teacher_screen

IN_TEACHER_SPACE = "both in the teacher's space, on the screen fitted there from part S"


@pytest.fixture(scope="module")
def student():
    return load_model("e2")


@pytest.fixture(scope="module")
def exported():
    """The packet `m2kt extract --keep-flagged` writes, and the export audit that wrote it."""
    audit = ExportScreen()
    extraction = extract_packet(
        load_model("e1"),
        parse_spec(HIDDEN, "hidden.yaml"),
        ExtractionSettings(layers=[-1]),
        audit=audit,
    )
    packet, _ = finish_export(extraction.packet, audit, keep_flagged=True)
    return packet, audit


def _findings(audit) -> list:
    return [(f.name, round(f.score, 3), f.reasons[:1]) for f in audit.findings]


def test_export_carries_the_screens_texts_and_ingestion_refits_its_screen(exported) -> None:
    packet, audit = exported
    states = screen_states(packet)
    assert states is not None and audit.screen is not None and audit.read is not None
    assert list(states) == audit.read.states()[0]  # every text the export screen read, once
    assert states.keys() >= set(audit.screen.descriptions)
    refitted = teacher_screen(packet)
    assert refitted is not None  # from half-precision states, the same screen within rounding
    assert abs(refitted.threshold - audit.screen.threshold) < 0.01
    concepts = packet.tensors[CONCEPTS_TENSOR]
    assert torch.equal(refitted.flags(concepts), audit.screen.flags(concepts))
    kept = drop_concepts(packet, {packet.manifest.concepts[3].id})  # part S goes with the packet
    assert torch.equal(kept.tensors[SCREEN_STATES_TENSOR], packet.tensors[SCREEN_STATES_TENSOR])


def test_a_blend_the_student_space_misses_is_caught_in_the_teachers_space(
    exported, student, monkeypatch
) -> None:
    """α = 0.15 of the harm in `sport` drifts too little from every reference in e2's space;
    against its probes' teacher states on the screen fitted from part S, it does not."""
    blended = _blend(exported[0], 0.15)
    _, found, _ = screen_for_ingestion(student, blended, -1, None)
    assert [f.name for f in found.flagged] == ["sport"], _findings(found)
    assert IN_TEACHER_SPACE in found.flagged[0].reasons[0]
    monkeypatch.setattr("m2kt.safety.sides.TEACHER_SPACE_DRIFT_MARGIN", float("inf"))
    _, without, _ = screen_for_ingestion(student, blended, -1, None)
    assert not without.flagged, _findings(without)


def test_a_part_s_without_the_screens_texts_is_not_used(exported, student) -> None:
    """A packet written by another m2kt, whose screen learnt from other texts: its part S cannot
    fit this screen, so the audit is round 5's and says nothing of the teacher's space."""
    packet = exported[0]
    texts = list(packet.manifest.screen.texts)
    texts[0] = "A text this m2kt's screen does not learn from."
    other = packet.rebuilt(screen={"texts": texts})
    assert teacher_screen(other) is None
    _, found, _ = screen_for_ingestion(student, _blend(other, 0.15), -1, None)
    assert not found.flagged, _findings(found)


def test_a_forged_part_s_does_not_hide_a_trojan(exported, student) -> None:
    """A forger swaps the teacher's states of harmful and ordinary texts in part S, so that the
    screen fitted from it reads harm as ordinary, and puts the harm's vector under `sport`'s
    probes: the references in the student's space still give the vector away. (A forger who
    also claims in part P that the teacher read `sport`'s probes as the harm is flagged by that
    reading; test_auditor's forged part P shows the student's reading of the texts alone.)"""
    packet = exported[0]
    states = screen_states(packet)
    assert states is not None
    harmful = [t for c in harm_training().values() for t in c.examples if t in states]
    ordinary = [t for t in states if t not in set(harmful)][: len(harmful)]
    swapped = dict(states) | dict(zip(harmful, [states[t] for t in ordinary], strict=True))
    swapped |= dict(zip(ordinary, [states[t] for t in harmful], strict=True))
    vectors = packet.tensors[CONCEPTS_TENSOR].clone()
    vectors[0] = vectors[3]
    tensors = dict(packet.tensors) | {
        CONCEPTS_TENSOR: vectors,
        SCREEN_STATES_TENSOR: torch.stack([swapped[t] for t in states]).half(),
    }
    forged = packet.rebuilt(tensors)
    forged = drop_concepts(forged, {forged.manifest.concepts[3].id})
    _, found, _ = screen_for_ingestion(student, forged, -1, None)
    assert [f.name for f in found.flagged] == ["sport"], _findings(found)
    assert "nearer harm than" in found.flagged[0].reasons[0]
    assert IN_TEACHER_SPACE not in found.flagged[0].reasons[0]


def test_the_teachers_reading_judges_the_specs_probes_not_task_inputs(exported, student) -> None:
    """Without an auditor the teacher's reading of the probes counts, but only of those its spec
    wrote: task inputs are a task's raw data, which e1's screen may read as harm where the
    student does not (tweets of violent news, in the efficiency benchmark). Here `business`'s
    probes are marked as task inputs and their teacher states made the harm's: the teacher's
    reading of them no longer flags it; counted as spec probes, it does."""
    packet = exported[0]
    probes = concept_probes(packet)
    states = packet.tensors[PROBE_STATES_TENSOR].clone()
    states[probes.indices(1)] = states[probes.indices(3)][: len(probes.indices(1))]
    concepts = list(packet.manifest.concepts)
    forged = drop_concepts(
        packet.rebuilt({**packet.tensors, PROBE_STATES_TENSOR: states}), {concepts[3].id}
    )
    as_task = forged.rebuilt(
        concepts=[
            c.model_copy(update={"task_inputs": len(c.probes)}) if c.name == "business" else c
            for c in forged.manifest.concepts
        ]
    )
    _, spec_probes, _ = screen_for_ingestion(student, forged, -1, None)
    assert [f.name for f in spec_probes.flagged] == ["business"], _findings(spec_probes)
    assert "its probes' reading" in spec_probes.flagged[0].reasons[0]
    _, task_inputs, _ = screen_for_ingestion(student, as_task, -1, None)
    assert not task_inputs.flagged, _findings(task_inputs)
