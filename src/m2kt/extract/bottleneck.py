"""Bottleneck probing: a concept is the mean pooled state of its probes at one layer.

The simplest reading of what a layer encodes, and the reference the other methods refine.
"""

from __future__ import annotations

import torch

from m2kt.concepts.sets import ConceptSet, Group, from_groups

NAME = "bottleneck"


def bottleneck(states: torch.Tensor, layer: int, groups: list[Group]) -> ConceptSet:
    """Concepts from the pooled states [N, d] of all probes at `layer`."""
    return from_groups(states, groups, layer, NAME)
