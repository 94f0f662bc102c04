"""Fixtures shared across the suite: small but complete packets and a signing key pair."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from m2kt.packet import Packet, generate_keypair, make_provenance
from m2kt.packet.example import CREATED
from m2kt.packet.example import example_packet as knowledge_packet
from m2kt.packet.manifest import CONCEPTS_TENSOR

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs one worker per core, up to four (pyproject: -n auto): one thread each, or
    # the workers' thread pools fight over the same cores
    torch.set_num_threads(1)


def patch_packet(seed: int = 0) -> Packet:
    g = torch.Generator().manual_seed(seed)
    return Packet.create(
        kind="patch",
        provenance=make_provenance(method="transmiter", created_at=CREATED),
        tensors={"patch.W": torch.randn(5, 5, generator=g), "patch.b": torch.zeros(5)},
        patch={
            "adapter": "logit-residual-mlp",
            "task_classes": ["neg", "pos"],
            "aux_classes": ["cat", "dog", "car"],
            "templates": ["a {} text"],
            "config": {"lambda": 500.0},
        },
    )


@pytest.fixture(scope="session")
def e1_read():
    """e1's reading of texts at its last layer, loaded once (the safety test sets' checks by
    meaning). Here, not in a conftest.py of their folder: a second module named `conftest`
    replaces this one, and every `from conftest import …` after it fails to collect."""
    from m2kt.models.load import load_model
    from m2kt.safety.sides import model_reader

    view = load_model("e1")
    (layer,) = view.check_layers([-1])
    return model_reader(view, layer, view.pooling)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"), "alice")


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"), "mallory")


@pytest.fixture(scope="session")
def signed_packet_bytes(keys: tuple[Path, Path]) -> bytes:
    return knowledge_packet().signed(keys[0]).to_bytes()


# Tiny models built from a config in a second: real transformers code, random weights.
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from m2kt.models.embedded import e1_directory

    return AutoTokenizer.from_pretrained(e1_directory(), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_bert(tokenizer):
    from transformers import BertConfig, BertModel

    from m2kt.models.view import ModelView

    torch.manual_seed(0)
    model = BertModel(BertConfig(intermediate_size=64, max_position_embeddings=64, **TINY))
    return ModelView("tiny-bert", model, tokenizer)


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from m2kt.models.view import ModelView

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        intermediate_size=64,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        **TINY,
    )
    return ModelView("tiny-llama", LlamaForCausalLM(config), tokenizer, kind="causal-lm")


class PlainEncoder(torch.nn.Module):
    """A user's own model: embeddings and a stack of PyTorch transformer layers, no HF code."""

    def __init__(self, vocab: int, width: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
            for _ in range(layers)
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, src_key_padding_mask=~attention_mask.bool())
        return x


@pytest.fixture(scope="session")
def plain_view(tokenizer):
    from m2kt.models.view import ModelView

    torch.manual_seed(0)
    return ModelView("plain", PlainEncoder(tokenizer.vocab_size).eval(), tokenizer, context=64)


def shifted_concepts(packet: Packet) -> Packet:
    """The packet with concept k carrying concept k+1's vector: built to fail verification."""
    tensors = dict(packet.tensors)
    tensors[CONCEPTS_TENSOR] = torch.roll(tensors[CONCEPTS_TENSOR], 1, dims=0)
    return packet.rebuilt(tensors)


# A spec of two probes a concept: extraction sets none aside, so its packet has no
# verification probes at all; and the user's own sentences of its concepts, written apart
# from it (8 a concept), for `ingest --verify-on`.
TWO_PROBES = """
concepts:
  - name: sport
    probes: ["The striker scored twice in the cup final.", "She won the marathon in record time."]
  - name: business
    probes: ["Shares fell after profits missed forecasts.", "The bank raised interest rates again."]
  - name: weather
    probes: ["Heavy rain is expected across the north tomorrow.", "A heatwave will last all week."]
"""
MINE = {
    "sport": [
        "The goalkeeper saved a penalty in the last minute.",
        "The team won the league title on Saturday.",
        "He hit a century in the cricket test match.",
        "The tennis champion lost in the first round.",
        "Fans cheered as the runners crossed the finish line.",
        "The coach was sacked after ten defeats.",
        "She swam the fastest lap at the Olympic trials.",
        "The rugby side scored three tries in the second half.",
    ],
    "business": [
        "The company reported record quarterly profits.",
        "Investors sold their stocks as the market slumped.",
        "The firm announced a merger with its biggest rival.",
        "Inflation pushed the central bank to act.",
        "The retailer cut jobs after sales fell.",
        "Oil prices rose sharply on the stock exchange.",
        "The startup raised millions from venture capital.",
        "The chief executive resigned after the accounts scandal.",
    ],
    "weather": [
        "Snow and ice will cover the roads tonight.",
        "Strong winds and thunderstorms are forecast for the weekend.",
        "Temperatures will drop below freezing by morning.",
        "Fog will linger along the coast until noon.",
        "Sunny spells and light showers are expected tomorrow.",
        "The hurricane is moving toward the coast.",
        "A cold front brings rain to the west.",
        "The forecast says it will be hot and dry all week.",
    ],
}


def write_csv(path: Path, rows: dict[str, list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([t, label] for label, texts in rows.items() for t in texts)
    return path
