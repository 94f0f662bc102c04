"""`--device`: the CPU works everywhere; CUDA without a GPU is a clear error, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m2kt.cli import main
from m2kt.distributed import World, current, resolve_device
from m2kt.errors import UsageError

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def test_cpu_and_auto_resolve_to_the_cpu_without_a_gpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")


@no_gpu
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(UsageError, match="sees no GPU") as raised:
        resolve_device("cuda")
    assert "--device cpu" in raised.value.hint


@no_gpu
@pytest.mark.parametrize("command", ["extract", "ingest"])
def test_commands_refuse_cuda_without_a_gpu(command: str, tmp_path: Path, keys, capsys) -> None:
    from conftest import knowledge_packet

    packet = knowledge_packet().signed(keys[0]).save(tmp_path / "p.m2kt")
    args = {
        "extract": ["extract", "--teacher", "e1", "--concepts", "topics"],
        "ingest": ["ingest", "--student", "e2", "--packet", str(packet), "--key", str(keys[1])],
    }[command]
    assert main([*args, "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "sees no GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_one_process_is_its_own_world() -> None:
    assert current() == World(0, 1, torch.device("cpu"))
    assert World(1, 2).owns(3) and not World(1, 2).owns(2)
