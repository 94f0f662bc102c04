"""`one_thread`: what the fits run inside, and that the caller gets its own settings back."""

from __future__ import annotations

import torch

from m2kt.reproducible import one_thread


def test_one_thread_inside_and_the_callers_settings_after() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
            assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 2
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
