"""The main job for knowledge packets: teacher → signed packet → frozen student → verified.

With the embedded models, offline, in about a minute on 2 CPU cores:
1. the teacher E1 (6-layer MiniLM) reads the shipped `topics` spec (ten topics, six
   hand-written probes each) into a knowledge packet, which is signed with a fresh key;
2. the packet is loaded back with its signature verified;
3. the student E2 (3-layer MiniLM, another model) ingests it through a Concept Alignment Layer
   and a concept memory, its own weights frozen, and is verified: the packet's verification
   probes (held out before extraction), its held-in skill on a set no packet carries, and
   safety, before against after; a failure would roll it back;
4. a table of what each model scored and read, and the adapter directory, are written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from m2kt.concepts.spec import load_spec
from m2kt.extract.pipeline import extract_packet
from m2kt.ingest.pipeline import Ingestion, ingest
from m2kt.models.load import load_model
from m2kt.packet import load_packet
from m2kt.progress import StageProgress, quiet
from m2kt.recipes.patch_demo import fresh_keys
from m2kt.safety import ExportScreen, finish_export

TEACHER, STUDENT, SPEC = "e1", "e2", "topics"


@dataclass(frozen=True)
class KnowledgeDemo:
    packet: Path
    public_key: Path
    adapter: Path | None
    teacher_accuracy: float
    ingestion: Ingestion
    packet_bytes: int
    teacher_checkpoint_bytes: int

    def table(self) -> list[tuple[str, str, str]]:
        """(row, figure, inputs) lines of the results table."""
        report = self.ingestion.report
        checks = {c.name: c for c in self.ingestion.verdict.checks}
        transfer, held_in = checks["transfer"], checks["held-in"]
        inputs = report["inputs"]
        screened = inputs.get("student_safety_screen", 0)
        return [
            (
                f"teacher {TEACHER} (concepts, held-out probes)",
                f"{self.teacher_accuracy:.1%}",
                f"{inputs['teacher']} read to build the packet",
            ),
            (f"student {STUDENT} before (its own anchors)", f"{transfer.before:.1%}", "-"),
            (
                f"student {STUDENT} zero-shot (the concept names alone)",
                f"{checks['zero-shot'].before:.1%}",
                "-",
            ),
            (
                f"student {STUDENT} + packet",
                f"{transfer.after:.1%}",
                f"{inputs['student_training'] - inputs.get('student_anchors', 0)} packet probes "
                f"and concept names, {inputs.get('student_anchors', 0)} anchors read",
            ),
            ("paired difference (95% interval), p", _difference(transfer.statistics), ""),
            (
                "held-in skill before → after",
                f"{held_in.before:.1%} → {held_in.after:.1%}",
                f"{inputs['student'] - inputs['student_training'] - screened} held-in and "
                f"safety probes, {screened} safety-screen texts",
            ),
            ("verdict", "accepted" if self.ingestion.accepted else "rolled back", ""),
            ("trained parameters (student frozen)", f"{report['trainable_parameters']:,}", ""),
            (
                "packet size",
                f"{self.packet_bytes:,} bytes = "
                f"{self.packet_bytes / self.teacher_checkpoint_bytes:.2%} of the teacher",
                "",
            ),
        ]


def _difference(figures: dict[str, Any] | None) -> str:
    if not figures or figures["n"] == 0:
        return "not measured"
    low, high = figures["interval_95"]
    return (
        f"{figures['difference']:+.1%} ({low:+.1%} to {high:+.1%}), p = {figures['p_value']:.3f}, "
        f"n = {figures['n']}"
    )


def run_knowledge_demo(
    out_dir: str | Path,
    progress: StageProgress | None = None,
    log: Callable[[str], Any] = print,
) -> KnowledgeDemo:
    progress = progress or quiet
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private, public = fresh_keys(out)

    log(f"1/3 teacher {TEACHER} reads the {SPEC} spec into a packet")
    teacher = load_model(TEACHER)
    audit = ExportScreen()  # what `m2kt extract` runs: screen, carry part S, drop what it flags
    extraction = extract_packet(teacher, load_spec(SPEC), progress=progress, audit=audit)
    exported, _ = finish_export(extraction.packet, audit)
    path = exported.signed(private).save(out / f"{SPEC}.m2kt")

    log(f"2/3 the packet is verified against {public.name} and ingested by {STUDENT}")
    packet = load_packet(path, trusted_keys=[public])
    student = load_model(STUDENT)
    outcome = ingest(student, packet, progress=progress)

    log("3/3 verified; writing the adapter" if outcome.accepted else "3/3 rolled back")
    adapter = outcome.save(out / "adapter") if outcome.accepted else None
    measurements = packet.manifest.provenance.measurements
    return KnowledgeDemo(
        packet=path,
        public_key=public,
        adapter=adapter,
        teacher_accuracy=float(cast(float, measurements["concept_probe_accuracy"])),
        ingestion=outcome,
        packet_bytes=path.stat().st_size,
        teacher_checkpoint_bytes=int(cast(float, measurements["teacher_checkpoint_bytes"])),
    )
