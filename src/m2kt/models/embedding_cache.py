"""Embeddings computed once per (model weights, inputs) and kept on disk as safetensors.

Benchmarks and repeated CLI runs embed the same texts with the same frozen models many times;
the cache key covers the weights, the truncation length and every text, so a hit is exact.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from m2kt.atomic import atomic_write_bytes
from m2kt.models.text_encoder import TextEncoder
from m2kt.progress import Progress


def cached_encode(
    encoder: TextEncoder,
    texts: Sequence[str],
    cache: Path | None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """`encoder.encode(texts)`, through `cache` when a directory is given."""
    return timed_cached_encode(encoder, texts, cache, progress)[0]


def timed_cached_encode(
    encoder: TextEncoder,
    texts: Sequence[str],
    cache: Path | None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, float]:
    """`encoder.encode(texts)` and the seconds it took, via `cache` when a directory is given.

    A cache hit returns the seconds measured when the entry was computed, so that reported
    costs are the real cost of encoding, not of reading a file.
    """
    if cache is None:
        return _timed_encode(encoder, texts, progress)
    key = hashlib.sha256(f"{encoder.weight_sha256}:{encoder.max_length}".encode())
    for text in texts:
        key.update(hashlib.sha256(text.encode("utf-8")).digest())
    path = cache / f"{key.hexdigest()[:32]}.safetensors"
    if path.is_file():
        with safe_open(path, "pt") as handle:
            seconds = float((handle.metadata() or {}).get("seconds", "nan"))
            return handle.get_tensor("embeddings"), seconds
    embeddings, seconds = _timed_encode(encoder, texts, progress)
    data = save({"embeddings": embeddings.contiguous()}, metadata={"seconds": repr(seconds)})
    atomic_write_bytes(path, data)
    return embeddings, seconds


def _timed_encode(
    encoder: TextEncoder, texts: Sequence[str], progress: Progress | None
) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    embeddings = encoder.encode(texts, progress=progress)
    return embeddings, time.perf_counter() - start
