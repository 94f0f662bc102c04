"""Multi-teacher merge: align teachers on shared probes, find duplicates, aliases and
conflicts, resolve them by a stated policy, keep each concept's provenance (docs/merge.md)."""

from m2kt.merge.compare import Finding
from m2kt.merge.pipeline import Merge, MergeSettings, merge_packets
from m2kt.merge.policy import POLICIES, Policy

__all__ = ["POLICIES", "Finding", "Merge", "MergeSettings", "Policy", "merge_packets"]
