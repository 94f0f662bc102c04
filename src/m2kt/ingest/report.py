"""The ingestion report's shape: what `ingest()` returns and writes as ingestion_report.json.

Typed so that a key added, renamed or read wrongly is a type error where the report is built and
where it is read (the CLI, the demo, the merge suite), not a KeyError at run time. The nested
parts that mirror other records (settings, checks, the screen's audit) stay plain JSON objects.
"""

from __future__ import annotations

from typing import Any, TypedDict


class PacketSide(TypedDict):
    digest: str
    signer: str | None  # the fingerprint of the key that signed it
    parents: list[str]
    teacher: list[dict[str, Any]]  # the models the packet names


class StudentSide(TypedDict):
    id: str
    architecture: str
    weight_sha256: str
    weight_sha256_after: str
    layer: int
    pooling: str
    name_prior: dict[str, Any]  # the weight of the names in its own anchors, and why


class Inputs(TypedDict):
    """Texts each model read, counted where the model reads them."""

    teacher: int  # from the packet's provenance
    student: int
    student_task: int
    student_anchors: int
    student_probes: int
    student_training: int
    student_safety_screen: int
    auditor_safety_screen: int  # texts an auditor model read (`--auditor`), else 0


class DroppedConcept(TypedDict):
    id: str
    name: str
    reason: str


class IngestionReport(TypedDict):
    m2kt_version: str
    accepted: bool
    verification: str  # verified, unverifiable (refused) or unverified (accepted on request)
    # the user's own sentences (--verify-on): file, sha256, distinct rows, repeats left out, n
    # judged, the three accuracies
    verified_on: dict[str, Any] | None
    packet: PacketSide
    student: StudentSide
    inputs: Inputs
    alignment: dict[str, Any] | None
    adapter: str  # memory or blocks
    layer_hints: list[list[int]]  # (student layer, teacher layer) pairs, blocks only
    trainable_parameters: int
    selection: Any  # the steps chosen on the held-out quarter
    settings: dict[str, Any]
    checks: list[dict[str, Any]]
    final_loss: dict[str, float]
    loss_history: dict[str, list[float]]
    safety_screen: dict[str, Any] | None
    dropped_concepts: list[DroppedConcept]
    notes: list[str]
    seconds: float
