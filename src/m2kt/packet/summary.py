"""A JSON-ready description of a packet, shared by `m2kt inspect` and its `--json` form."""

from __future__ import annotations

from typing import Any

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
        "readout": None if m.readout is None else m.readout.model_dump(mode="json"),
        "anchors": None
        if m.anchors is None
        else m.anchors.model_dump(mode="json", exclude={"texts"}) | {"texts": len(m.anchors.texts)},
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
    """The layer and pooling extraction chose, with the runner-up readings and their scores.

    The scores are cross-validated accuracies on the extraction probes alone (settings
    `candidate_readings` and `reading_scores`), the criterion the choice was made on.
    """
    settings = packet.manifest.provenance.settings
    readings, scores = settings.get("candidate_readings"), settings.get("reading_scores")
    if not isinstance(readings, list) or not isinstance(scores, list) or not readings:
        return []
    ranked = sorted(zip(readings, scores, strict=True), key=lambda pair: -float(pair[1]))
    chosen = f"{settings.get('pooling')}@{settings.get('layer')}"
    shown = [f"{r} {100 * float(v):.1f}%" for r, v in ranked if r != chosen][:runners_up]
    own = dict(ranked).get(chosen)
    readout = packet.manifest.readout.kind if packet.manifest.readout else "centroid"
    head = f"reading {chosen}, {readout} readout"
    if own is not None:
        head += f" (cross-validated on extraction probes {100 * float(own):.1f}%)"
    return [head + (f"; runners-up: {', '.join(shown)}" if shown else "")]
