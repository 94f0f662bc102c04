"""What a packet is worth before any student exists: do its concepts recognise new inputs?

A third of each concept's probes (those with at least three) is held out. Concepts are
extracted from the rest; each held-out probe's pooled state is then classified by the packet
alone: its linear readout where it carries one, else the nearest concept by centred cosine.
Beside it, the ceiling: a logistic-regression probe trained on the individual extraction
probes' states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from m2kt.concepts.geometry import linear_probe_accuracy
from m2kt.concepts.readout import Readout
from m2kt.concepts.sets import labelled_probes
from m2kt.concepts.split import Split


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


def measure_worth(
    states: torch.Tensor,
    split: Split,
    train_embeddings: torch.Tensor,
    cluster_labels: list[int] | None = None,
    readout: Readout | None = None,
    readout_states: torch.Tensor | None = None,
) -> Worth | None:
    """Held-out accuracy of `train_embeddings` [K', d] and of the linear-probe ceiling.

    `cluster_labels` maps each of K' discovered concepts to the spec concept most of its
    extraction probes belong to (clustering); without it, row k is spec concept k. `readout`
    (default: the centroids) is how the packet classifies a state, reading `readout_states`
    (default `states`; a readout over several layers reads them side by side). The ceiling
    is a linear probe on `states`, the packet's own layer.
    """
    if not split.heldout or len(split.train) < 2:
        return None
    held = states[split.heldout]
    truth = torch.tensor(split.heldout_labels)
    read = held if readout_states is None else readout_states[split.heldout]
    predicted = (readout or Readout("centroid")).scores(read, train_embeddings).argmax(1)
    if cluster_labels is not None:
        predicted = torch.as_tensor(cluster_labels)[predicted]
    index, labels = labelled_probes(split.train)
    ceiling = linear_probe_accuracy(states[index], labels, held, truth, len(split.train))
    return Worth(
        packet_accuracy=float((predicted == truth).float().mean()),
        linear_probe_accuracy=ceiling,
        chance=1.0 / len(split.train),
        heldout=len(split.heldout),
    )
