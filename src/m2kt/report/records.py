"""The records every verb leaves behind: written here by the library, found here by `m2kt report`.

- `*.record.json` beside a packet (`m2kt extract`, `m2kt patch …`), with the packet itself when
  it is still there (the graph and the full provenance are in it);
- `ingestion_report.json` inside an adapter directory (`m2kt ingest`);
- benchmark results (`results.json`, or any JSON with the benchmark keys `plan` and `machine`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2kt import __version__
from m2kt.atomic import atomic_write_bytes
from m2kt.errors import M2KTError, UsageError
from m2kt.packet import Packet, read_packet

MAX_RECORD_BYTES = 64 * 1024 * 1024  # records are small; anything bigger is not one of ours
RECORD_SUFFIX = ".record.json"
INGESTION_FILE = "ingestion_report.json"


def write_packet_record(path: Path, step: str, packet: Packet, seconds: float) -> Path:
    """The JSON record of one step that wrote a packet (extract, patch train / transfer, merge),
    written next to it as `<packet>.record.json`.

    It holds what the packet's provenance holds (inputs each model saw, settings, measurements,
    models, parents) plus what must stay out of a deterministic packet: the wall-clock time and
    the m2kt that ran.
    """
    provenance = packet.manifest.provenance
    record = {
        "step": step,
        "m2kt_version": __version__,
        "packet": str(path),
        "digest": packet.digest,
        "seconds": round(seconds, 3),
        "packet_bytes": path.stat().st_size,
        "tensor_values": sum(t.numel() for t in packet.tensors.values()),
        "inputs_seen": provenance.inputs_seen,
        "settings": provenance.settings,
        "measurements": provenance.measurements,
        "models": [m.model_dump(mode="json", exclude_none=True) for m in provenance.models],
        "parents": provenance.parents,
    }
    target = path.with_name(path.name + RECORD_SUFFIX)
    atomic_write_bytes(target, (json.dumps(record, indent=1) + "\n").encode())
    return target


@dataclass(frozen=True)
class PacketRun:
    """One packet's record, and the packet when it could be read (signature not checked)."""

    record_path: Path
    record: dict[str, Any]
    packet: Packet | None


@dataclass(frozen=True)
class IngestionRun:
    adapter_dir: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class BenchmarkRun:
    path: Path
    results: dict[str, Any]


@dataclass
class RunRecords:
    root: Path
    packets: list[PacketRun] = field(default_factory=list)
    ingestions: list[IngestionRun] = field(default_factory=list)
    benchmarks: list[BenchmarkRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: why", shown on the page

    @property
    def empty(self) -> bool:
        return not (self.packets or self.ingestions or self.benchmarks)


def collect(run_dir: str | Path) -> RunRecords:
    """Every record under `run_dir` (recursively), in path order."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory", "pass the folder a run wrote into")
    found = RunRecords(root)
    for path in sorted(root.rglob("*.json")):
        kind = _kind_by_name(path)
        if kind is None and path.name != "results.json" and not _looks_like_benchmark(path):
            continue
        data = _read_json(path, found)
        if data is None:
            continue
        if kind == "packet":
            found.packets.append(PacketRun(path, data, _packet_beside(path, found)))
        elif kind == "ingestion":
            found.ingestions.append(IngestionRun(path.parent, data))
        elif "plan" in data:
            found.benchmarks.append(BenchmarkRun(path, data))
        else:
            found.skipped.append(f"{_relative(path, root)}: not a benchmark result")
    if found.empty:
        raise UsageError(
            f"no m2kt records under {root}",
            f"pass a folder holding *{RECORD_SUFFIX}, {INGESTION_FILE} or benchmark results.json",
        )
    return found


def _kind_by_name(path: Path) -> str | None:
    if path.name.endswith(RECORD_SUFFIX):
        return "packet"
    return "ingestion" if path.name == INGESTION_FILE else None


def _looks_like_benchmark(path: Path) -> bool:
    """A benchmark's JSON under another name (the shipped `efficiency-quick.json`)."""
    if path.stat().st_size > MAX_RECORD_BYTES:
        return False
    with path.open("rb") as handle:
        head = handle.read(4096)
    return b'"plan"' in head and b'"m2kt_version"' in head


def _read_json(path: Path, found: RunRecords) -> dict[str, Any] | None:
    if path.stat().st_size > MAX_RECORD_BYTES:
        found.skipped.append(f"{_relative(path, found.root)}: larger than a record can be")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        found.skipped.append(f"{_relative(path, found.root)}: not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        found.skipped.append(f"{_relative(path, found.root)}: not a JSON object")
        return None
    return data


def _packet_beside(record_path: Path, found: RunRecords) -> Packet | None:
    """The packet a record describes, read with the usual size limits; None if gone or bad."""
    packet_path = record_path.with_name(record_path.name[: -len(RECORD_SUFFIX)])
    if not packet_path.is_file():
        return None
    try:
        return read_packet(packet_path)
    except M2KTError as exc:
        found.skipped.append(f"{_relative(packet_path, found.root)}: {exc.message}")
        return None


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root))
