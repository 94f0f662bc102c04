"""Turn the JSON records of a run into one self-contained HTML page and PNG figures.

RUN_DIR is searched recursively for the records m2kt writes: PACKET.record.json beside packets
(with the packet itself for its abstraction graph and provenance), ingestion_report.json in
adapter directories, and benchmark results (results.json, or the shipped
benchmarks/results/*.json). The page shows accuracy against inputs consumed per method, loss
curves per term, before/after per verification probe set, the abstraction graph and each
packet's provenance, with every image inlined as base64 PNG. Nothing is re-computed.

Examples:
  m2kt report out/demo                       # writes out/demo/report/report.html
  m2kt report benchmarks/results --out /tmp/bench-report
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import console, output_directory

NAME = "report"
SUMMARY = "one HTML page with plots from a run's records"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder holding a run's records")
    parser.add_argument(
        "--out",
        type=output_directory,
        metavar="DIR",
        help="where to write (default RUN_DIR/report)",
    )


def run(args: argparse.Namespace) -> int:
    from m2kt.report import build_report

    report = build_report(args.run_dir, args.out)
    console.print(f"wrote {report.html} with {len(report.figures)} figures beside it")
    return 0
