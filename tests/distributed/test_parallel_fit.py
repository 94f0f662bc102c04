"""Data-parallel training of the concept memory: two gloo processes train what one does."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from fit_worker import train
from safetensors.torch import load_file
from test_torchrun import TORCHRUN

WORKER = Path(__file__).with_name("fit_worker.py")


def test_two_processes_train_the_same_memory(tmp_path: Path) -> None:
    tensors, history = train()
    assert set(history) == {"geo", "struct", "reason", "kl", "safety", "total"}
    assert len(history["total"]) == 30 and history["total"][-1] < history["total"][0]
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path)],
        env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    launched = load_file(tmp_path / "memory.safetensors")
    for name, tensor in tensors.items():
        torch.testing.assert_close(launched[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    for term, values in json.loads((tmp_path / "history.json").read_text()).items():
        torch.testing.assert_close(
            torch.tensor(values), torch.tensor(history[term]), rtol=1e-4, atol=1e-6
        )
