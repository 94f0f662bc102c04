"""Each concept's probes split once into extraction probes and verification probes.

Extraction reads only the first kind; the held-out probes travel in the packet so the student
is verified on texts the teacher's concepts were never fitted to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from m2kt.concepts.sets import Group


@dataclass(frozen=True)
class Split:
    train: list[Group]
    heldout: list[int]  # probe indices
    heldout_labels: list[int]  # concept index of each


def holdout_split(groups: list[Group], seed: int) -> Split:
    """Hold out ⌊n/3⌋ probes of every concept with n ≥ 3, chosen by a seeded permutation.

    Each concept's permutation depends on the seed and its id alone, not on which concepts come
    before it: two packets of one concept (two teachers, or two halves of a spec) hold out the
    same probes, so a merge never extracts from a text another packet verifies on.
    """
    train, heldout, labels = [], [], []
    for k, group in enumerate(groups):
        count = len(group.probes) // 3 if len(group.probes) >= 3 else 0
        digest = hashlib.sha256(f"{seed}:{group.id}".encode()).hexdigest()
        generator = torch.Generator().manual_seed(int(digest[:15], 16))
        order = torch.randperm(len(group.probes), generator=generator).tolist()
        held = sorted(order[:count])
        heldout += [group.probes[i] for i in held]
        labels += [k] * count
        kept = [p for i, p in enumerate(group.probes) if i not in held]
        train.append(Group(group.name, group.id, kept))
    return Split(train, heldout, labels)
