"""What in-block ingestion reads: the packet's texts through the adapted student, every step.

With the concept memory the student reads each text once and training runs on cached states.
With an adapter inside the blocks the states move as the adapter learns, so every training step
reads the texts again through the student, with gradients (`block_read`). The packet's layer
traces (the teacher's state after each of its layers on a probe) become hints for the
student's own layers (`m2kt.ingest.hints`): the pairing is chosen on the frozen student's
states of those probes before training (`layer_hints`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from m2kt.concepts.probing import read_probes
from m2kt.ingest.fit_blocks import HintsFactory, StudentRead
from m2kt.ingest.hints import LayerHints, PairingKind, Pairs, pair_layers
from m2kt.models.view import ModelView, Pooling
from m2kt.packet import Packet
from m2kt.packet.manifest import TRACE_PREFIX


def block_read(
    view: ModelView,
    texts: Sequence[str],
    layer: int,
    pooling: Pooling,
    hint_layers: Sequence[int] = (),
    *,
    batch_size: int = 16,
    truncate: bool = False,
) -> StudentRead:
    """A reader of `texts[index]` through the student as it is now (adapter included)."""
    wanted = sorted({layer, *hint_layers})

    def read(index: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        chosen = [texts[i] for i in index.tolist()]
        pooled: list[torch.Tensor] = []
        layers: dict[int, list[torch.Tensor]] = {h: [] for h in hint_layers}
        for start in range(0, len(chosen), batch_size):
            capture = view.run(
                chosen[start : start + batch_size], hidden_layers=wanted, truncate=truncate
            )
            pooled.append(view.pool(capture.hidden[layer], capture.mask, pooling).float())
            for h in hint_layers:
                layers[h].append(view.pool(capture.hidden[h], capture.mask, pooling).float())
        return torch.cat(pooled), {h: torch.cat(v) for h, v in layers.items()}

    return read


def layer_hints(
    view: ModelView,
    packet: Packet,
    pair_texts: Sequence[str],
    pooling: Pooling,
    how: PairingKind,
    *,
    batch_size: int = 16,
    truncate: bool = False,
) -> tuple[HintsFactory | None, Pairs, list[int]]:
    """Hints from the packet's layer traces on the training texts `pair_texts`: the factory,
    the layer pairs and the student layers the reader must return (none without traces)."""
    teacher_of: dict[str, torch.Tensor] = {}
    for trace in packet.manifest.traces or []:
        if trace.steps and trace.steps[0] == "layer 0" and trace.probe not in teacher_of:
            teacher_of[trace.probe] = packet.tensors[TRACE_PREFIX + trace.id].float()[1:]
    rows = [i for i, text in enumerate(pair_texts) if text in teacher_of]
    if len(rows) < 2:
        return None, (), []
    probes = [pair_texts[i] for i in rows]
    student_layers = list(range(1, view.num_layers + 1))
    frozen = read_probes(
        view,
        list(dict.fromkeys(probes)),
        student_layers,
        poolings=[pooling],
        batch_size=batch_size,
        truncate=truncate,
    )
    position = {text: i for i, text in enumerate(dict.fromkeys(probes))}
    order = [position[t] for t in probes]
    student = {h: frozen.states[(pooling, h)].float()[order] for h in student_layers}
    stacked = torch.stack([teacher_of[t] for t in probes])  # [R, L_T, d_T]
    teacher = {h + 1: stacked[:, h] for h in range(stacked.shape[1])}
    pairs = pair_layers(student, teacher, how)
    row_of = torch.full((len(pair_texts),), -1, dtype=torch.long)
    row_of[torch.tensor(rows)] = torch.arange(len(rows))

    def factory(index: torch.Tensor) -> LayerHints | None:
        """Hints on the training rows `index`: positions in it are the rows `loss` sees."""
        inside = row_of[index]
        keep = torch.nonzero(inside >= 0).flatten()
        if len(keep) < 2:
            return None
        picked = inside[keep]
        return LayerHints(
            pairs,
            {s: student[s][picked] for s, _ in pairs},
            {t: teacher[t][picked] for _, t in pairs},
            rows=keep,
        )

    return factory, pairs, sorted({s for s, _ in pairs})
