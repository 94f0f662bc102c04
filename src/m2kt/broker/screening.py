"""The safety screen every upload passes before it is stored.

The broker knows nothing of models, so it screens what a packet says in words: a concept whose
name and probes cover most of the content words of one of the safety package's unsafe-concept
descriptions is refused. Screening by meaning (embeddings) belongs to the safety auditor; a
`Registry` takes any `Screen`, so a deployment can pass that auditor's function instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from m2kt.packet import Packet
from m2kt.safety import default_unsafe_descriptions

Screen = Callable[[Packet], list[str]]  # reasons to refuse; empty means accepted

_WORD = re.compile(r"[a-z]{4,}")
COVERAGE = 0.6


def screen_packet(packet: Packet, descriptions: Sequence[str] | None = None) -> list[str]:
    """One reason per concept that reads like an unsafe-concept description."""
    described = [
        (d, set(_WORD.findall(d.lower()))) for d in descriptions or default_unsafe_descriptions()
    ]
    reasons = []
    for concept in packet.manifest.concepts or []:
        words = set(_WORD.findall(" ".join([concept.name, *concept.probes]).lower()))
        for description, wanted in described:
            if wanted and len(wanted & words) >= COVERAGE * len(wanted):
                reasons.append(f"concept {concept.id!r} reads like {description!r}")
                break
    return reasons
