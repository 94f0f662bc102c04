"""Several processes, one result: m2kt under `torchrun` or `accelerate launch`.

Both launchers start one process per device and describe the group in the environment
(`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`); m2kt joins that group with
PyTorch's own distributed runtime instead of inventing a launcher. Work is split so that the
result does not depend on the number of processes:

- probe batches are dealt out whole (batch i to process i mod world size), so every probe is
  read in the same batch, with the same padding, as in a single process; the rows are then put
  back in order with one all-reduce over zero-filled tensors (x + 0 is exact);
- training sums each process's gradients on its share of the probes (`average_gradients`);
- only process 0 writes files (`is_writer`).

Without a launcher the world is one process and every function here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from m2kt.errors import UsageError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class World:
    """This process's place in the group: `rank` of `size`, and the device it computes on."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether item (or batch) `index` of a list dealt round-robin belongs to this process."""
        return index % self.size == self.rank


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` is CUDA when torch sees a GPU, else the CPU; `cuda` without a GPU is an error.

    Under a launcher each process takes the GPU of its local rank.
    """
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}", f"choose one of {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(
            f"--device cuda was asked for, but this torch ({torch.__version__}) sees no GPU",
            "install a CUDA build of torch on a machine with a GPU, or pass --device cpu",
        )
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_from_environment(device: str = "auto") -> World:
    """Join the process group a launcher described, if any, and return this process's World.

    CPU processes talk over gloo, GPU processes over NCCL. Calling it twice is harmless.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, local_rank)
    if size > 1 and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return current(chosen)


def current(device: torch.device | None = None) -> World:
    """The World of this process as torch.distributed sees it (one process if not joined)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World(device=device or torch.device("cpu"))
    return World(dist.get_rank(), dist.get_world_size(), device or torch.device("cpu"))


def shutdown() -> None:
    """Leave the process group (launchers expect it before the process exits)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def assemble(parts: Sequence[tuple[int, torch.Tensor]], total: int) -> torch.Tensor:
    """Rows [total, ...] (float32) from each process's `(first row, block)` parts, on every process.

    Each process fills the rows it computed into zeros and one all-reduce sums them: every row
    has exactly one non-zero contribution, so the sum is exact. The row shape is taken from
    process 0, which always holds the first block.
    """
    world = current()
    if total == 0:
        return torch.empty(0)
    if world.size == 1:
        return torch.cat([block for _, block in sorted(parts, key=lambda p: p[0])])
    shape = torch.full((8,), -1, dtype=torch.long)  # process 0's row shape, -1 padded
    if world.rank == 0 and parts:
        shape[: parts[0][1].ndim - 1] = torch.tensor(parts[0][1].shape[1:])
    _all_reduce(shape, src_only=True)
    row_shape = [int(n) for n in shape if n >= 0]
    full = torch.zeros(total, *row_shape, dtype=torch.float32)
    for start, block in parts:
        full[start : start + len(block)] = block.float()
    _all_reduce(full)
    return full


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the processes (each weighted its share beforehand).

    One flat all-reduce per step; a parameter without a gradient counts as zero, so processes
    with an empty share still take part.
    """
    if current().size == 1:
        return
    params = list(parameters)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    _all_reduce(flat)
    offset = 0
    for param in params:
        count = param.numel()
        param.grad = flat[offset : offset + count].view_as(param).clone()
        offset += count


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over the processes (a copy; the same on every process)."""
    out = value.detach().clone()
    if current().size > 1:
        _all_reduce(out)
    return out


def _all_reduce(tensor: torch.Tensor, src_only: bool = False) -> None:
    """In-place sum (or, with `src_only`, process 0's copy) on the backend's device."""
    on_gpu = dist.get_backend() == "nccl"
    work = tensor.cuda() if on_gpu else tensor
    if src_only:
        dist.broadcast(work, src=0)
    else:
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
    if on_gpu:
        tensor.copy_(work.cpu())


@contextmanager
def joined(device: str = "auto") -> Iterator[World]:
    """`init_from_environment` for the length of a command, leaving the group at the end."""
    world = init_from_environment(device)
    try:
        yield world
    finally:
        shutdown()


def from_writer(value: float) -> float:
    """Process 0's `value` on every process: a choice all processes must make alike."""
    if current().size == 1:
        return value
    out = torch.tensor([value], dtype=torch.float64)
    _all_reduce(out, src_only=True)
    return float(out)
