"""Training that gives the same numbers whatever thread count the caller runs with.

PyTorch splits a matrix product or a reduction over its intra-op threads, and the split
changes the order of the floating-point sums: the same seed then trains a different network
on 1 and on 2 threads (the quick new-computation teacher scored 93.0% on one thread and 93.3%
on two). Small fits gain nothing from more threads anyway, so they run inside `one_thread()`:
one intra-op thread and PyTorch's deterministic algorithms, both put back as they were after.

What this does not fix: a CPU whose kernels differ (AVX-512 against AVX2 code paths in MKL or
in PyTorch's own kernels) can still round differently; docs/ingest.md states the spread
measured that way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread and deterministic algorithms inside; the caller's settings after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
