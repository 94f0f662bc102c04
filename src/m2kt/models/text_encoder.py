"""Sentence embeddings from any Hugging Face encoder: mean pooling over tokens, L2-normalised."""

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


def load_text_encoder(spec: str, max_length: int = 256) -> TextEncoder:
    """Load an encoder by embedded-default id (`e1`, `e2`, `e3`) or Hugging Face directory.

    Embedded defaults are also accepted under the names they record in provenance
    (`e1:all-MiniLM-L6-v2`). A directory is read with `AutoModel`/`AutoTokenizer` in offline
    mode; a hub id is not fetched: download it once and pass the directory.
    """
    from m2kt.models import embedded

    short = spec.split(":", 1)[0].lower()
    if short in embedded.DEFAULTS and not Path(spec).exists():
        return embedded.DEFAULTS[short](max_length)
    path = Path(spec)
    if not path.is_dir():
        raise UsageError(
            f"unknown model {spec!r}: not an embedded default ({', '.join(embedded.DEFAULTS)}) "
            "nor a local directory",
            "pass e1/e2/e3 or the path of a Hugging Face model directory",
        )
    return from_pretrained_dir(path, name=str(path), max_length=max_length)


def from_pretrained_dir(path: Path, name: str, max_length: int) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load a Hugging Face model from {path}: {exc}",
            "the directory needs config.json, weights and tokenizer files",
        ) from None
    return TextEncoder(name=name, model=model, tokenizer=tokenizer, max_length=max_length)
