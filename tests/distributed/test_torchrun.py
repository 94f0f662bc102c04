"""`m2kt extract` and `m2kt ingest` under `torchrun` with two CPU processes (gloo).

The launched run must give what one process gives: the same packet tensors and manifest, the
same adapter weights. Both sides run one thread per process (torchrun's default), so float
rounding agrees too; the comparison still allows float tolerance, as promised to users.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from m2kt.cli import main
from m2kt.packet import load_packet

CREATED = ["--created-at", "2026-01-01T00:00:00+00:00"]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def launch(args: list[str], cwd: Path) -> None:
    """Run `m2kt ARGS` in two gloo processes on this machine; fail with their output."""
    assert TORCHRUN is not None, "torchrun is installed with torch"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "--no-python", "m2kt", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One packet and one adapter from one process, and the same from two."""
    root = tmp_path_factory.mktemp("torchrun")
    extract = ["extract", "--teacher", "e1", "--concepts", "topics", *CREATED]
    ingest = ["ingest", "--student", "e2", "--allow-unsigned", "--steps", "10"]
    ingest += ["--no-step-selection"]  # every step trains data-parallel
    with one_thread():
        assert main([*extract, "--out", str(root / "one.m2kt"), "--device", "cpu"]) == 0
        assert main([*ingest, "--packet", str(root / "one.m2kt"), "--out", str(root / "a1")]) == 0
    launch([*extract, "--out", "two.m2kt"], root)
    launch([*ingest, "--packet", "one.m2kt", "--out", "a2"], root)
    return root


def test_two_processes_extract_the_same_packet(runs: Path) -> None:
    one = load_packet(runs / "one.m2kt", allow_unsigned=True)
    two = load_packet(runs / "two.m2kt", allow_unsigned=True)
    assert one.manifest.concepts == two.manifest.concepts
    assert one.manifest.graph == two.manifest.graph
    assert one.tensors.keys() == two.tensors.keys()
    for name, tensor in one.tensors.items():
        torch.testing.assert_close(two.tensors[name], tensor, rtol=1e-4, atol=1e-3, msg=name)
    assert not (runs / "two.m2kt.record.json.tmp").exists()
    record = json.loads((runs / "two.m2kt.record.json").read_text())
    assert record["inputs_seen"] == {
        "teacher": 60,
        "teacher_anchors": 1024,
    }  # each probe counted once, not per process


def test_two_processes_ingest_the_same_adapter(runs: Path) -> None:
    one = load_file(runs / "a1" / "adapter_model.safetensors")
    two = load_file(runs / "a2" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    reports = [json.loads((runs / a / "ingestion_report.json").read_text()) for a in ("a1", "a2")]
    assert reports[0]["inputs"] == reports[1]["inputs"]
    for one, two in zip(reports[0]["checks"], reports[1]["checks"], strict=True):
        assert (one["name"], one["passed"]) == (two["name"], two["passed"])
        torch.testing.assert_close(
            [two["before"], two["after"]], [one["before"], one["after"]], equal_nan=True
        )
    history = [r["loss_history"] for r in reports]
    assert set(history[0]) == {"geo", "struct", "reason", "kl", "safety", "total"}
    assert history[0].keys() == history[1].keys() and len(history[0]["total"]) == 10
    for term, values in history[0].items():
        torch.testing.assert_close(history[1][term], values, rtol=1e-4, atol=1e-6, msg=term)
