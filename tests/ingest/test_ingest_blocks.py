"""Ingestion with an adapter inside the student's blocks, on tiny real transformers.

The saved directory must load onto the Hugging Face student with `PeftModel.from_pretrained`
and give what m2kt's own loading gives; a refused ingestion must leave the student bit for bit
as it was, although its modules were wrapped and its forward changed during training.
"""

from __future__ import annotations

import json

import pytest
import torch

import m2kt
from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.ingest.blocks import (
    BlockAdapter,
    BlockSettings,
    base_weight_sha256,
    has_block_adapter,
    target_modules,
)
from m2kt.ingest.evaluate import load_ingested
from m2kt.ingest.fit import FitSettings
from m2kt.ingest.pipeline import IngestSettings, ingest
from m2kt.ingest.verify import Gate, Margins
from m2kt.models.fingerprint import weight_sha256
from m2kt.models.view import ModelView
from m2kt.packet import Packet

from conftest import TINY, PlainEncoder

TEXTS = ["What is 7 plus 5?", "Is 9 an odd number?", "Carry the one when adding 58 and 67."]
ACCEPT_ANY = Margins(transfer=1.0, held_in=1.0, safety=10.0)  # a format test, not a gain


def tiny_bert(tokenizer, seed: int) -> ModelView:
    """A fresh tiny BERT each time: ingestion with blocks changes the student it is given."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    model = BertModel(BertConfig(intermediate_size=64, max_position_embeddings=64, **TINY))
    return ModelView(f"tiny-bert-{seed}", model, tokenizer)


def settings(**changes) -> IngestSettings:
    base = IngestSettings(
        adapter="blocks",
        blocks=BlockSettings(steps=6, lr=1e-2),
        fit=FitSettings(select_steps=False, steps=6),
        gate=Gate(accept_unverified=True),
        alignment_floor=-1e9,
        screen=False,
    )
    return IngestSettings(**(base.__dict__ | changes))


@pytest.fixture(scope="module")
def packet(tokenizer) -> Packet:
    """Arithmetic from a tiny teacher: its worked problems carry layer traces for the hints."""
    teacher = tiny_bert(tokenizer, seed=7)
    chosen = ExtractionSettings(anchor_count=64, attention=False)
    return extract_packet(teacher, load_spec("arithmetic"), chosen).packet


def test_lora_wraps_every_projection_of_hugging_face_and_plain_blocks(tokenizer) -> None:
    view = tiny_bert(tokenizer, seed=0)
    names = target_modules(view.model, view.layers)
    assert "encoder.layer.0.attention.self.query" in names
    assert "encoder.layer.1.output.dense" in names and len(names) == 12
    plain = PlainEncoder(tokenizer.vocab_size)
    found = target_modules(plain, list(plain.blocks))
    # a MultiheadAttention is left out (peft's LoRA for it is not bit-exact): the MLP's two
    assert found == [f"blocks.{i}.{m}" for i in (0, 1) for m in ("linear1", "linear2")]
    before = weight_sha256(plain)
    adapter = BlockAdapter(plain, found, BlockSettings(rank=2))
    assert has_block_adapter(plain) and base_weight_sha256(plain) == before
    adapter.remove()
    assert not has_block_adapter(plain) and weight_sha256(plain) == before


def test_saved_blocks_load_with_peft_and_with_m2kt_alike(tokenizer, packet, tmp_path) -> None:
    from peft import PeftModel

    student = tiny_bert(tokenizer, seed=1)
    frozen = weight_sha256(student.model)
    outcome = ingest(student, packet, settings(margins=ACCEPT_ANY))
    assert outcome.accepted, outcome.verdict.reasons()
    report = outcome.report
    assert report["adapter"] == "blocks" and report["layer_hints"]
    assert report["student"]["weight_sha256"] == frozen == base_weight_sha256(student.model)
    assert "hint" in report["loss_history"]
    out = outcome.save(tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["m2kt"]["adapter"] == "blocks"

    loaded = load_ingested(out)
    fresh = tiny_bert(tokenizer, seed=1)
    loaded.check_student(fresh)
    ours = loaded.states(fresh, TEXTS)
    assert not has_block_adapter(fresh.model)  # reading put the student back as it was
    assert not torch.allclose(ours, loaded.states(fresh, TEXTS, adapted=False))

    theirs_model = PeftModel.from_pretrained(tiny_bert(tokenizer, seed=1).model, str(out)).eval()
    batch = fresh.tokenize(TEXTS)
    with torch.no_grad():
        hidden = theirs_model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    theirs = (hidden * mask).sum(1) / mask.sum(1)
    assert torch.allclose(ours, theirs, atol=1e-6)
    with torch.no_grad():
        expected = outcome.memory(ours).argmax(-1)
        assert torch.equal(loaded.memory(ours).argmax(-1), expected)
    concepts = loaded.memory.config.concepts
    predicted = m2kt.load_adapter(fresh, out).predict(TEXTS)  # the Python API's load path
    assert [p.concept for p in predicted] == [concepts[int(k)] for k in expected]


def test_a_refused_ingestion_restores_the_student_bit_for_bit(tokenizer, packet) -> None:
    """Demand a held-in gain no adapter can give: trained in its blocks, then refused."""
    student = tiny_bert(tokenizer, seed=2)
    state = {k: v.clone() for k, v in student.model.state_dict().items()}
    batch = student.tokenize(TEXTS)
    with torch.no_grad():
        output = student.model(**batch).last_hidden_state
    outcome = ingest(student, packet, settings(margins=Margins(held_in=-1.0)))
    assert not outcome.accepted and outcome.blocks is None
    assert len(outcome.report["loss_history"]["total"]) == 6  # it did train inside the blocks
    after = student.model.state_dict()
    assert list(after) == list(state)  # no wrapper left: the same modules, the same names
    assert all(torch.equal(state[k], after[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(student.model(**batch).last_hidden_state, output)
    assert outcome.report["student"]["weight_sha256_after"] == weight_sha256(student.model)


def test_a_student_that_already_carries_blocks_is_refused(tokenizer, packet) -> None:
    student = tiny_bert(tokenizer, seed=3)
    BlockAdapter(student.model, target_modules(student.model, student.layers), BlockSettings())
    with pytest.raises(UsageError, match="already carries an adapter"):
        ingest(student, packet, settings())


def test_the_decoder_l1_trains_lora_in_its_blocks_and_is_put_back(packet) -> None:
    """SmolLM2-135M as the frozen student, through the functions `ingest --adapter blocks`
    runs (hints paired on the packet's worked problems, the reader, the fit): LoRA on every
    attention and MLP projection of its 30 blocks, two steps, then taken out bit for bit."""
    from m2kt.ingest.fit_blocks import fit_in_blocks
    from m2kt.ingest.loss import LossWeights, Targets
    from m2kt.ingest.student_blocks import block_read, layer_hints
    from m2kt.models.load import load_model

    try:
        student = load_model("l1", max_length=64)
    except UsageError as error:
        pytest.skip(f"l1 is not installed: {error}")
    names = target_modules(student.model, student.layers)
    assert len(names) == 30 * 7 and "model.layers.29.mlp.down_proj" in names
    frozen = weight_sha256(student.model)
    texts = [t.probe for t in packet.manifest.traces or [] if t.steps[0] == "layer 0"][:4]
    hints, pairs, hint_layers = layer_hints(student, packet, texts, "last", "last")
    assert pairs == ((30, max(t for _, t in pairs)),) and hint_layers == [30]
    read = block_read(student, texts, 30, "last", hint_layers)
    with torch.no_grad():
        states, _ = read(torch.arange(len(texts)))
    labels = torch.tensor([0, 1, 0, 1])
    targets = Targets(student_anchors=states[:2], student_states=states, probe_labels=labels)
    result = fit_in_blocks(
        ("even", "odd"),
        targets,
        read,
        lambda: BlockAdapter(student.model, names, BlockSettings(steps=2), base_name=student.name),
        LossWeights(),
        FitSettings(select_steps=False),
        BlockSettings(steps=2),
        hints=hints,
        slots="free",
        ce_weight=1.0,
    )
    assert len(result.history["hint"]) == 2 and has_block_adapter(student.model)
    assert any(
        float(p.detach().abs().sum()) > 0
        for n, p in student.model.named_parameters()
        if "lora_B" in n
    )
    assert base_weight_sha256(student.model) == frozen
    result.adapter.remove()
    assert not has_block_adapter(student.model) and weight_sha256(student.model) == frozen
