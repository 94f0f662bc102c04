"""The handful of calls a user needs, as `import m2kt` offers them (docs/python-api.md).

Each call takes what a user has at hand (a model id or path, a spec name or file, a packet path)
as readily as the library's own objects, and runs exactly what the matching `m2kt` command runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from m2kt.concepts import ConceptSpec, load_spec
from m2kt.extract import Extraction, ExtractionSettings, pipeline
from m2kt.ingest import Ingested, Ingestion, IngestSettings, Prediction, ingest, load_ingested
from m2kt.models import ModelView, load_model
from m2kt.packet import Packet, load_packet
from m2kt.safety import ExportScreen, finish_export

Model = ModelView | str | Path
Spec = ConceptSpec | str | Path


def extract_packet(
    teacher: Model,
    spec: Spec,
    settings: ExtractionSettings | None = None,
    *,
    screen: bool = True,
    keep_flagged: bool = False,
    sign: str | Path | None = None,
    auditor: Model | None = None,
) -> Extraction:
    """A knowledge packet of `spec`'s concepts as `teacher` knows them (`m2kt extract`).

    `screen` audits the concepts and traces by meaning before export and drops what it flags
    (`keep_flagged` keeps it, and the provenance says so); `sign` is a private key file (from
    `m2kt keygen`) that signs the packet. `auditor`, another model, judges what the probes say
    (`m2kt extract --auditor`). Save it with `extraction.packet.save(path)`.
    """
    view = _model(teacher)
    concepts = spec if isinstance(spec, ConceptSpec) else load_spec(str(spec))
    judge = _model(auditor) if auditor is not None else None
    audit = ExportScreen(auditor=judge) if screen else None
    extraction = pipeline.extract_packet(view, concepts, settings, audit=audit)
    if audit is not None:
        packet, notes = finish_export(extraction.packet, audit, keep_flagged)
        extraction = Extraction(packet, extraction.worth, extraction.notes + notes)
    if sign is not None:
        extraction = Extraction(
            extraction.packet.signed(str(sign)), extraction.worth, extraction.notes
        )
    return extraction


def ingest_packet(
    student: Model,
    packet: Packet | str | Path,
    settings: IngestSettings | None = None,
    *,
    trusted_keys: Iterable[str | Path] = (),
    out: str | Path | None = None,
    auditor: Model | None = None,
    allow_unsigned: bool = False,
) -> Ingestion:
    """`packet` ingested into the frozen `student`, verified, kept or rolled back (`m2kt ingest`).

    A path is opened with its signature checked against `trusted_keys`; an unsigned one is
    refused unless `allow_unsigned` (`--allow-unsigned`). With `out`, an accepted
    adapter is saved there (a PEFT-like folder); a rolled-back one saves nothing. `auditor`,
    another model, audits the packet in its own space (`m2kt ingest --auditor`).
    """
    if not isinstance(packet, Packet):
        packet = load_packet(packet, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned)
    judge = _model(auditor) if auditor is not None else None
    ingestion = ingest(_model(student), packet, settings, auditor=judge)
    if out is not None and ingestion.accepted:
        ingestion.save(out)
    return ingestion


@dataclass(frozen=True)
class AdaptedStudent:
    """A student with an ingested adapter, in memory: `predict(texts)` answers with concepts."""

    view: ModelView
    adapter: Ingested

    @property
    def concepts(self) -> list[str]:
        return list(self.adapter.memory.config.concepts)

    @property
    def dropped(self) -> list[str]:
        """The packet's concepts the safety auditor dropped at ingestion: never answered."""
        return self.adapter.dropped

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return self.adapter.predict(self.view, texts)


def load_adapter(student: Model, directory: str | Path) -> AdaptedStudent:
    """The adapter `m2kt ingest` saved in `directory`, on the student it was made for (checked
    by weight hash: another model is refused with a hint)."""
    view, adapter = _model(student), load_ingested(directory)
    adapter.check_student(view)
    return AdaptedStudent(view, adapter)


def _model(model: Model) -> ModelView:
    return model if isinstance(model, ModelView) else load_model(str(model))
