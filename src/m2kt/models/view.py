"""One uniform view of a model for reading out what it knows: hidden states, attention, outputs.

Extraction asks every teacher the same questions (what is the state at layer ℓ, where do the
heads look), whether it is a BERT encoder, a decoder LM or a user's own `torch.nn.Module`. The
view answers them through forward hooks that live for one call and are removed right after, so
the model is never edited and its own forward runs unchanged.

Layer numbering follows Hugging Face's `hidden_states`: hidden layer 0 is the input to the
first block (the embeddings), layer i (1…L) the output of block i. One difference: Hugging Face
applies a decoder's final norm to its last hidden state; here every layer is read the same way,
as its block wrote it. Attention layer i (1…L) is the attention inside block i, as
[batch, heads, T, T].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch
from torch import nn

from m2kt.errors import UsageError
from m2kt.models.fingerprint import parameter_bytes, weight_sha256
from m2kt.models.state_cache import StateCache
from m2kt.models.text_encoder import TextEncoder
from m2kt.progress import Progress

Kind = Literal["encoder", "causal-lm"]
Pooling = Literal["mean", "last"]
# Why a model reads a text: task data (the inputs a budget counts), task-agnostic anchors, or
# probes (a spec's probes, verification and held-in sets, safety texts, concept names).
Purpose = Literal["task", "anchor", "probe"]
PURPOSES: tuple[Purpose, ...] = ("task", "anchor", "probe")
ForwardCall = Callable[[nn.Module, dict[str, torch.Tensor]], Any]

_HUGE_CONTEXT = 1_000_000  # tokenizers without a limit report a sentinel around 1e30


class ProbeTooLongError(UsageError):
    """A probe has more tokens than the model's context."""

    default_hint = "shorten the probe, or pass --truncate to cut probes at the model's context"


class NoAttentionError(UsageError):
    """The model's attention modules do not expose their weights."""

    default_hint = "pass --no-attention to extract without attention patterns"


@dataclass
class Capture:
    """What one forward pass over a batch showed: token ids, mask, and the requested readings."""

    input_ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T], 1 for real tokens
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, T, d]
    attention: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, H, T, T]
    token_embeddings: torch.Tensor | None = None  # scaled embedding output, when asked for


