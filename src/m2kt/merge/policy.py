"""Which teacher's concept survives when two mean the same thing or share a name.

  confidence  the higher extraction confidence (leave-one-out probe consistency) wins
  recency     the packet created later wins
  priority    the packet listed first (or first in an explicit priority order) wins

Ties under confidence and recency fall back to priority, so the outcome is always determined.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

from m2kt.errors import UsageError
from m2kt.merge.compare import ConceptRef
from m2kt.packet import Packet

Policy = Literal["confidence", "recency", "priority"]
POLICIES: tuple[Policy, ...] = ("confidence", "recency", "priority")


def rank_order(count: int, priority: Sequence[int] | None) -> list[int]:
    """rank[p] = position of packet p in the priority order (0 is the most trusted)."""
    order = list(priority) if priority is not None else list(range(count))
    if sorted(order) != list(range(count)):
        raise UsageError(
            f"the priority order must list each packet once (0 … {count - 1}); got {order}"
        )
    return [order.index(p) for p in range(count)]


def winner(
    candidates: Sequence[ConceptRef], packets: Sequence[Packet], policy: Policy, rank: list[int]
) -> ConceptRef:
    def key(ref: ConceptRef) -> tuple[float, int]:
        p, k = ref
        if policy == "confidence":
            concepts = packets[p].manifest.concepts or []
            return (concepts[k].confidence, -rank[p])
        if policy == "recency":
            return (_timestamp(packets[p].manifest.provenance.created_at), -rank[p])
        return (0.0, -rank[p])

    return max(candidates, key=key)


def _timestamp(text: str) -> float:
    """Seconds since the epoch; an unreadable creation time counts as the oldest."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return float("-inf")
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
