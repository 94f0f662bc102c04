"""Which concepts of two teachers mean the same thing, and which share only a name.

In the reference teacher's space (after `align`), a concept of the other teacher whose nearest
reference concept has its name is a **duplicate**; one whose nearest reference concept has
another name is a **conflict** (same name, distant meaning). Two concepts with different names
are an **alias** (different names, same meaning) when each is the other's nearest and their
cosine (centred on the anchors' mean) is at least ALIAS_COSINE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from m2kt.merge.align import Alignment, align, similarity
from m2kt.packet import Packet

Kind = Literal["duplicate", "conflict", "alias"]
ALIAS_COSINE = 0.8
ConceptRef = tuple[int, int]  # (packet index, concept index)


@dataclass(frozen=True)
class Finding:
    kind: Kind
    first: ConceptRef
    second: ConceptRef
    similarity: float | None  # cosine in the first packet's space; None when not aligned
    reason: str


def same_name(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def compare(packets: list[Packet], i: int, j: int) -> tuple[list[Finding], Alignment]:
    """Findings between packet i (the reference space) and packet j."""
    a, b = packets[i].manifest.concepts or [], packets[j].manifest.concepts or []
    named = [
        (p, q) for p in range(len(a)) for q in range(len(b)) if same_name(a[p].name, b[q].name)
    ]
    alignment = align(packets[i], packets[j])
    if alignment.cal is None:
        reason = f"same name; meaning not checked ({alignment.anchors} shared texts)"
        return [Finding("duplicate", (i, p), (j, q), None, reason) for p, q in named], alignment
    sim = similarity(packets[i], packets[j], alignment)
    nearest_in_a, nearest_in_b = sim.argmax(0).tolist(), sim.argmax(1).tolist()
    findings = []
    for p, q in named:
        value = round(float(sim[p, q]), 4)
        if nearest_in_a[q] == p:
            findings.append(Finding("duplicate", (i, p), (j, q), value, "same name, same meaning"))
        else:
            closest = a[nearest_in_a[q]].name
            reason = f"same name, distant meaning (nearest: {closest!r})"
            findings.append(Finding("conflict", (i, p), (j, q), value, reason))
    for q, p in enumerate(nearest_in_a):
        close = nearest_in_b[p] == q and float(sim[p, q]) >= ALIAS_COSINE
        if close and not same_name(a[p].name, b[q].name):
            value = round(float(sim[p, q]), 4)
            findings.append(
                Finding("alias", (i, p), (j, q), value, "different names, same meaning")
            )
    return findings, alignment
