"""Run the teacher over probe inputs in batches and keep only small summaries of each.

Per probe: the pooled state at each requested layer, and the attention map of each requested
layer with heads averaged and positions resampled to a fixed length. Full activations live for
one batch only, so memory does not grow with the number of probes or layers. Under a launcher
(`m2kt.distributed`) each process reads every world-size-th batch and the summaries are put
back together in order, identical to a single process's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from m2kt import distributed
from m2kt.models.state_cache import StateCache
from m2kt.models.view import ModelView, Pooling
from m2kt.progress import Progress

Reading = tuple[Pooling, int]  # how a sequence is pooled, and at which hidden layer


@dataclass(frozen=True)
class ProbeReadings:
    """`states[(pooling, layer)]` [N, d]; `attention` [N, len(attention_layers), L, L]."""

    texts: list[str]
    states: dict[Reading, torch.Tensor]
    attention: torch.Tensor | None
    attention_layers: list[int]

    def side_by_side(self, pooling: Pooling, layers: Sequence[int]) -> torch.Tensor:
        """[N, len(layers) · d]: every text's states at `layers`, concatenated in that order
        (what a readout over several layers reads)."""
        return torch.cat([self.states[(pooling, n)] for n in layers], dim=-1)


def read_probes(
    view: ModelView,
    texts: Sequence[str],
    layers: Sequence[int],
    attention_layers: Sequence[int] = (),
    *,
    poolings: Sequence[Pooling] = (),
    attention_length: int = 16,
    batch_size: int = 16,
    truncate: bool = False,
    progress: Progress | None = None,
) -> ProbeReadings:
    """Read every text once; `layers` and `attention_layers` are already-resolved indices.

    Each layer is pooled in each of `poolings` (default: the view's own pooling). Readings
    come back on the CPU whatever device the model runs on.
    """
    keys = [(p, layer) for p in (poolings or [view.pooling]) for layer in layers]
    cache = view.state_cache
    if cache is not None and not attention_layers and distributed.current().size == 1:
        return _read_through_cache(view, cache, texts, keys, batch_size, truncate, progress)
    states: dict[Reading, list[tuple[int, torch.Tensor]]] = {key: [] for key in keys}
    maps: list[tuple[int, torch.Tensor]] = []
    world = distributed.current()
    starts = range(0, len(texts), batch_size)
    mine = [start for i, start in enumerate(starts) if world.owns(i)]
    total = sum(len(texts[start : start + batch_size]) for start in mine)
    done = 0
    with torch.no_grad():
        for start in mine:
            chunk = texts[start : start + batch_size]
            capture = view.run(
                chunk,
                hidden_layers=layers,
                attention_layers=attention_layers,
                truncate=truncate,
            )
            for pooling, layer in keys:
                pooled = view.pool(capture.hidden[layer], capture.mask, pooling)
                states[(pooling, layer)].append((start, pooled.float().cpu()))
            if attention_layers:
                per_layer = [
                    aggregate_attention(capture.attention[layer], capture.mask, attention_length)
                    for layer in attention_layers
                ]
                maps.append((start, torch.stack(per_layer, dim=1)))
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return ProbeReadings(
        texts=list(texts),
        states={key: distributed.assemble(parts, len(texts)) for key, parts in states.items()},
        attention=distributed.assemble(maps, len(texts)) if attention_layers and texts else None,
        attention_layers=list(attention_layers),
    )


def aggregate_attention(weights: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    """[B, H, T, T] attention → [B, length, length]: heads averaged, real tokens resampled.

    Averaging heads makes the map independent of the head count; resampling the real-token
    block by area (and renormalising rows to sum to 1) makes it independent of the tokenizer's
    sequence length, so a student of another architecture can compare its own maps with it.
    """
    out = torch.empty(weights.shape[0], length, length)
    for row in range(weights.shape[0]):
        keep = mask[row].bool()
        block = weights[row][:, keep][:, :, keep].float().mean(dim=0).cpu()
        resized = F.interpolate(block[None, None], size=(length, length), mode="area")[0, 0]
        out[row] = resized / resized.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    return out


def _read_through_cache(
    view: ModelView,
    cache: StateCache,
    texts: Sequence[str],
    keys: list[Reading],
    batch_size: int,
    truncate: bool,
    progress: Progress | None,
) -> ProbeReadings:
    """Pooled states only: the cached ones looked up, the rest read (and cached). A text found
    in the cache is still counted as read by the view."""
    names = {
        key: f"{view.weight_sha256}:{view.context}:{key[0]}:{key[1]}:{truncate}" for key in keys
    }
    found = {key: cache.lookup(names[key], texts) for key in keys}
    missing = [i for i in range(len(texts)) if any(i not in found[key] for key in keys)]
    view.count_read(len(texts) - len(missing))
    if missing:
        view.state_cache = None  # read the missing ones the ordinary way
        try:
            fresh = read_probes(
                view,
                [texts[i] for i in missing],
                sorted({layer for _, layer in keys}),
                poolings=list(dict.fromkeys(p for p, _ in keys)),
                batch_size=batch_size,
                truncate=truncate,
                progress=progress,
            )
        finally:
            view.state_cache = cache
        for key in keys:
            cache.store(names[key], [texts[i] for i in missing], fresh.states[key])
            found[key] |= dict(zip(missing, fresh.states[key], strict=True))
    states = {
        key: torch.stack([found[key][i] for i in range(len(texts))])
        if texts
        else torch.zeros(0, view.width)
        for key in keys
    }
    return ProbeReadings(list(texts), states, None, [])
