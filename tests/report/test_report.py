"""`m2kt report`: records in, one self-contained HTML page with its figures, shown in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from m2kt.cli import main
from m2kt.errors import UsageError
from m2kt.report import build_report, collect
from m2kt.report.records import write_packet_record

from conftest import knowledge_packet

RESULTS = Path(__file__).parents[2] / "benchmarks" / "results"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def ingestion_report() -> dict:
    """The shape `m2kt ingest` writes, with a few training steps to draw."""
    checks = [
        {"name": "transfer", "before": 0.85, "after": 0.95, "passed": True, "reason": "ok"},
        {"name": "held-in", "before": 0.85, "after": 0.85, "passed": True, "reason": "ok"},
        {"name": "safety", "before": 0.15, "after": 0.22, "passed": True, "reason": "ok"},
    ]
    history = {"geo": [0.5, 0.4, 0.3], "kl": [0.2, 0.1, 0.05], "total": [0.7, 0.5, 0.35]}
    return {
        "accepted": True,
        "checks": checks,
        "loss_history": history,
        "student": {"id": "e2", "architecture": "Bert", "layer": 3, "weight_sha256": "ab" * 32},
        "packet": {"digest": "sha256:" + "cd" * 32, "signer": None, "teacher": [{"id": "e1"}]},
        "inputs": {"teacher": 60, "student": 142, "student_training": 60},
        "trainable_parameters": 153986,
        "seconds": 2.8,
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    packet_path = knowledge_packet().save(run / "topics.m2kt")
    write_packet_record(packet_path, "extract", knowledge_packet(), 1.5)
    (run / "adapter").mkdir()
    (run / "adapter" / "ingestion_report.json").write_text(json.dumps(ingestion_report()))
    (run / "bench").mkdir()
    shutil.copy(RESULTS / "efficiency-quick.json", run / "bench" / "results.json")
    shutil.copy(RESULTS / "patch-full.json", run / "bench" / "patch-full.json")
    (run / "notes.json").write_text("[1, 2]")  # not a record: ignored
    return run


def test_records_are_found_by_name_and_shape(run_dir: Path) -> None:
    records = collect(run_dir)
    assert [p.record_path.name for p in records.packets] == ["topics.m2kt.record.json"]
    assert records.packets[0].packet is not None
    assert [i.adapter_dir.name for i in records.ingestions] == ["adapter"]
    assert sorted(b.path.name for b in records.benchmarks) == ["patch-full.json", "results.json"]


@pytest.fixture(scope="module")
def page(run_dir: Path) -> str:
    """The report as `m2kt report RUN_DIR` writes it (built once for this module)."""
    assert main(["report", str(run_dir)]) == 0
    return (run_dir / "report" / "report.html").read_text()


def test_the_page_holds_every_figure_inline(run_dir: Path, page: str) -> None:
    out = run_dir / "report"
    pngs = sorted(out.glob("*.png"))
    # efficiency curves, patch bars, before/after, loss curves, abstraction graph
    assert len(pngs) == 5 and len(IMAGE.findall(page)) == 5
    assert {p.read_bytes()[:8] for p in pngs} == {b"\x89PNG\r\n\x1a\n"}
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the page
    for shown in ("packet", "logit KD", "e2", "Packet: topics.m2kt", "concept c0", "tiny"):
        assert shown in page


def test_no_records_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no m2kt records"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_chromium_decodes_every_figure(page: str, tmp_path: Path) -> None:
    assert rendered_images(page, tmp_path) == (5, 5)
    broken = IMAGE.sub('<img src="data:image/png;base64,iVBORw0KGgo="', page, count=1)
    assert rendered_images(broken, tmp_path) == (4, 5)  # the check can tell


def rendered_images(page: str, tmp_path: Path) -> tuple[int, int]:
    """(decoded, total) <img> elements once headless Chromium has loaded the page."""
    probe = (
        '<script>addEventListener("load", () => { const all = [...document.images]; '
        "document.title = `decoded ${all.filter(i => i.complete && i.naturalWidth > 0).length}"
        " of ${all.length}`; });</script>"
    )
    path = tmp_path / "probe.html"
    path.write_text(page.replace("</body>", probe + "</body>"))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r"<title>decoded (\d+) of (\d+)</title>", done.stdout)
    assert found, done.stderr[-2000:]
    return int(found[1]), int(found[2])
