"""extract_packet end to end on tiny models: every part, consistent shapes, identical bytes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from m2kt.concepts.sets import ConceptSet, Group
from m2kt.concepts.spec import parse_spec
from m2kt.errors import UsageError
from m2kt.extract.graph import abstraction_graph
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.ingest.student import read_student
from m2kt.models.state_cache import StateCache
from m2kt.models.view import ModelView
from m2kt.packet import read_packet
from m2kt.packet.summary import reading_lines

CREATED = "2026-01-01T00:00:00+00:00"
SPEC = parse_spec(
    """
layers: [1, 2]
attention_layers: [1, 2]
concepts:
  - name: apple
    parents: [fruit]
    probes: ["apple apple apple", "an apple apple pie", "apple juice apple", "red apple apple"]
  - name: pear
    parents: [fruit]
    probes: ["pear pear pear", "a pear pear tart", "pear juice pear", "green pear pear"]
  - name: zebra
    probes: ["zebra zebra zebra", "a zebra zebra runs", "zebra stripes zebra", "old zebra zebra"]
traces:
  - id: count
    probe: "two apples and a pear"
    answer: "three fruit"
    steps: ["2 + 1 = 3", "three fruit"]
"""
)


def _extract(view, **settings):
    return extract_packet(view, SPEC, ExtractionSettings(created_at=CREATED, **settings))


@pytest.mark.parametrize("method", ["bottleneck", "clustering", "attribution"])
def test_every_method_makes_a_complete_valid_packet(tiny_bert, tmp_path, method) -> None:
    result = _extract(tiny_bert, method=method, ig_steps=4, clusters=3)
    packet = result.packet
    m = packet.manifest
    assert packet.tensors["concepts.embeddings"].shape == (3, 32)
    assert packet.tensors["attention.patterns"].shape == (3, 2, 16, 16)
    assert torch.allclose(packet.tensors["attention.patterns"].sum(-1), torch.ones(3, 2, 16))
    assert packet.tensors["traces.count.layers"].shape == (3, 32)  # layers 0, 1, 2
    assert packet.tensors["traces.count.steps"].shape == (2, 32)
    assert {c.method for c in m.concepts} == {method}
    assert m.provenance.models[0].weight_sha256 == tiny_bert.weight_sha256
    assert m.provenance.inputs_seen == {"teacher": 12 + 1 + 2, "teacher_anchors": 1024}
    assert packet.tensors["anchors.states"].shape == (1024, 32)
    assert m.anchors is not None and m.anchors.set == "words" and len(m.anchors.texts) == 1024
    assert m.provenance.settings["layer"] in (1, 2)
    assert 0 <= m.provenance.measurements["concept_probe_accuracy"] <= 1
    assert m.provenance.measurements["heldout_probes"] == 3
    read_packet(packet.save(tmp_path / "p.m2kt"))  # what was written reads back strictly
    if method == "attribution":
        assert m.concepts[0].tokens and m.concepts[0].units
        safety = m.provenance.measurements.get("safety_inputs", 0)  # the export audit's texts
        forward = m.provenance.measurements["teacher_forward_inputs"]
        assert forward == 15 + 1024 + 9 * 5 + safety


@pytest.mark.parametrize("method", ["bottleneck", "attribution", "clustering"])
def test_verification_probes_take_no_part_in_what_the_packet_carries(tiny_bert, method) -> None:
    """Rewrite every verification probe: concepts, probe states, attention and confidence stay
    the same (to rounding: a batch's padding changes with its texts' lengths), so nothing in the
    packet was computed from them."""
    first = _extract(tiny_bert, method=method, ig_steps=4, clusters=3).packet
    held = {t for c in first.manifest.concepts for t in c.verification}
    extraction = {t for c in first.manifest.concepts for t in c.probes}
    if method == "clustering":
        assert not held  # discovered clusters name no concept to verify
        held = set(SPEC.all_probes()) - extraction
    assert len(held) == 3 and not held & extraction
    data = SPEC.model_dump()
    for concept in data["concepts"]:
        concept["probes"] = [
            f"{t} and quite different words" if t in held else t for t in concept["probes"]
        ]
    second = extract_packet(
        tiny_bert,
        type(SPEC).model_validate(data),
        ExtractionSettings(created_at=CREATED, method=method, ig_steps=4, clusters=3),
    ).packet
    for name in ("concepts.embeddings", "probes.states", "attention.patterns"):
        assert torch.allclose(first.tensors[name], second.tensors[name], atol=1e-4), name
    confidence = torch.tensor([c.confidence for c in first.manifest.concepts])
    assert torch.allclose(
        confidence, torch.tensor([c.confidence for c in second.manifest.concepts])
    )


def test_graph_has_spec_parents_hierarchy_and_neighbours(tiny_bert) -> None:
    graph = _extract(tiny_bert).packet.manifest.graph
    edges = {(e.source, e.target, e.type) for e in graph.edges}
    assert ("apple", "parent:fruit", "is-a") in edges and ("pear", "parent:fruit", "is-a") in edges
    kinds = {n.id: n.kind for n in graph.nodes}
    assert kinds["parent:fruit"] == "abstract" and kinds["group:1"] == "abstract"


def test_near_concepts_are_related_and_merge_first() -> None:
    names = ["cat", "kitten", "car", "truck"]
    embeddings = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0], [0, 0.1, 0.9]])
    concepts = ConceptSet(
        [Group(n, n, [i]) for i, n in enumerate(names)], embeddings, torch.ones(4), 1, "x"
    )
    graph = abstraction_graph(concepts, None)
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert edges[("cat", "kitten")]["type"] == "related"
    assert edges[("cat", "group:0")]["type"] == "is-a"  # the first merge joins cat and kitten
    assert edges[("kitten", "group:0")]["weight"] > edges[("group:0", "group:2")]["weight"]


def test_same_seed_same_bytes_other_seed_other_split(tiny_bert, tiny_llama) -> None:
    for view in (tiny_llama, tiny_bert):
        first, second = _extract(view), _extract(view)
        assert first.packet.to_bytes() == second.packet.to_bytes()
    other = _extract(tiny_bert, seed=1).packet  # another held-out split, another seed recorded
    assert other.manifest.provenance.settings["seed"] == 1
    assert other.to_bytes() != first.packet.to_bytes()


def test_decoder_chooses_pooling_on_extraction_probes(tiny_llama) -> None:
    settings = _extract(tiny_llama).packet.manifest.provenance.settings
    assert settings["candidate_poolings"] == ["last", "mean"]
    assert settings["pooling"] in ("last", "mean") and settings["trace_pooling"] == "last"


def test_a_model_without_attention_weights_falls_back_with_a_note(plain_view) -> None:
    result = _extract(plain_view)
    assert result.packet.manifest.attention is None
    assert "attention.patterns" not in result.packet.tensors
    assert any("no attention patterns" in note for note in result.notes)
    assert result.packet.manifest.provenance.settings["notes"]


def test_bad_settings_are_refused(tiny_bert) -> None:
    with pytest.raises(UsageError, match="out of range"):
        _extract(tiny_bert, layers=[7])
    with pytest.raises(UsageError, match="unknown method"):
        ExtractionSettings(method="telepathy")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="cannot make 40 clusters"):
        _extract(tiny_bert, method="clustering", clusters=40)
    with pytest.raises(UsageError, match="travel with their probe states"):
        ExtractionSettings(keep_layers=True, probe_states=False)


def test_a_concepts_verification_probes_do_not_depend_on_its_neighbours() -> None:
    from m2kt.concepts.split import holdout_split

    groups = [Group(f"c{k}", f"c{k}", list(range(6 * k, 6 * k + 6))) for k in range(4)]
    alone = holdout_split(groups[2:3], seed=0)
    among = holdout_split(groups, seed=0)
    held = [i for i, k in zip(among.heldout, among.heldout_labels, strict=True) if k == 2]
    assert held == alone.heldout and len(held) == 2
    other_seed = holdout_split(groups, seed=1).heldout
    assert other_seed != among.heldout


def test_the_reading_is_chosen_by_cross_validation_and_its_runners_up_are_kept(tiny_llama) -> None:
    packet = _extract(tiny_llama, anchors=None).packet
    settings = packet.manifest.provenance.settings
    assert settings["candidate_readings"] == ["last@1", "last@2", "mean@1", "mean@2"]
    losses = dict(zip(settings["candidate_readings"], settings["reading_losses"], strict=True))
    scores = dict(zip(settings["candidate_readings"], settings["reading_scores"], strict=True))
    chosen = f"{settings['pooling']}@{settings['layer']}"
    assert losses[chosen] == min(losses.values()) < max(losses.values())
    (line,) = reading_lines(packet)
    runner_up = min((r for r in losses if r != chosen), key=losses.__getitem__)
    assert line.startswith(f"reading {chosen}, {settings['readout']} readout")
    shown = f"runners-up: {runner_up} {100 * scores[runner_up]:.1f}% (loss {losses[runner_up]:.3f})"
    assert shown in line


def test_a_linear_readout_travels_in_part_d_and_the_worth_uses_it(tiny_bert, tmp_path) -> None:
    result = _extract(tiny_bert, anchors=None, readout="linear")
    packet = read_packet(result.packet.save(tmp_path / "p.m2kt"))
    assert packet.manifest.readout is not None and packet.manifest.readout.kind == "linear"
    assert packet.tensors["readout.weight"].shape == (3, 32)
    assert packet.tensors["readout.bias"].shape == (3,)
    assert packet.manifest.provenance.settings["readout"] == "linear"
    with pytest.raises(UsageError, match="bottleneck"):
        ExtractionSettings(method="clustering", readout="linear")


WORDS = ["amber", "birch", "cedar", "dune"]
FOUR = parse_spec(
    "concepts:\n"
    + "".join(
        f"  - name: {w}\n    probes: [{', '.join(f'{w} {i}' for i in range(9))}]\n" for w in WORDS
    )
)


@contextmanager
def designed(view: ModelView, states: dict[int, torch.Tensor]) -> Iterator[ModelView]:
    """`view` reading the states given per layer ([36, width], FOUR's probes in order) for
    FOUR's probes: the real pipeline on states whose layers hold what the test says."""
    cache = StateCache()
    for layer, rows in states.items():
        cache.store(
            f"{view.weight_sha256}:{view.context}:mean:{layer}:False", FOUR.all_probes(), rows
        )
    view.state_cache = cache
    try:
        yield view
    finally:
        view.state_cache = None


def _half_in_each_layer(width: int) -> dict[int, torch.Tensor]:
    """Layer 1 tells {amber, birch} from {cedar, dune}, layer 2 {amber, cedar} from {birch,
    dune}: no one layer tells the four apart, the two side by side do."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(9)
    found = {}
    for layer, bit in ((1, labels // 2), (2, labels % 2)):
        rows = torch.randn(len(labels), width, generator=generator)
        rows[:, :4] += 3.0 * (2 * bit[:, None].float() - 1)
        found[layer] = rows
    return found


def test_a_readout_over_several_layers_where_no_one_layer_holds_the_concepts(
    tiny_bert, tmp_path
) -> None:
    settings = ExtractionSettings(layers=[1, 2], attention=False, anchors=None, created_at=CREATED)
    with designed(tiny_bert, _half_in_each_layer(32)) as view:
        result = extract_packet(view, FOUR, settings)
        again = extract_packet(view, FOUR, settings)
    assert result.packet.to_bytes() == again.packet.to_bytes()
    packet = read_packet(result.packet.save(tmp_path / "p.m2kt"))
    m = packet.manifest
    assert m.readout is not None and m.readout.layers == [1, 2]
    assert packet.tensors["readout.weight"].shape == (4, 64)
    assert m.layers is not None and m.layers.layers == [1, 2]
    assert packet.tensors["layers.states"].shape == (2, 24, 32)
    assert result.worth is not None and result.worth.packet_accuracy >= 0.9
    assert result.worth.linear_probe_accuracy <= 0.75  # one layer alone
    settings_record = m.provenance.settings
    assert settings_record["readout_layers"] == [1, 2]
    assert "mean@1+2" in settings_record["candidate_readings"]
    line = reading_lines(packet)[0]
    assert line.startswith("reading mean@1+2, linear readout over its layers side by side")
    # the student's targets on part P's rows are the readout over part L's states side by side
    targets = read_student(tiny_bert, packet, layer=2).targets
    side = torch.cat(list(packet.tensors["layers.states"].float()), dim=-1)
    weight, bias = packet.tensors["readout.weight"], packet.tensors["readout.bias"]
    expected = torch.softmax(side @ weight.T + bias, dim=-1)
    assert targets.teacher_probs is not None
    torch.testing.assert_close(targets.teacher_probs, expected)
    labels = torch.arange(4).repeat_interleave(6)
    assert float((expected.argmax(1) == labels).float().mean()) >= 0.9


def test_concepts_kept_at_every_candidate_layer(tiny_bert, tmp_path) -> None:
    packet = read_packet(
        _extract(tiny_bert, anchors=None, keep_layers=True).packet.save(tmp_path / "p.m2kt")
    )
    m = packet.manifest
    assert m.layers is not None and m.layers.layers == [1, 2] and m.probes is not None
    own = m.layers.layers.index(m.probes.layer)
    assert torch.equal(packet.tensors["layers.states"][own], packet.tensors["probes.states"])
    assert torch.equal(
        packet.tensors["layers.embeddings"][own], packet.tensors["concepts.embeddings"]
    )
    assert not torch.equal(
        packet.tensors["layers.states"][1 - own], packet.tensors["probes.states"]
    )
    other = packet.tensors["layers.embeddings"][1 - own]
    assert not torch.allclose(other, packet.tensors["concepts.embeddings"])
    assert reading_lines(packet)[-1] == "concepts kept at layers 1, 2 (mean pooling, part L)"
    assert _extract(tiny_bert, anchors=None).packet.manifest.layers is None
