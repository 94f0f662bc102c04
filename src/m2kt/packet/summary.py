"""A JSON-ready description of a packet, shared by `m2kt inspect` and its `--json` form."""

from __future__ import annotations

from typing import Any, TypeGuard

from m2kt.packet.packet import Packet
from m2kt.packet.signing import signature_key_hint


def summarize(packet: Packet) -> dict[str, Any]:
    """Everything a reviewer needs to decide whether to trust and use a packet."""
    m = packet.manifest
    hint = signature_key_hint(packet.signature) if packet.signature is not None else None
    signature: dict[str, Any] = {"signed": packet.signature is not None, "claimed_key": hint}
    if packet.signer is not None:
        signature |= {
            "verified": True,
            "key": packet.signer.fingerprint,
            "key_file": str(packet.signer.key_path),
        }
    else:
        signature["verified"] = False
    parts: dict[str, Any] = {
        "concepts": None if m.concepts is None else len(m.concepts),
        "probes": None
        if m.probes is None
        else m.probes.model_dump(mode="json", exclude_none=True)
        | {"states": sum(len(c.probes) for c in m.concepts or [])},
        "verification_probes": sum(len(c.verification) for c in m.concepts or []),
        "readout": None
        if m.readout is None
        else m.readout.model_dump(mode="json", exclude_none=True),
        "layers": None if m.layers is None else m.layers.model_dump(mode="json"),
        "anchors": None
        if m.anchors is None
        else m.anchors.model_dump(mode="json", exclude={"texts"}) | {"texts": len(m.anchors.texts)},
        "screen": None if m.screen is None else {"texts": len(m.screen.texts)},
        "graph": None
        if m.graph is None
        else {"nodes": len(m.graph.nodes), "edges": len(m.graph.edges)},
        "attention": None if m.attention is None else m.attention.model_dump(mode="json"),
        "traces": None if m.traces is None else len(m.traces),
        "patch": None,
    }
    if m.patch is not None:
        parts["patch"] = {
            "adapter": m.patch.adapter,
            "task_classes": m.patch.task_classes,
            "aux_classes": len(m.patch.aux_classes),
            "logit_dim": m.patch.logit_dim,
            "config": m.patch.config,
        }
    return {
        "digest": packet.digest,
        "format_version": m.format_version,
        "kind": m.kind,
        "body_bytes": len(packet.manifest_bytes) + len(packet.tensor_bytes),
        "signature": signature,
        "parts": parts,
        "tensors": {name: spec.model_dump(mode="json") for name, spec in m.tensors.items()},
        "concepts": [
            {
                "id": c.id,
                "name": c.name,
                "probes": len(c.probes),
                "verification": len(c.verification),
                "layer": c.layer,
                "method": c.method,
                "confidence": c.confidence,
            }
            for c in m.concepts or []
        ],
        "provenance": m.provenance.model_dump(mode="json", exclude_none=True),
        "worth": worth_lines(packet),
    }


def worth_lines(packet: Packet) -> list[str]:
    """The packet's measured worth, one line per figure, as `extract` and `inspect` print it."""
    measured = packet.manifest.provenance.measurements

    def percent(key: str) -> str:
        value = measured.get(key)
        return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "?"

    lines = []
    if "concept_probe_accuracy" in measured:
        lines.append(
            f"concept-probe accuracy on {measured['heldout_probes']} held-out probes: "
            f"{percent('concept_probe_accuracy')} (linear probe on single probes "
            f"{percent('linear_probe_accuracy')}, chance {percent('chance_accuracy')})"
        )
    lines += reading_lines(packet)
    teacher = measured.get("teacher_checkpoint_bytes")
    if isinstance(teacher, int) and teacher > 0:
        size = len(packet.manifest_bytes) + len(packet.tensor_bytes)
        lines.append(
            f"packet body {size:,} bytes = {100 * size / teacher:.3f}% of the teacher "
            f"checkpoint ({teacher:,} bytes)"
        )
    return lines


def reading_lines(packet: Packet, runners_up: int = 3) -> list[str]:
    """The layer and pooling extraction chose, with the runner-up readings and their scores,
    and the layers part L keeps the concepts at.

    The figures are cross-validated on the extraction probes alone (settings
    `candidate_readings`, `reading_scores`: accuracy, `reading_losses`: the calibrated loss
    the choice was made on, lowest first); a readout over several layers is the reading
    `pooling@a+b+c`.
    """
    m = packet.manifest
    settings = m.provenance.settings
    kept = []
    if m.layers is not None:
        kept = [
            f"concepts kept at layers {', '.join(map(str, m.layers.layers))} "
            f"({m.layers.pooling} pooling, part L)"
        ]
    figures = _reading_figures(settings)
    if not figures:
        return kept
    ranked = sorted(figures, key=lambda r: figures[r][1])

    def shown(reading: str) -> str:
        accuracy, loss = figures[reading]
        text = f"{reading} {100 * accuracy:.1f}%"
        return text + (f" (loss {loss:.3f})" if loss >= 0 else "")

    readout = m.readout
    layers = readout.layers if readout is not None and readout.layers else None
    chosen = f"{settings.get('pooling')}@"
    chosen += "+".join(map(str, layers)) if layers else str(settings.get("layer"))
    if readout is None:
        kind = "centroid readout"
    elif readout.kind == "mixed":
        linear = sum(form == "linear" for form in readout.forms or [])
        kind = f"mixed readout ({linear} of {len(readout.forms or [])} concepts linear)"
    else:
        kind = "linear readout" + (" over its layers side by side" if layers else "")
    head = f"reading {chosen}, {kind}"
    if chosen in figures:
        accuracy, loss = figures[chosen]
        head += f" (cross-validated on extraction probes: {100 * accuracy:.1f}%"
        head += f", loss {loss:.3f})" if loss >= 0 else ")"
    others = [shown(r) for r in ranked if r != chosen][:runners_up]
    return [head + (f"; runners-up: {', '.join(others)}" if others else ""), *kept]


def _reading_figures(settings: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each candidate reading's (accuracy, loss) as extraction recorded them; none where the
    record is missing or malformed (a packet is untrusted: `inspect` shows what it can, and
    the raw settings stand in the provenance). A packet from before the loss was recorded
    ranks by accuracy (its negative in place of the loss)."""
    readings, scores = settings.get("candidate_readings"), settings.get("reading_scores")
    if not isinstance(readings, list) or not _numbers(scores, len(readings)):
        return {}
    losses = settings.get("reading_losses")
    if not _numbers(losses, len(readings)):
        losses = [-float(v) for v in scores]
    return {
        str(r): (float(v), float(loss)) for r, v, loss in zip(readings, scores, losses, strict=True)
    }


def _numbers(values: object, count: int) -> TypeGuard[list[float]]:
    """Whether `values` is a list of `count` numbers (booleans are not figures)."""
    return (
        isinstance(values, list)
        and len(values) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    )
