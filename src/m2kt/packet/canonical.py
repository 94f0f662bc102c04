"""Canonical JSON and the packet digest.

A packet's identity must not depend on how a JSON library happened to order keys or space
items, so manifests are written in one canonical form and readers refuse any other form.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

DIGEST_DOMAIN = b"m2kt-packet-v1\x00"


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys, no insignificant whitespace, and no NaN or infinity."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def strict_loads(data: bytes) -> Any:
    """Parse JSON, refusing duplicate keys, NaN/Infinity and numbers that overflow to infinity.

    Raises ValueError (which includes UnicodeDecodeError and JSONDecodeError), also for input
    nested too deeply for the parser's recursion (`[[[[…` is a cheap attack on any JSON reader).
    """
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def packet_digest(manifest_bytes: bytes, tensor_bytes: bytes) -> str:
    """The content address of a packet: independent of its signature and container bytes."""
    inner = hashlib.sha256(manifest_bytes).digest() + hashlib.sha256(tensor_bytes).digest()
    return "sha256:" + hashlib.sha256(DIGEST_DOMAIN + inner).hexdigest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows to infinity")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in packet JSON")
