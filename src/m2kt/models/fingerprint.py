"""Identify a model by its weights, and size them, so that packets name exactly what they read."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def weight_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over the state dict in name order: identifies the weights, not the file.

    Two loads of one checkpoint hash alike whatever the file format (GGUF, safetensors, ONNX),
    which is what a patch or packet needs to refuse a model other than the one it was made for.
    """
    return state_sha256(module.state_dict())


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors in name order (names and raw bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes the loaded weights occupy (state dict, buffers included)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())
