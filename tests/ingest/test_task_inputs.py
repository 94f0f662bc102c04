"""Task inputs through the product: the teacher answers them at extraction, the packet carries
them, the student reads them at ingestion, and every model's reads are counted by purpose
where it reads them (the model view), not by a formula."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from m2kt.concepts.probing import read_probes
from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.extract.pipeline import ExtractionSettings, TeacherHead, extract_packet
from m2kt.ingest.evaluate import load_ingested
from m2kt.ingest.fit import FitSettings
from m2kt.ingest.pipeline import IngestSettings, ingest
from m2kt.ingest.verify import Gate
from m2kt.models.load import load_model
from m2kt.models.state_cache import StateCache
from m2kt.packet import concept_probes

TASK = [
    "The midfielder signed a new contract with the club.",
    "Parliament passed the budget after a late-night vote.",
    "The central bank left interest rates unchanged.",
    "A new smartphone chip doubles battery life.",
]
SETTINGS = ExtractionSettings(attention=False, anchor_count=64, created_at="2026-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def teacher():
    return load_model("e1")


@pytest.fixture(scope="module")
def student():
    return load_model("e2")


@pytest.fixture(scope="module")
def extraction(teacher):
    before = teacher.reads.copy()
    found = extract_packet(teacher, load_spec("topics"), SETTINGS, task_inputs=TASK)
    return found, teacher.reads_since(before)


def test_the_teacher_answers_task_inputs_and_the_packet_marks_them(extraction, teacher) -> None:
    found, reads = extraction
    m = found.packet.manifest
    probes = concept_probes(found.packet)
    assert sorted(probes.task_texts) == sorted(TASK)
    assert sum(c.task_inputs or 0 for c in m.concepts) == len(TASK)
    assert not set(TASK) & {t for c in m.concepts for t in c.verification}
    # each task input sits under the concept the teacher's own concepts answer for it
    concepts = found.packet.tensors["concepts.embeddings"].float()
    for text, state in zip(probes.texts, probes.states, strict=True):
        if text in TASK:
            k = int((F.normalize(state, dim=-1) @ F.normalize(concepts, dim=-1).T).argmax())
            assert text in m.concepts[k].probes
    assert m.provenance.inputs_seen["teacher_task"] == len(TASK)
    assert reads["task"] == len(TASK) and reads["anchor"] == 64


def test_ingestion_counts_each_purpose_where_the_student_reads(extraction, student) -> None:
    found, _ = extraction
    before = student.reads.copy()
    outcome = ingest(student, found.packet, IngestSettings(gate=Gate(accept_unverified=True)))
    read = student.reads_since(before)
    inputs = outcome.report["inputs"]
    assert inputs["student_task"] == read["task"] == len(TASK)
    assert inputs["student_anchors"] == read["anchor"] == 64
    assert inputs["student"] == sum(read.values())
    names = [c["name"] for c in outcome.report["checks"]]
    assert "zero-shot" in names  # the packet is compared with the names read alone


def test_a_state_cache_saves_passes_not_inputs(student) -> None:
    texts = ["one sentence", "another sentence", "one sentence again"]
    plain = student.reads.copy()
    with student.reading("task"):
        first = read_probes(student, texts, [3]).states[("mean", 3)]
    uncached = student.reads_since(plain)
    student.state_cache = StateCache()
    try:
        for _ in range(2):  # a miss, then a hit
            counted = student.reads.copy()
            with student.reading("task"):
                again = read_probes(student, texts, [3]).states[("mean", 3)]
            assert student.reads_since(counted) == uncached
            torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-5)
    finally:
        student.state_cache = None


def test_teacher_slots_use_the_teachers_head_and_reload_exactly(teacher, student, tmp_path):
    spec = load_spec("topics")
    last = teacher.num_layers  # a head over the teacher's last layer: its probes' means
    states = read_probes(teacher, spec.all_probes(), [last]).states[("mean", last)]
    rows = torch.tensor([k for k, c in enumerate(spec.concepts) for _ in c.probes])
    head = F.normalize(
        torch.stack([states[rows == k].mean(0) for k in range(len(spec.concepts))]), dim=-1
    )
    settings = ExtractionSettings(**(SETTINGS.__dict__ | {"method": "head"}))
    found = extract_packet(
        teacher, spec, settings, head=TeacherHead(head, 33.0, layer=-1), task_inputs=TASK
    )
    packet = found.packet
    torch.testing.assert_close(
        packet.tensors["concepts.embeddings"].float(), head, atol=2e-3, rtol=0
    )
    assert packet.manifest.probes.logit_scale == 33.0
    fit = FitSettings(slots="teacher", pair_weight=10.0, steps=0, select_steps=False)
    outcome = ingest(student, packet, IngestSettings(fit=fit, gate=Gate(accept_unverified=True)))
    memory = outcome.memory
    assert memory is not None and memory.in_teacher_space
    loaded = load_ingested(outcome.save(tmp_path / "adapter"))
    states = loaded.states(student, TASK)
    with torch.no_grad():
        torch.testing.assert_close(loaded.memory(states), memory(states))


def test_a_head_needs_its_method_and_fits_the_spec(teacher) -> None:
    spec = load_spec("topics")
    with pytest.raises(UsageError, match="method head"):
        extract_packet(teacher, spec, SETTINGS, head=TeacherHead(torch.ones(10, 384), 20.0))
    wrong = ExtractionSettings(**(SETTINGS.__dict__ | {"method": "head"}))
    with pytest.raises(UsageError, match="head is"):
        extract_packet(teacher, spec, wrong, head=TeacherHead(torch.ones(3, 384), 20.0))
