"""Sentence embeddings from any Hugging Face encoder: mean pooling over tokens, L2-normalised.

A `TextEncoder` is what a `ModelView` of an encoder gives the patch side (`view.encoder()`);
models are loaded only through `m2kt.models.load_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from m2kt.errors import UsageError
from m2kt.models.fingerprint import weight_sha256
from m2kt.progress import Progress


@dataclass
class TextEncoder:
    """A frozen encoder and its tokenizer, used only through forward passes.

    `name` identifies the model in provenance; `max_length` truncates long inputs (news
    articles) so that cost stays bounded and predictable.
    """

    name: str
    model: Any  # a transformers PreTrainedModel: has .config and returns last_hidden_state
    tokenizer: Any
    max_length: int = 256

    def __post_init__(self) -> None:
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None
    ) -> torch.Tensor:
        """Embed `texts` into a float32 tensor [N, width] with unit rows."""
        if len(texts) == 0:
            return torch.zeros(0, self.width)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        out = torch.empty(len(texts), self.width)
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            out[index] = self.embed_batch([texts[i] for i in index])[0]
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
        return out

    def embed_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, int]:
        """One batch: unit embeddings [len(texts), width], with gradients when the weights
        require them (full fine-tuning), and the number of tokens read."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        tokens = int(batch["attention_mask"].sum())
        return torch.nn.functional.normalize(pooled.float(), dim=-1), tokens

    @cached_property
    def weight_sha256(self) -> str:
        """Computed once: the weights are frozen, and hashing E3 reads 440 MB."""
        return weight_sha256(self.model)


def from_pretrained_dir(path: Path, name: str, max_length: int) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # missing weights are judged below, not by a warning
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model, info = AutoModel.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load a Hugging Face model from {path}: {exc}",
            "the directory needs config.json, weights and tokenizer files",
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _drop_unsaved_pooler(model, info.get("missing_keys", []), path)
    return TextEncoder(name=name, model=model, tokenizer=tokenizer, max_length=max_length)


def _drop_unsaved_pooler(model: Any, missing: list[str], path: Path) -> None:
    """Weights absent from the checkpoint would be drawn at random on every load, and the model's
    hash (which adapters and packets are bound to) with them. A pooler nobody saved is unused
    (sentences are mean-pooled), so it is removed; any other missing weight is refused."""
    pooler = [key for key in missing if key.split(".")[0] == "pooler"]
    if pooler and getattr(model, "pooler", None) is not None:
        model.pooler = None
    others = sorted(set(missing) - set(pooler))
    if others:
        raise UsageError(
            f"{path} lacks {len(others)} weights of its architecture ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}): they would be random on every load",
            "save the whole model with save_pretrained, or pass the directory it came from",
        )
