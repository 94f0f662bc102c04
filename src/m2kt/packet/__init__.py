"""The knowledge-packet format: manifest schema, safetensors I/O, digest, signing, limits.

Normative description: docs/packet-format.md. This package knows nothing of models or training.
"""

from m2kt.packet.limits import DEFAULT_LIMITS, Limits
from m2kt.packet.manifest import (
    FORMAT_VERSION,
    Attention,
    Concept,
    Graph,
    GraphEdge,
    GraphNode,
    Manifest,
    ModelRef,
    Patch,
    Provenance,
    Trace,
)
from m2kt.packet.packet import Packet, load_packet, make_provenance, read_packet, verify_packet
from m2kt.packet.signing import (
    Signer,
    fingerprint_of_public_key,
    generate_keypair,
    signature_key_hint,
)

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "Attention",
    "Concept",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "Limits",
    "Manifest",
    "ModelRef",
    "Packet",
    "Patch",
    "Provenance",
    "Signer",
    "Trace",
    "fingerprint_of_public_key",
    "generate_keypair",
    "load_packet",
    "make_provenance",
    "read_packet",
    "signature_key_hint",
    "verify_packet",
]
