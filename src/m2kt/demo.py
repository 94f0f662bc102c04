"""The packet lifecycle end to end on a tiny model: build, sign, save, verify.

The model is a seeded, randomly initialised byte-level transformer, so the packet shows the
format and the trust chain, not useful knowledge; real extraction lives in `m2kt extract`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from m2kt.packet import Packet, generate_keypair, make_provenance, verify_packet

CONCEPT_PROBES = {
    "sport": ["The striker scored twice in the final.", "She won the marathon in record time."],
    "politics": ["Parliament passed the budget bill.", "The minister resigned after the vote."],
    "technology": ["The new chip doubles battery life.", "Engineers released the software update."],
}


class TinyByteEncoder(nn.Module):
    """A 2-layer transformer encoder over UTF-8 bytes; small enough to build in milliseconds."""

    def __init__(self, width: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, width)
        block = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)

    def forward(self, text: str) -> torch.Tensor:
        """Mean-pooled final hidden state of one text, shape [width]."""
        ids = torch.tensor([list(text.encode("utf-8"))])
        return self.encoder(self.embed(ids)).mean(dim=1)[0]


@dataclass(frozen=True)
class DemoResult:
    packet_path: Path
    public_key: Path
    digest: str


def run_demo(out_dir: str | Path, seed: int = 0) -> DemoResult:
    """Build a concept packet from the tiny model, sign it with a fresh key, verify the file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = TinyByteEncoder().eval()
    embeddings, concepts = [], []
    with torch.no_grad():
        for name, probes in CONCEPT_PROBES.items():
            states = torch.stack([model(p) for p in probes])
            centroid = states.mean(dim=0)
            agreement = torch.cosine_similarity(states, centroid[None], dim=-1).mean()
            embeddings.append(centroid)
            concepts.append(
                {
                    "id": name,
                    "name": name,
                    "probes": probes,
                    "layer": 2,
                    "method": "bottleneck",
                    "confidence": float(agreement.clamp(0, 1)),
                }
            )
    graph = {
        "nodes": [{"id": c["id"], "name": c["name"], "kind": "concept"} for c in concepts]
        + [{"id": "news", "name": "news topic", "kind": "abstract"}],
        "edges": [
            {"source": c["id"], "target": "news", "type": "is-a", "weight": 1.0} for c in concepts
        ],
    }
    provenance = make_provenance(
        method="bottleneck",
        models=[
            {
                "id": "m2kt-demo-tiny-byte-encoder",
                "architecture": "TinyByteEncoder",
                "hidden_size": 32,
                "num_layers": 2,
            }
        ],
        settings={"seed": seed, "pooling": "mean"},
        license="Apache-2.0",
        inputs_seen={"teacher": sum(len(p) for p in CONCEPT_PROBES.values())},
    )
    packet = Packet.create(
        kind="knowledge",
        provenance=provenance,
        concepts=concepts,
        graph=graph,
        tensors={"concepts.embeddings": torch.stack(embeddings)},
    )
    private_key, public_key = _fresh_keys(out)
    path = packet.signed(private_key).save(out / "demo.m2kt")
    verified = verify_packet(path, [public_key])
    return DemoResult(packet_path=path, public_key=public_key, digest=verified.digest)


def _fresh_keys(out: Path) -> tuple[Path, Path]:
    for stale in (out / "demo-signer.key", out / "demo-signer.pub"):
        stale.unlink(missing_ok=True)
    return generate_keypair(out, "demo-signer")
