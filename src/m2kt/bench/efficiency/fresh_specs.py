"""Packets on specs nobody tuned for: a spec family written fresh for the benchmark.

Each spec (`specs/<name>.yaml`, concepts of a domain no shipped spec covers, 9 probes a
concept) has held-out sentences written separately (`specs/<name>.heldout.yaml`, 4 a concept,
none naming its concept), and a third set (`specs/<name>.verify.yaml`, 4 a concept, written
apart from both): the user's own labelled sentences that `m2kt ingest --verify-on` judges the
packet on. Every file was frozen by SHA-256 before anything was measured on it; the hashes
below are checked on every run, so an edited file is refused rather than measured. Nothing is
chosen on them: the held-out sentences are only scored, the third set only verifies.

For each spec: the teacher is extracted into a signed packet (its verification probes held out
as usual), the packet is ingested by the student through `ingest`, and the held-out sentences
are classified by the teacher (nearest packet concept in its own space), by the student's
zero-shot reading of the concept names alone, by the student's own anchors (the mean of its
states of the extraction probes, pulled toward its reading of the names: m2kt.ingest.prior)
and by the student with the packet; and once more with the packet ingested with the third set
as `--verify-on` (written to a CSV, as a user would): where verification rolls it back, that
row scores what the student then has, its zero-shot reading of the names (no adapter is kept).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from m2kt.bench.efficiency.latent_skill import screened_ingest
from m2kt.concepts.geometry import accuracy
from m2kt.concepts.probing import read_probes
from m2kt.concepts.spec import ConceptSpec, load_spec
from m2kt.errors import UsageError
from m2kt.extract.pipeline import ExtractionSettings, extract_packet
from m2kt.ingest.fit import FitSettings
from m2kt.ingest.pipeline import IngestSettings
from m2kt.ingest.verify import Gate
from m2kt.models.view import ModelView
from m2kt.packet import generate_keypair, load_packet
from m2kt.safety import ExportScreen, finish_export

SPECS = Path(__file__).with_name("specs")
FROZEN = {  # SHA-256 of each file, recorded when it was written (specs/SHA256SUMS)
    "animals.yaml": "d9850d040a6106e7df6e3ef01f968845eba903979712069d3b1e61d540f4953a",
    "animals.heldout.yaml": "56952c42e2dcaab26e02aa02e1eb196d2e98100df54e2ff06ee195d560c4e007",
    "emotions.yaml": "20a8429a78d05b8b987fb379c1d0e34d7be0b636f4f7920e2d4d0dcebb40bf24",
    "emotions.heldout.yaml": "030d84314b73617694c3470ce9e33cf0b7a4ea450a3d5bf79aec3b9c3ccb831d",
    "professions.yaml": "cc0382d11ab3e0d303244077c95a7fb1c99384c93a734094e3820a0dcb157965",
    "professions.heldout.yaml": "b8f18c9ccb64c552b34231c26e624c81e28e80935ad0b86f5cc8b5ebd27fdaa7",
    # the second family, written and frozen after the first family's results were seen and
    # before anything was measured on it (the first had become a set we had looked at)
    "weather.yaml": "83bc44e3d921e75a169d145622c30f199d4affbebcdd1997e90ff86bf19e3688",
    "weather.heldout.yaml": "721c8fc8b7062f8d743ce44548ea30f072c658879527f086d4a9724281ad7a80",
    "transport.yaml": "33c2ed18cc70648407e34bfba4bbbd364ee27529da0fa82cfd3b5fce522e75cc",
    "transport.heldout.yaml": "e3cd30fc8c90ba3913b8091e33b3d37c5cecec112479065bab6752335c293199",
    "instruments.yaml": "8c448780704ddb20d64ace144c3e4b2dbd1406fd9d32ba1c191c4c404a7c3b15",
    "instruments.heldout.yaml": "a8b0b9e6f09b52cbd7571e4d7d7f03ddbdf806a5d06cbcfdd18bd8de382022d0",
    # a third set per spec, the user's own sentences for `m2kt ingest --verify-on`: written
    # after both families had been measured, without looking at any per-concept result, and
    # frozen before the verified row was first run
    "emotions.verify.yaml": "5832051ac0aa26e17d94c6c365429631b6e31c8915cbafc30275a8f65fc70910",
    "professions.verify.yaml": "464d31210618a587c0e31b5cf18c4db4ba23da04e7b1b0546f23b4cf67ac04f0",
    "animals.verify.yaml": "a56ab685079114f55026c83d84411bf5c508e76820c5941b51fd19c585db416a",
    "weather.verify.yaml": "87deebc1d2de86c4e8eae0f2e107eb39d3fc4301f820efb682287194af152e81",
    "transport.verify.yaml": "bc1858faf2a81e4df89d0344b417cb87efdb18d80513f0f10551623b3951fa6f",
    "instruments.verify.yaml": "26b8ec5009a55c2774612e30bca680edffa4233297f022bcbaaaa9bb33f246dd",
}
NAMES = ("emotions", "professions", "animals", "weather", "transport", "instruments")
VERIFIED = "packet, verified on the user's sentences"


def frozen_path(filename: str) -> Path:
    """A file of the family, refused unless its bytes are the ones frozen."""
    path = SPECS / filename
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != FROZEN[filename]:
        raise UsageError(
            f"{path} is not the frozen file (SHA-256 {found[:12]}, frozen {FROZEN[filename][:12]})",
            "a held-out set is never edited: write a new one and freeze it before any tuning",
        )
    return path


def measure(
    teacher: ModelView,
    student: ModelView,
    workdir: Path,
    ingest_fits: dict[str, FitSettings],
    seed: int = 0,
    log: Callable[[str], None] = print,
    verified_fit: FitSettings | None = None,
) -> dict[str, dict[str, Any]]:
    """Per spec: held-out accuracy of the teacher, the student's zero-shot reading of the
    names, its own anchors, and the student with the packet under each of `ingest_fits`; with
    `verified_fit`, the row `VERIFIED` too: that fit, the third set passed as `verify_on`."""
    private, public = generate_keypair(workdir / "keys")
    results: dict[str, dict[str, Any]] = {}
    for name in NAMES:
        spec = load_spec(frozen_path(f"{name}.yaml"))
        heldout = load_spec(frozen_path(f"{name}.heldout.yaml"))
        if [c.name for c in heldout.concepts] != [c.name for c in spec.concepts]:
            raise UsageError(f"{name}: the held-out file's concepts differ from the spec's")
        texts = heldout.all_probes()
        labels = torch.tensor([k for k, c in enumerate(heldout.concepts) for _ in c.probes])
        settings = ExtractionSettings(attention=False, seed=seed, created_at="2026-01-01T00:00:00Z")
        audit = ExportScreen()
        extraction = extract_packet(teacher, spec, settings, audit=audit)
        exported = finish_export(extraction.packet, audit)[0]
        path = exported.signed(private).save(workdir / f"{name}.m2kt")
        packet = load_packet(path, trusted_keys=[public])
        concepts = packet.tensors["concepts.embeddings"].float()
        layer = packet.manifest.concepts[0].layer  # type: ignore[index]
        assert layer is not None  # one teacher's packet names its layer
        pooling = packet.manifest.probes.pooling if packet.manifest.probes else None
        teacher_states = _states(teacher, texts, layer, pooling)
        row: dict[str, Any] = {
            "concepts": len(spec.concepts),
            "heldout": len(texts),
            "packet_digest": packet.digest,
            "teacher": _accuracy(teacher_states, concepts, labels),
        }
        runs: list[tuple[str, FitSettings, str | None]] = [
            (label, fit, None) for label, fit in ingest_fits.items()
        ]
        if verified_fit is not None:
            runs.append((VERIFIED, verified_fit, _user_csv(name, spec, workdir)))
        for label, fit, verify_on in runs:
            outcome, screen = screened_ingest(
                student,
                packet,
                IngestSettings(
                    fit=replace(fit, seed=seed),
                    gate=Gate(accept_unverified=True),
                    verify_on=verify_on,
                ),
            )
            report = outcome.report
            states = _states(
                student, texts, report["student"]["layer"], report["student"]["pooling"]
            )
            names = _states(
                student,
                [c.name for c in spec.concepts],
                report["student"]["layer"],
                report["student"]["pooling"],
            )
            own = next(c for c in report["checks"] if c["name"] == "transfer")
            memory = outcome.memory
            row["student zero-shot (names)"] = _accuracy(states, names, labels)
            if memory is not None:  # by name: the screen may have dropped concepts
                classes = torch.tensor(
                    [[c.name for c in spec.concepts].index(n) for n in memory.config.concepts]
                )
                row["student, own anchors"] = _accuracy(states, memory.anchors, labels, classes)
                with torch.no_grad():
                    predicted = classes[memory(states).argmax(-1)]
                row[label] = float((predicted == labels).float().mean())
            else:  # refused: the student stays as it was
                row[label] = row["student zero-shot (names)"]
            row[f"{label}: verdict"] = {
                "accepted": outcome.accepted,
                "verification": report["verification"],
                "transfer_before_after": [own["before"], own["after"]],
                "failed": [c["name"] for c in report["checks"] if not c["passed"]],
                "safety_screen": screen,
            } | ({"verified_on": report["verified_on"]} if verify_on else {})
        log(
            f"fresh spec {name}: "
            + ", ".join(f"{k} {v:.1%}" for k, v in row.items() if isinstance(v, float))
        )
        results[name] = row
    return results


def _user_csv(name: str, spec: ConceptSpec, workdir: Path) -> str:
    """The spec's third set as the CSV a user passes to `--verify-on` (`text,label`)."""
    sentences = load_spec(frozen_path(f"{name}.verify.yaml"))
    if [c.name for c in sentences.concepts] != [c.name for c in spec.concepts]:
        raise UsageError(f"{name}: the third set's concepts differ from the spec's")
    path = workdir / f"{name}.verify.csv"
    workdir.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([p, c.name] for c in sentences.concepts for p in c.probes)
    return str(path)


def _states(view: ModelView, texts: list[str], layer: int, pooling: Any) -> torch.Tensor:
    readings = read_probes(view, texts, [layer], poolings=[pooling or view.pooling], truncate=True)
    return readings.states[(pooling or view.pooling, layer)].float()


def _accuracy(
    states: torch.Tensor,
    vectors: torch.Tensor,
    labels: torch.Tensor,
    classes: torch.Tensor | None = None,
) -> float:
    """Nearest of `vectors` (row i standing for class `classes[i]`, i itself by default)."""
    scores = F.normalize(states, dim=-1) @ F.normalize(vectors, dim=-1).T
    if classes is None:
        return accuracy(scores, labels)
    return float((classes[scores.argmax(-1)] == labels).float().mean())
