"""The knowledge-packet format: manifest schema, safetensors I/O, digest, signing, limits.

Normative description: docs/packet-format.md. This package knows nothing of models or training.
"""

from m2kt.packet.limits import DEFAULT_LIMITS, Limits
from m2kt.packet.manifest import (
    FORMAT_VERSION,
    Anchors,
    Attention,
    Concept,
    Graph,
    GraphEdge,
    GraphNode,
    Layers,
    Manifest,
    ModelRef,
    Patch,
    Probes,
    Provenance,
    Readout,
    Trace,
)
from m2kt.packet.packet import Packet, load_packet, make_provenance, read_packet, verify_packet
from m2kt.packet.probes import (
    ConceptProbes,
    LayerConcepts,
    anchor_states,
    concept_layers,
    concept_probes,
    concept_readout,
    kept_concept_parts,
    screen_states,
    text_states,
)
from m2kt.packet.signing import (
    Signer,
    fingerprint_of_public_key,
    generate_keypair,
    signature_key_hint,
)

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "Anchors",
    "Attention",
    "Concept",
    "ConceptProbes",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "LayerConcepts",
    "Layers",
    "Limits",
    "Manifest",
    "ModelRef",
    "Packet",
    "Patch",
    "Probes",
    "Provenance",
    "Readout",
    "Signer",
    "Trace",
    "fingerprint_of_public_key",
    "anchor_states",
    "screen_states",
    "concept_layers",
    "concept_probes",
    "concept_readout",
    "generate_keypair",
    "kept_concept_parts",
    "load_packet",
    "make_provenance",
    "read_packet",
    "signature_key_hint",
    "text_states",
    "verify_packet",
]
