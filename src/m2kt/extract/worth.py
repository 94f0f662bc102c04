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
from scipy import stats

from m2kt.concepts.geometry import linear_probe_accuracy
from m2kt.concepts.readout import Readout
from m2kt.concepts.split import Split


@dataclass(frozen=True)
class Worth:
    packet_accuracy: float
    linear_probe_accuracy: float
    chance: float
    heldout: int

    def no_better_than_chance(self, level: float = 0.05) -> str | None:
        """A note when the held-out probes cannot tell the packet's concepts from guessing
        (one-sided exact binomial test at `level`): a teacher that does not read the spec's
        domain makes a packet that carries nothing, and the user should hear it at export."""
        hits = round(self.packet_accuracy * self.heldout)
        p = stats.binomtest(hits, self.heldout, self.chance, alternative="greater").pvalue
        if p < level:
            return None
        return (
            f"the concepts recognise their held-out probes no better than chance would "
            f"({self.packet_accuracy:.1%} of {self.heldout} against {self.chance:.1%}, binomial "
            f"p={p:.2f}): this packet carries little; check that the teacher reads the spec's "
            "domain (another --layer or another model), or write more probes a concept"
        )

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
    index = [i for g in split.train for i in g.probes]
    labels = torch.tensor([k for k, g in enumerate(split.train) for _ in g.probes])
    ceiling = linear_probe_accuracy(states[index], labels, held, truth, len(split.train))
    return Worth(
        packet_accuracy=float((predicted == truth).float().mean()),
        linear_probe_accuracy=ceiling,
        chance=1.0 / len(split.train),
        heldout=len(split.heldout),
    )
