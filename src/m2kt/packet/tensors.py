"""safetensors I/O with the manifest as the contract: header checked before data is decoded."""

from __future__ import annotations

import math
import struct

import torch
from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _save_safetensors

from m2kt.errors import LimitError, PacketFormatError, TensorError
from m2kt.packet.canonical import strict_loads
from m2kt.packet.limits import Limits
from m2kt.packet.manifest import DType, TensorSpec

_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_DTYPE_NAMES: dict[torch.dtype, DType] = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


def spec_of(tensor: torch.Tensor) -> TensorSpec:
    """The manifest entry describing `tensor`."""
    dtype = _DTYPE_NAMES.get(tensor.dtype)
    if dtype is None:
        raise TensorError(f"dtype {tensor.dtype} is not allowed in packets", "use float32/16/bf16")
    return TensorSpec(dtype=dtype, shape=list(tensor.shape))


def encode_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise tensors to safetensors bytes (deterministic: sorted, no metadata)."""
    for name, tensor in tensors.items():
        spec_of(tensor)
        if not torch.isfinite(tensor).all():
            raise TensorError(f"tensor {name} holds NaN or infinite values", "fix the producer")
    ready = {name: t.detach().to("cpu").contiguous() for name, t in sorted(tensors.items())}
    return _save_safetensors(ready)


def decode_tensors(
    data: bytes, declared: dict[str, TensorSpec], limits: Limits
) -> dict[str, torch.Tensor]:
    """Check the safetensors header against the manifest's `declared` table, then decode.

    Order matters: limits on the declared shapes first, then the header (names, dtypes, shapes,
    byte ranges) against the declaration, and only then the data, whose values must be finite.
    """
    _check_declared(declared, limits)
    header = _read_header(data, limits)
    names = set(header) - {"__metadata__"}
    if names != set(declared):
        missing, extra = sorted(set(declared) - names), sorted(names - set(declared))
        raise TensorError(f"tensors disagree with the manifest: missing {missing}, extra {extra}")
    for name, spec in declared.items():
        entry = header[name]
        if not isinstance(entry, dict):
            raise PacketFormatError(f"tensor header entry for {name} is malformed")
        dtype = _SAFETENSORS_DTYPES.get(str(entry.get("dtype")))
        if dtype != spec.dtype:
            raise TensorError(f"tensor {name} is {entry.get('dtype')}, manifest says {spec.dtype}")
        if entry.get("shape") != spec.shape:
            raise TensorError(
                f"tensor {name} has shape {entry.get('shape')}, manifest says {spec.shape}"
            )
    try:
        tensors = _load_safetensors(data)
    except Exception as exc:  # the Rust parser raises its own SafetensorError type
        raise PacketFormatError(f"tensors.safetensors is corrupt: {exc}") from None
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise TensorError(f"tensor {name} holds NaN or infinite values")
    return tensors


def _check_declared(declared: dict[str, TensorSpec], limits: Limits) -> None:
    if len(declared) > limits.max_tensors:
        raise LimitError(
            f"{len(declared)} tensors declared, over the limit of {limits.max_tensors}"
        )
    for name, spec in declared.items():
        if len(spec.shape) > limits.max_rank:
            raise LimitError(f"tensor {name} has rank {len(spec.shape)} > {limits.max_rank}")
        elements = math.prod(spec.shape)
        if elements > limits.max_tensor_elements:
            raise LimitError(
                f"tensor {name} declares {elements} elements, over the limit of "
                f"{limits.max_tensor_elements}"
            )


def _read_header(data: bytes, limits: Limits) -> dict[str, object]:
    if len(data) < 8:
        raise PacketFormatError("tensors.safetensors is truncated (no header)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > limits.max_tensor_header_bytes:
        raise LimitError(f"tensor header declares {length} bytes, over the limit")
    if 8 + length > len(data):
        raise PacketFormatError("tensors.safetensors is truncated (header runs past the end)")
    try:
        header = strict_loads(data[8 : 8 + length])
    except ValueError as exc:
        raise PacketFormatError(f"tensor header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise PacketFormatError("tensor header is not a JSON object")
    return header
