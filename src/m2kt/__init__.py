"""m2kt: move what one neural network knows into another of a different architecture.

The calls a user needs (docs/python-api.md), loaded on first use so that `import m2kt` stays
cheap and the package's lower layers never load the upper ones. (The method folders are
subpackages, `m2kt.extract`, `m2kt.ingest`, so the calls are named `extract_packet` and
`ingest_packet`.)

    import m2kt
    teacher, student = m2kt.load_model("e1"), m2kt.load_model("e2")
    packet = m2kt.extract_packet(teacher, "topics").packet
    ingestion = m2kt.ingest_packet(student, packet, out="adapters/topics")
    m2kt.load_adapter(student, "adapters/topics").predict(["The striker scored twice"])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name → (module, attribute): what `m2kt.<name>` is.
PUBLIC: dict[str, tuple[str, str]] = {
    "load_model": ("m2kt.models", "load_model"),
    "load_spec": ("m2kt.concepts", "load_spec"),
    "load_packet": ("m2kt.packet", "load_packet"),
    "verify_packet": ("m2kt.packet", "verify_packet"),
    "generate_keypair": ("m2kt.packet", "generate_keypair"),
    "extract_packet": ("m2kt.api", "extract_packet"),
    "ExtractionSettings": ("m2kt.extract", "ExtractionSettings"),
    "ingest_packet": ("m2kt.api", "ingest_packet"),
    "IngestSettings": ("m2kt.ingest", "IngestSettings"),
    "load_adapter": ("m2kt.api", "load_adapter"),
    "merge_packets": ("m2kt.merge", "merge_packets"),
    "train_patch": ("m2kt.patch", "train_patch"),
    "transfer_patch": ("m2kt.patch", "transfer_patch_packet"),
    "load_patched_model": ("m2kt.patch", "load_patched_model"),
    "load_task": ("m2kt.tasks", "load_task"),
}

__all__ = ["__version__", *PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in PUBLIC:
        raise AttributeError(f"module 'm2kt' has no attribute {name!r}")
    module, attribute = PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
