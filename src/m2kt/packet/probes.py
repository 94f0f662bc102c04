"""Parts P, N and S and the verification split, read in one place.

Every reader of a packet's probes (ingestion, the safety audit, merging) goes through
`concept_probes`: which texts each concept was extracted from, the teacher's state of each
(part P), and which texts were held out for verification; `anchor_states` reads part N, and
`text_states` both, for whoever pairs texts across models; `screen_states` reads part S (the
safety screen's texts, for the auditor alone); `concept_readout` reads part D and
`concept_layers` part L.
Before format version 2 the states travelled as one-step traces named `probe{i}` that each
reader recognised by its own rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from m2kt.packet.manifest import (
    ANCHOR_STATES_TENSOR,
    LAYER_EMBEDDINGS_TENSOR,
    LAYER_STATES_TENSOR,
    PROBE_STATES_TENSOR,
    READOUT_BIAS_TENSOR,
    READOUT_WEIGHT_TENSOR,
    SCREEN_STATES_TENSOR,
)
from m2kt.packet.packet import Packet


@dataclass(frozen=True)
class ConceptProbes:
    """A knowledge packet's probes, concept by concept, in part C's order."""

    texts: list[str]  # extraction probes
    labels: torch.Tensor  # [P] concept index of each extraction probe
    states: torch.Tensor | None  # [P, d_T] float32 teacher states; None without part P
    verification_texts: list[str]  # held out before extraction, never in `texts`' concept
    verification_labels: torch.Tensor  # [V]
    task: torch.Tensor  # [P] bool: the probe is a task input the teacher labelled, not a spec's
    layer: int | None
    pooling: str | None
    logit_scale: float | None

    @property
    def concept_count(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    @property
    def task_texts(self) -> list[str]:
        """The extraction probes that are task inputs (`Concept.task_inputs`), in row order."""
        return [t for t, is_task in zip(self.texts, self.task.tolist(), strict=True) if is_task]

    def indices(self, concept: int) -> list[int]:
        """Rows of `texts` (and `states`) that belong to `concept`."""
        return torch.nonzero(self.labels == concept).flatten().tolist()

    def state_of(self) -> dict[str, torch.Tensor]:
        """The teacher's state of each distinct extraction probe text (first listing wins)."""
        if self.states is None:
            return {}
        found: dict[str, torch.Tensor] = {}
        for text, state in zip(self.texts, self.states, strict=True):
            found.setdefault(text, state)
        return found


def concept_probes(packet: Packet) -> ConceptProbes:
    """The probes of `packet`'s concepts; an empty set for a packet without concepts."""
    m = packet.manifest
    concepts = m.concepts or []
    texts = [t for c in concepts for t in c.probes]
    verification = [t for c in concepts for t in c.verification]
    part = m.probes
    states = packet.tensors[PROBE_STATES_TENSOR].float() if part is not None else None
    return ConceptProbes(
        texts=texts,
        labels=torch.tensor(
            [k for k, c in enumerate(concepts) for _ in c.probes], dtype=torch.long
        ),
        states=states,
        verification_texts=verification,
        verification_labels=torch.tensor(
            [k for k, c in enumerate(concepts) for _ in c.verification], dtype=torch.long
        ),
        task=torch.tensor(
            [
                i >= len(c.probes) - (c.task_inputs or 0)
                for c in concepts
                for i in range(len(c.probes))
            ],
            dtype=torch.bool,
        ),
        layer=part.layer if part else None,
        pooling=part.pooling if part else None,
        logit_scale=part.logit_scale if part else None,
    )


def concept_readout(packet: Packet) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Part D: the linear readout's weight [K, d_T] and bias [K] (float32), or None.

    A packet without it classifies by the nearest concept embedding; see
    `m2kt.concepts.readout.packet_readout` for the one call that handles both.
    """
    if packet.manifest.readout is None:
        return None
    return (
        packet.tensors[READOUT_WEIGHT_TENSOR].float(),
        packet.tensors[READOUT_BIAS_TENSOR].float(),
    )


@dataclass(frozen=True)
class LayerConcepts:
    """Part L: the concepts and extraction probes' states at several layers (float32)."""

    layers: list[int]
    pooling: str
    embeddings: torch.Tensor  # [L, K, d_T]
    states: torch.Tensor  # [L, P, d_T], rows as part P's

    def side_by_side(self, layers: Sequence[int]) -> torch.Tensor:
        """[P, len(layers) · d_T]: each probe's states at `layers`, concatenated in that order
        (what a readout over several layers reads)."""
        return torch.cat([self.states[self.layers.index(n)] for n in layers], dim=-1)


def concept_layers(packet: Packet) -> LayerConcepts | None:
    """Part L, or None for a packet that keeps its concepts at one layer."""
    part = packet.manifest.layers
    if part is None:
        return None
    return LayerConcepts(
        list(part.layers),
        part.pooling,
        packet.tensors[LAYER_EMBEDDINGS_TENSOR].float(),
        packet.tensors[LAYER_STATES_TENSOR].float(),
    )


def kept_concept_parts(
    packet: Packet, keep: Sequence[int]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Parts P, D and L restricted to the concepts `keep` (indices in part C's order): their
    tensors, and parts D and L as a writer that drops the other concepts passes them on."""
    m = packet.manifest
    index = torch.tensor(list(keep), dtype=torch.long)
    tensors: dict[str, torch.Tensor] = {}
    parts: dict[str, Any] = {}
    if m.probes is not None:  # part L needs part P: its rows are part P's
        rows = torch.isin(concept_probes(packet).labels, index).nonzero().flatten()
        tensors[PROBE_STATES_TENSOR] = packet.tensors[PROBE_STATES_TENSOR][rows]
        if m.layers is not None:
            tensors[LAYER_EMBEDDINGS_TENSOR] = packet.tensors[LAYER_EMBEDDINGS_TENSOR][:, index]
            tensors[LAYER_STATES_TENSOR] = packet.tensors[LAYER_STATES_TENSOR][:, rows]
            parts["layers"] = m.layers
    if m.readout is not None:
        for name in (READOUT_WEIGHT_TENSOR, READOUT_BIAS_TENSOR):
            tensors[name] = packet.tensors[name][index]
        forms = [m.readout.forms[k] for k in keep] if m.readout.forms else None
        parts["readout"] = m.readout.model_copy(update={"forms": forms})
    return tensors, parts


def anchor_states(packet: Packet) -> tuple[list[str], torch.Tensor] | None:
    """The anchor texts and the teacher's states of them [A, d_T] (part N), or None."""
    part = packet.manifest.anchors
    if part is None:
        return None
    return list(part.texts), packet.tensors[ANCHOR_STATES_TENSOR].float()


def screen_states(packet: Packet) -> dict[str, torch.Tensor] | None:
    """Text → the teacher's state of it [d_T] for the safety screen's texts (part S), or None.
    Not among `text_states`: they teach the auditor what harm is in the teacher's space, and
    ingestion's maps stay fitted on the task-agnostic anchors and the probes."""
    part = packet.manifest.screen
    if part is None:
        return None
    states = packet.tensors[SCREEN_STATES_TENSOR].float()
    return dict(zip(part.texts, states, strict=True))


def text_states(packet: Packet) -> dict[str, torch.Tensor]:
    """The teacher's state of every text the packet carries one for: probes, then anchors."""
    found = concept_probes(packet).state_of()
    anchors = anchor_states(packet)
    if anchors is not None:
        for text, state in zip(*anchors, strict=True):
            found.setdefault(text, state)
    return found