class ModelView:
    """A frozen model, its tokenizer, and where its blocks, attention and embeddings are.

    `kind` decides the default pooling of a sequence into one vector: the mean over tokens for
    encoders, the last token (where a decoder's next prediction is made) for causal LMs.
    `context` is the longest input in tokens. `forward` calls the model on a tokenised batch
    (default: `model(**batch)`, the Hugging Face convention).

    `reads` counts every text the model reads, by purpose (`reading(purpose)` sets it; probes
    unless said otherwise): the one place where inputs are counted, so that a report or a
    benchmark takes its counts from what was read, not from a formula. A text read from a
    state cache (`m2kt.models.state_cache`) counts as read: the cache saves time, not inputs.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        tokenizer: Any,
        *,
        kind: Kind = "encoder",
        context: int | None = None,
        layers: Sequence[nn.Module] | None = None,
        token_embedding: nn.Module | None = None,
        forward: ForwardCall | None = None,
        checkpoint_bytes: int | None = None,
    ) -> None:
        self.name = name
        self.model = model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.tokenizer = tokenizer
        self.kind: Kind = kind
        self.pooling: Pooling = "mean" if kind == "encoder" else "last"
        self.layers = list(layers) if layers is not None else find_blocks(model)
        if not self.layers:
            raise UsageError(
                f"cannot find the transformer blocks of {name}",
                "pass layers=[...] (the block modules in order) to ModelView",
            )
        self.attention_modules = [find_attention(block, model) for block in self.layers]
        self.token_embedding = token_embedding or _find_token_embedding(model)
        self._forward = forward or _hugging_face_forward
        self.context = context or _context_of(model, tokenizer)
        self.checkpoint_bytes = checkpoint_bytes or parameter_bytes(model)
        self.reads: Counter[str] = Counter()
        self._purpose: Purpose = "probe"
        self.state_cache: StateCache | None = None  # pooled states read before (benchmarks)
        switch = getattr(model, "set_attn_implementation", None)
        if callable(switch):
            # Fused attention kernels do not return their weights; the eager path does, with
            # the same outputs up to float rounding.
            with suppress(ValueError, AttributeError):
                switch("eager")

    @contextmanager
    def reading(self, purpose: Purpose) -> Iterator[None]:
        """Count the texts read inside the block under `purpose`."""
        if purpose not in PURPOSES:
            raise UsageError(f"unknown reading purpose {purpose!r}; one of {', '.join(PURPOSES)}")
        before, self._purpose = self._purpose, purpose
        try:
            yield
        finally:
            self._purpose = before

    def count_read(self, texts: int) -> None:
        """Count `texts` as read under the current purpose (`run` does this itself)."""
        self.reads[self._purpose] += texts

    def reads_since(self, before: Counter[str]) -> dict[str, int]:
        """Texts read per purpose since `before` (a copy of `reads`), every purpose named."""
        return {p: self.reads[p] - before[p] for p in PURPOSES}

    def encoder(self, max_length: int = 256) -> TextEncoder:
        """Sentence embeddings of this model (mean-pooled final states, unit length), as the
        patch side reads them; `max_length` truncates long inputs so cost stays bounded."""
        if self.kind != "encoder":
            raise UsageError(
                f"{self.name} is a causal language model; patches read an encoder's sentence "
                "embeddings",
                "use e1, e2, e3 or the Hugging Face directory of an encoder",
            )
        return TextEncoder(self.name, self.model, self.tokenizer, max_length)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None
    ) -> torch.Tensor:
        """Unit sentence embeddings [N, width] (see `encoder`), counted as read like `run`."""
        self.count_read(len(texts))
        return self.encoder().encode(texts, batch_size, progress)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def width(self) -> int:
        config = getattr(self.model, "config", None)
        size = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        if size:
            return int(size)
        counted = self.reads.copy()  # a look at the shape, not an input
        width = self.run(["a"], hidden_layers=[self.num_layers]).hidden[self.num_layers].shape[-1]
        self.reads = counted
        return int(width)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (and so where its inputs must go)."""
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> ModelView:
        """Move the model to `device` (its inputs follow it in `run`); returns the view."""
        self.model.to(device)
        return self

    @property
    def architecture(self) -> str:
        config = getattr(self.model, "config", None)
        names = getattr(config, "architectures", None)
        return names[0] if names else type(self.model).__name__

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__)

    @cached_property
    def weight_sha256(self) -> str:
        return weight_sha256(self.model)

    def check_layers(self, layers: Sequence[int], what: str = "hidden") -> list[int]:
        """Resolve negative indices and refuse any out of range, naming the valid range.

        Duplicates (say -1 and the last index) are dropped, keeping the first.
        """
        low = 0 if what == "hidden" else 1
        resolved: list[int] = []
        for layer in layers:
            index = layer + self.num_layers + 1 if layer < 0 else layer
            if not low <= index <= self.num_layers:
                raise UsageError(
                    f"{what} layer {layer} is out of range for {self.name}, which has "
                    f"{self.num_layers} blocks (valid: {low}…{self.num_layers}, or negative)",
                    "pick layers within the range in the concept spec or with --layer",
                )
            if index not in resolved:
                resolved.append(index)
        return resolved

    def tokenize(self, texts: Sequence[str], truncate: bool = False) -> dict[str, torch.Tensor]:
        """Pad a batch; a text over the context is an error unless `truncate`."""
        limit = {"truncation": True, "max_length": self.context} if truncate else {}
        batch = self.tokenizer(list(texts), padding=True, return_tensors="pt", **limit)
        lengths = batch["attention_mask"].sum(1).tolist()
        for text, length in zip(texts, lengths, strict=True):
            if length > self.context:
                shown = text if len(text) <= 60 else text[:57] + "..."
                raise ProbeTooLongError(
                    f"probe {shown!r} is {length} tokens, over the {self.context}-token "
                    f"context of {self.name}"
                )
        return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def run(
        self,
        texts: Sequence[str],
        *,
        hidden_layers: Sequence[int] = (),
        attention_layers: Sequence[int] = (),
        embedding_scale: torch.Tensor | None = None,
        embedding_baseline: torch.Tensor | None = None,
        truncate: bool = False,
    ) -> Capture:
        """One forward pass over `texts`, keeping only the readings asked for.

        `embedding_scale` [B] moves the token-embedding output (positions untouched) from
        `embedding_baseline` ([T, d] or [B, T, d]; default zeros) towards itself,
        baseline + scale · (embedding − baseline), and keeps the result, with gradients, in
        `Capture.token_embeddings`: the path integrated gradients walk. Gradients flow only
        when called with grad enabled.
        """
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts, truncate).items()}
        self.count_read(len(texts))
        capture = Capture(batch["input_ids"], batch["attention_mask"])
        path = None if embedding_scale is None else (embedding_scale, embedding_baseline)
        with self._hooks(capture, hidden_layers, attention_layers, path):
            self._forward(self.model, batch | self._extra_arguments(attention_layers))
        missing = [layer for layer in attention_layers if layer not in capture.attention]
        if missing:
            raise NoAttentionError(
                f"{self.name} does not expose attention weights (layers {missing[:5]})"
            )
        return capture

    def pool(
        self, hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling | None = None
    ) -> torch.Tensor:
        """[B, T, d] → [B, d]: mean over real tokens, or the last real token.

        `pooling` defaults to the view's own (mean for encoders, last for causal LMs).
        """
        if (pooling or self.pooling) == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(mask)]

    def _extra_arguments(self, attention_layers: Sequence[int]) -> dict[str, Any]:
        is_hugging_face = hasattr(self.model, "config") and hasattr(self.model, "can_generate")
        if attention_layers and self._forward is _hugging_face_forward and is_hugging_face:
            return {"output_attentions": True}  # some (MPNet) return weights only when asked
        return {}

    @contextmanager
    def _hooks(
        self,
        capture: Capture,
        hidden_layers: Sequence[int],
        attention_layers: Sequence[int],
        path: tuple[torch.Tensor, torch.Tensor | None] | None,
    ) -> Iterator[None]:
        handles = []

        def keep_hidden(layer: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                capture.hidden[layer] = output[0] if isinstance(output, tuple) else output

            return hook

        def keep_input(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            capture.hidden[0] = args[0] if args else kwargs["hidden_states"]

        def keep_attention(layer: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                weights = _attention_weights(output)
                if weights is not None:
                    capture.attention[layer] = weights

            return hook

        def scale_embeddings(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            assert path is not None
            scale, baseline = path
            scale = scale.view(-1, *([1] * (output.ndim - 1))).to(output.dtype)
            start = torch.zeros_like(output) if baseline is None else baseline.to(output)
            # A leaf of its own: the frozen weights carry no gradient, this tensor must.
            moved = start + scale * (output - start)
            scaled = moved.detach().requires_grad_(torch.is_grad_enabled())
            capture.token_embeddings = scaled
            return scaled

        try:
            for layer in hidden_layers:
                if layer == 0:
                    handles.append(
                        self.layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)
                    )
                else:
                    handles.append(self.layers[layer - 1].register_forward_hook(keep_hidden(layer)))
            for layer in attention_layers:
                module = self.attention_modules[layer - 1]
                if module is not None:
                    handles.append(module.register_forward_hook(keep_attention(layer)))
            if path is not None:
                if self.token_embedding is None:
                    raise UsageError(f"cannot find the token embedding of {self.name}")
                handles.append(self.token_embedding.register_forward_hook(scale_embeddings))
            yield
        finally:
            for handle in handles:
                handle.remove()


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token in each row, whichever side the padding is on."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's transformer blocks, in order.

    Hugging Face models name their block class in `_can_record_outputs["hidden_states"]`; for
    others, the largest `nn.ModuleList` whose members share one type is taken.
    """
    block_class = _recorded_class(model, "hidden_states")
    if block_class is not None:
        blocks = [m for m in model.modules() if isinstance(m, block_class)]
        if blocks:
            return blocks
    best: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best):
            types = {type(child) for child in module}
            if len(types) == 1:
                best = list(module)
    return best


def find_attention(block: nn.Module, model: nn.Module) -> nn.Module | None:
    """The self-attention module inside `block`, or None when there is none to hook."""
    attention_class = _recorded_class(model, "attentions")
    candidates = list(block.named_modules())
    for wanted in (attention_class, nn.MultiheadAttention):
        found = [m for _, m in candidates if wanted is not None and isinstance(m, wanted)]
        if found:
            return found[0]
    named = [
        m for n, m in candidates if n and n.split(".")[-1] in ("self_attn", "attention", "attn")
    ]
    return named[0] if named else None


def _recorded_class(model: nn.Module, key: str) -> type[nn.Module] | None:
    """The module class a Hugging Face model records `key` from (a class or an OutputRecorder)."""
    recorded = getattr(model, "_can_record_outputs", None) or {}
    target = recorded.get(key)
    target = getattr(target, "target_class", target)
    return target if isinstance(target, type) and issubclass(target, nn.Module) else None


def _attention_weights(output: Any) -> torch.Tensor | None:
    """The attention probabilities in a module's output tuple, as [B, H, T, T]."""
    if not isinstance(output, tuple):
        return None
    for item in output[1:]:
        if (
            isinstance(item, torch.Tensor)
            and item.ndim in (3, 4)
            and item.shape[-1] == item.shape[-2]
        ):
            return item if item.ndim == 4 else item.unsqueeze(1)
    return None


def _find_token_embedding(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            found = getter()
            return found if isinstance(found, nn.Module) else None
        except NotImplementedError:
            pass
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


def _context_of(model: nn.Module, tokenizer: Any) -> int:
    """Longest input in tokens: the lesser of the model's positions and the tokenizer's limit."""
    limits = []
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if positions:
        # RoBERTa-style models (MPNet too) offset positions by the padding index.
        offset = 2 if getattr(model.config, "model_type", "") in ("roberta", "mpnet") else 0
        limits.append(int(positions) - offset)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < _HUGE_CONTEXT:
        limits.append(int(tokenizer_limit))
    return min(limits) if limits else 512


def _hugging_face_forward(model: nn.Module, batch: dict[str, Any]) -> Any:
    return model(**batch)
