"""What the commands that run a model share for devices and launchers (torchrun, accelerate)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from m2kt.cli._common import error_console, progress_bars
from m2kt.distributed import DEVICES, World
from m2kt.progress import quiet

if TYPE_CHECKING:
    from m2kt.models.view import ModelView


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the model runs: auto (a GPU if torch sees one, else the CPU), cpu or cuda; "
        "under torchrun or accelerate launch each process takes the GPU of its local rank",
    )


@contextmanager
def stage_progress(world: World) -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars in the writing process only: N processes drawing N bars would garble them."""
    if not world.is_writer:
        yield quiet
        return
    with progress_bars() as progress:
        yield progress


def load_on(world: World, model: str, max_length: int | None) -> ModelView:
    """Load `model` onto this process's device; process 0 says so."""
    from m2kt.models.load import load_model

    if world.is_writer:
        error_console.print(f"loading {model} on {world.device} …")
    return load_model(model, max_length=max_length).to(world.device)
