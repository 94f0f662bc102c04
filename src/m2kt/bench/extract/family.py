"""The frozen evaluation family of `m2kt bench extract`: four specs of different domains.

Each spec (`specs/<name>.yaml`, at least 8 probes a concept) has held-out sentences written
separately (`specs/<name>.heldout.yaml`) that no extraction sees. Both files were written before
any tuning of extraction and are frozen by sha256: a changed byte is refused, so nothing can be
tuned on them quietly. Tuning uses the shipped specs (`topics`, `arithmetic`) instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from m2kt.errors import UsageError

SPECS = Path(__file__).parent / "specs"

FROZEN: dict[str, str] = {
    "emotions.yaml": "6af23602c147f5356150e551bfaafcd36ec0e54db496a2552283b58321285977",
    "emotions.heldout.yaml": "37eec0d665169ad9cc4dad43472ed4f5c1212fafaa7dcdec0327469e8fee4c9e",
    "sciences.yaml": "a16ce9600d43a4403f196e019149cf4df6734f317971881f259d9a1ca89e9528",
    "sciences.heldout.yaml": "6e1e33a59f76f24026a61973596041b46fe3ea44faafda3ee60086a3c8a9de16",
    "sports.yaml": "e9a5c586a7a85762794661937fa264b39e58ab8b4fc8bd6a9312112ca823a3a1",
    "sports.heldout.yaml": "5ff3a03c06def3f7ca1ea3c4bf7954d4449f785737d903224ae79d8ef4b12706",
    "cooking.yaml": "923a1869624eae20e43885c177cc057122b60e03c6491a44f59afed5866b9503",
    "cooking.heldout.yaml": "ca62d076193fdac82abd45a3831c4dc70fb0f2c2fd6410d2025efd1cd2fcafec",
}
FAMILY: tuple[str, ...] = ("emotions", "sciences", "sports", "cooking")


@dataclass(frozen=True)
class FrozenSpec:
    """A family spec's file and its held-out sentences, concept id → texts in spec order."""

    name: str
    path: Path
    heldout: dict[str, list[str]]


def frozen_bytes(filename: str) -> bytes:
    """A family file's bytes, refused unless they hash to the frozen value."""
    data = (SPECS / filename).read_bytes()
    if hashlib.sha256(data).hexdigest() != FROZEN[filename]:
        raise UsageError(
            f"the frozen evaluation file {filename} has changed (sha256 differs)",
            "restore it from git: the family is held out and must not be edited or tuned on",
        )
    return data


def frozen_spec(name: str) -> FrozenSpec:
    """One spec of the family, checked against its hash, with its held-out sentences."""
    frozen_bytes(f"{name}.yaml")
    held = yaml.safe_load(frozen_bytes(f"{name}.heldout.yaml"))
    heldout = {concept: list(texts) for concept, texts in held["heldout"].items()}
    return FrozenSpec(name, SPECS / f"{name}.yaml", heldout)
