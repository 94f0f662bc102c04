"""What a packet is worth before any student exists: do its concepts recognise new inputs?

A third of each concept's probes (those with at least three) is held out. Concepts are
extracted from the rest; each held-out probe's pooled state is then classified by the packet's
embeddings alone (nearest concept by centred cosine: a linear classifier whose weights are the
packet). Beside it, the ceiling: a logistic-regression probe trained on the individual
extraction probes' states, which a packet of one vector per concept cannot beat by much.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from m2kt.extract.concepts import Group
from m2kt.extract.geometry import concept_scores, linear_probe_accuracy


@dataclass(frozen=True)
class Split:
    train: list[Group]
    heldout: list[int]  # probe indices
    heldout_labels: list[int]  # concept index of each


@dataclass(frozen=True)
class Worth:
    packet_accuracy: float
    linear_probe_accuracy: float
    chance: float
    heldout: int

    def as_measurements(self) -> dict[str, float | int]:
        return {
            "concept_probe_accuracy": round(self.packet_accuracy, 6),
            "linear_probe_accuracy": round(self.linear_probe_accuracy, 6),
            "chance_accuracy": round(self.chance, 6),
            "heldout_probes": self.heldout,
        }


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


def measure_worth(
    states: torch.Tensor,
    split: Split,
    train_embeddings: torch.Tensor,
    cluster_labels: list[int] | None = None,
) -> Worth | None:
    """Held-out accuracy of `train_embeddings` [K', d] and of the linear-probe ceiling.

    `cluster_labels` maps each of K' discovered concepts to the spec concept most of its
    extraction probes belong to (clustering); without it, row k is spec concept k.
    """
    if not split.heldout or len(split.train) < 2:
        return None
    held = states[split.heldout]
    truth = torch.tensor(split.heldout_labels)
    predicted = concept_scores(held, train_embeddings).argmax(1)
    if cluster_labels is not None:
        predicted = torch.as_tensor(cluster_labels)[predicted]
    index = [i for g in split.train for i in g.probes]
    labels = torch.tensor([k for k, g in enumerate(split.train) for _ in g.probes])
    ceiling = linear_probe_accuracy(states[index], labels, held, truth, len(split.train))
    return Worth(
        packet_accuracy=float((predicted == truth).float().mean()),
        linear_probe_accuracy=ceiling,
        chance=1.0 / len(split.train),
        heldout=len(split.heldout),
    )
