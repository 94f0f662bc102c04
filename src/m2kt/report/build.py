"""Records in, one HTML page and its PNG figures out: benchmarks, ingestions, packets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2kt.atomic import atomic_write_bytes
from m2kt.report import figures
from m2kt.report import html as h
from m2kt.report.records import BenchmarkRun, IngestionRun, PacketRun, RunRecords, collect

REPORT_FILE = "report.html"


@dataclass
class Report:
    """Where the page and its figures were written."""

    html: Path
    figures: list[Path] = field(default_factory=list)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Report:
    """Read every record under `run_dir`; write `report.html` and one PNG per figure.

    `out_dir` defaults to `run_dir/report`. Each file is written atomically; the page holds
    its figures inline, so it is complete on its own.
    """
    records = collect(run_dir)
    out = Path(out_dir) if out_dir is not None else records.root / "report"
    writer = _FigureWriter(out)
    body = [_summary(records)]
    body += [_benchmark(run, records.root, writer) for run in records.benchmarks]
    body += [_ingestion(run, records.root, writer) for run in records.ingestions]
    body += [_packet(run, records.root, writer) for run in records.packets]
    page = h.page(f"m2kt report: {records.root.resolve().name}", body)
    html_path = atomic_write_bytes(out / REPORT_FILE, page.encode("utf-8"))
    return Report(html_path, writer.written)


class _FigureWriter:
    """Writes each figure as a PNG file and returns its HTML with the same bytes inlined."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[Path] = []

    def __call__(self, png: bytes, name: str, caption: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "figure"
        path = self.out / f"{len(self.written) + 1:02d}-{slug}.png"
        self.written.append(atomic_write_bytes(path, png))
        return h.figure(png, caption)


def _summary(records: RunRecords) -> str:
    parts = [
        h.paragraph(
            f"Read from {records.root}: {len(records.benchmarks)} benchmark result(s), "
            f"{len(records.ingestions)} ingestion report(s), {len(records.packets)} packet "
            "record(s). Every figure is drawn from these JSON records; nothing is re-computed."
        )
    ]
    if records.skipped:
        parts.append(h.paragraph("Skipped: " + "; ".join(records.skipped)))
    return "\n".join(parts)


def _benchmark(run: BenchmarkRun, root: Path, figure: _FigureWriter) -> str:
    name = str(run.path.relative_to(root))
    results = run.results
    parts = [h.key_values(_benchmark_facts(results))]
    if "runs" in results:
        parts.append(figure(figures.patch_bars(results), name, "test accuracy per method"))
    if any("curves" in s for s in results.get("settings", {}).values()):
        caption = "accuracy against inputs consumed (all models), per method"
        parts.append(figure(figures.efficiency_curves(results), name, caption))
        parts.append(_efficiency_table(results["settings"]))
    return h.section(f"Benchmark: {name}", parts)


def _benchmark_facts(results: dict[str, Any]) -> list[tuple[str, object]]:
    machine = results.get("machine", {})
    facts: list[tuple[str, object]] = [("m2kt", results.get("m2kt_version", "?"))]
    if machine:
        facts.append(("machine", ", ".join(f"{k} {v}" for k, v in machine.items())))
    if "wall_clock_seconds" in results:
        facts.append(("wall clock", f"{results['wall_clock_seconds'] / 60:.1f} min"))
    return facts


def _efficiency_table(settings: dict[str, Any]) -> str:
    """Inputs each method needed to reach each level, per setting (None: not reached)."""
    rows = []
    for title, setting in settings.items():
        for method, levels in setting.get("derived", {}).items():
            shown = {k: v for k, v in levels.items() if not isinstance(v, dict)}
            cells = ", ".join(f"{k}: {_count(v)}" for k, v in shown.items())
            rows.append((title, method, cells))
    return h.table(("setting", "method", "inputs to reach"), rows)


def _ingestion(run: IngestionRun, root: Path, figure: _FigureWriter) -> str:
    r = run.report
    name = str(run.adapter_dir.relative_to(root)) or "."
    verdict = "accepted" if r.get("accepted") else "rolled back"
    student = r.get("student", {})
    packet = r.get("packet", {})
    teachers = ", ".join(t.get("id", "?") for t in packet.get("teacher", []))
    facts = [
        (
            "student",
            f"{student.get('id')} ({student.get('architecture')}), layer "
            f"{student.get('layer')}, weights {str(student.get('weight_sha256'))[:16]}…",
        ),
        ("packet", f"{packet.get('digest')} from {teachers or '?'}"),
        ("signer", packet.get("signer") or "unsigned"),
        ("inputs read", ", ".join(f"{k} {v}" for k, v in r.get("inputs", {}).items())),
        ("trained parameters", f"{r.get('trainable_parameters', 0):,}"),
        ("wall clock", f"{r.get('seconds', 0):.1f} s"),
    ]
    parts = [
        h.paragraph(verdict, "ok" if r.get("accepted") else "fail"),
        h.key_values(facts),
    ]
    checks = r.get("checks", [])
    if checks:
        parts.append(
            figure(figures.before_after(checks), f"{name} checks", "before → after per probe set")
        )
        parts.append(
            h.table(
                ("check", "passed", "why"), [(c["name"], c["passed"], c["reason"]) for c in checks]
            )
        )
    history = {k: v for k, v in r.get("loss_history", {}).items() if v}
    if history:
        parts.append(figure(figures.loss_curves(history), f"{name} loss", "loss per term"))
    else:
        parts.append(
            h.paragraph(
                "No training steps: the step count chosen on held-out packet probes was 0, "
                "so the closed-form start was kept."
            )
        )
    return h.section(f"Ingestion: {name} ({verdict})", parts)


def _packet(run: PacketRun, root: Path, figure: _FigureWriter) -> str:
    record = run.record
    name = str(run.record_path.relative_to(root))[: -len(".record.json")]
    facts: list[tuple[str, object]] = [
        ("step", record.get("step", "?")),
        ("digest", record.get("digest", "?")),
        ("bytes", f"{record.get('packet_bytes', 0):,}"),
        ("wall clock", f"{record.get('seconds', 0):.1f} s"),
        ("inputs seen", ", ".join(f"{k} {v}" for k, v in record.get("inputs_seen", {}).items())),
        ("parents", ", ".join(record.get("parents", [])) or "none"),
    ]
    packet = run.packet
    if packet is not None:
        provenance = packet.manifest.provenance
        facts += [
            ("kind", packet.manifest.kind),
            ("signer", packet.signer.fingerprint if packet.signer else "unsigned"),
            ("created", provenance.created_at),
            ("method", provenance.method),
            ("licence", provenance.license or "not stated"),
        ]
    parts = [h.key_values(facts)]
    models = record.get("models", [])
    if models:
        header = ("model", "architecture", "width", "layers", "weights sha256")
        parts.append(h.table(header, [_model_row(m) for m in models]))
    measured = record.get("measurements", {})
    if measured:
        parts.append(h.table(("measurement", "value"), sorted(measured.items())))
    settings = record.get("settings", {})
    if settings:
        parts.append(
            h.table(("setting", "value"), sorted((k, _short(v)) for k, v in settings.items()))
        )
    graph = packet.manifest.graph if packet is not None else None
    if graph is not None and graph.nodes:
        graph_json = graph.model_dump(mode="json")
        parts.append(
            figure(figures.abstraction_graph(graph_json), f"{name} graph", "abstraction graph")
        )
    if packet is not None and packet.manifest.concepts:
        rows = [
            (c.name, c.layer, f"{c.confidence:.2f}", len(c.probes))
            for c in packet.manifest.concepts
        ]
        parts.append(h.table(("concept", "layer", "confidence", "probes"), rows))
    return h.section(f"Packet: {name}", parts)


def _model_row(model: dict[str, Any]) -> tuple[object, ...]:
    weights = str(model.get("weight_sha256", ""))[:16]
    return (
        model.get("id", "?"),
        model.get("architecture", "?"),
        model.get("hidden_size", "?"),
        model.get("num_layers", "?"),
        f"{weights}…" if weights else "?",
    )


def _short(value: object, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(value: object) -> str:
    return (
        "not reached"
        if value is None
        else f"{value:.0f}"
        if isinstance(value, float)
        else str(value)
    )
