"""Helpers shared by the subcommands: consoles and the packet-reading options."""

from __future__ import annotations

import argparse
import os
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from m2kt.errors import UsageError
from m2kt.inputs import read_bounded
from m2kt.packet import Limits


def shown(value: object, *, lines: bool = False) -> str:
    """`value` as inert terminal text: every control or format character (ESC, CR, BEL, bidi
    overrides, line separators …) written as a visible escape such as `\\x1b`; newlines and tabs
    kept only with `lines`. Text from outside (packets, specs, CSVs, the broker, `--text`) goes
    through here, field by field, and the consoles apply it to everything they print."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_escaped(ch, lines) for ch in text)


def _escaped(ch: str, lines: bool) -> str:
    if ch.isprintable() or (lines and ch in "\n\t") or unicodedata.category(ch) == "Zs":
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class TerminalConsole(Console):
    """A console that never interprets what it prints: no markup, no emoji codes, no
    highlighting, and `shown` applied to every string (titles and table cells included)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, soft_wrap=True, **options)

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(shown(text, lines=True), **options)


console = TerminalConsole()
error_console = TerminalConsole(stderr=True)


def output_file(text: str) -> str:
    """An argparse type: a file path that can be written, checked before any work starts."""
    return _file_to_write(text, "output", "name a file, e.g. DIR/name.m2kt")


def _file_to_write(text: str, what: str, hint: str) -> str:
    _writable_parent(text)
    if Path(text).is_dir():
        raise UsageError(f"{what} {text} is a directory", hint)
    return text


def output_directory(text: str) -> str:
    """An argparse type: a directory that exists or can be created, checked before any work."""
    _writable_parent(text)
    if Path(text).exists() and not Path(text).is_dir():
        raise UsageError(f"output {text} is a file, not a directory", "name a directory")
    return text


def _writable_parent(text: str) -> None:
    if not text.strip():
        raise UsageError("an output path is empty", "name a path")
    path = Path(text).absolute()
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise UsageError(f"cannot write {text}: {existing} is a file", "name another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {text}: {existing} is not writable", "name another path")


def pem_file(text: str) -> str:
    """An argparse type: a PEM file (a TLS certificate or its key) that reads within 1 MiB."""
    hint = "name a PEM file (-----BEGIN …)"
    if b"-----BEGIN " not in read_bounded(Path(text), "PEM file", 1 << 20, hint):
        raise UsageError(f"{text} is not a PEM file", hint)
    return text


def broker_index(text: str) -> str:
    """An argparse type: a broker's index, a postgresql:// URL or a SQLite file to write."""
    if text.startswith(("postgresql://", "postgres://")):
        return text
    return _file_to_write(text, "index", "name a SQLite file or postgresql://…")


def concept_spec(text: str) -> str:
    """An argparse type: a concept spec (file or shipped name) that reads within its limits."""
    from m2kt.concepts.spec import load_spec

    load_spec(text)
    return text


def anchor_source(text: str) -> str:
    """An argparse type: an anchor set (shipped name or text file) that reads within its limits."""
    from m2kt.anchors import load_anchor_set

    load_anchor_set(text)
    return text


def model_reference(text: str) -> str:
    """An argparse type: a model id, GGUF file or model directory, checked before it loads."""
    from m2kt.models.load import check_model_reference

    check_model_reference(text)
    return text


def private_key(text: str) -> str:
    """An argparse type: a signing key that loads, checked before any work starts."""
    from m2kt.packet.signing import check_private_key

    check_private_key(Path(text))
    return text


def renamed(now: str) -> type[argparse.Action]:
    """An old spelling, kept for one release so that it fails with the new one as its hint."""

    class Renamed(argparse.Action):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["nargs"] = argparse.OPTIONAL
            super().__init__(*args, **kwargs)

        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            raise UsageError(f"{parser.prog}: {option} is no longer this option", f"use {now}")

    return Renamed


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    parser.add_argument(
        "--max-packet-bytes",
        type=int,
        default=defaults.max_file_bytes,
        metavar="N",
        help=f"refuse packet files larger than N bytes (default {defaults.max_file_bytes})",
    )


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(max_file_bytes=args.max_packet_bytes)


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A callback `(stage, done, total)` that draws one rich progress bar per stage; when stderr
    is not a terminal (a log file, a CI job), plain lines instead, so that logs show where a
    long run stands: a stage's start, each tenth of it, and its end."""
    if not error_console.is_terminal:
        yield _progress_lines()
        return
    with Progress(
        TextColumn("{task.description:<18}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=error_console,
        transient=False,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update


def _progress_lines() -> Callable[[str, int, int], None]:
    started = time.monotonic()
    shown_tenths: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        tenth = 10 * done // total if total > 0 else 10
        if shown_tenths.get(stage) == tenth:
            return
        shown_tenths[stage] = tenth
        elapsed = time.monotonic() - started
        error_console.print(f"{stage}: {done}/{total} ({elapsed:.0f} s)")

    return update


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PUB",
        help="trusted public key of the packet's signer (repeatable)",
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept an unsigned packet (only for packets you made yourself)",
    )


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        type=output_directory,
        metavar="DIR",
        help="embedding cache (default ~/.cache/m2kt)",
    )


def embedding_cache(args: argparse.Namespace) -> Path:
    """The embedding cache directory: --cache, else the per-user cache; created if missing."""
    from m2kt.models.embedded import cache_dir

    cache = Path(args.cache) if args.cache else cache_dir() / "embeddings"
    cache.mkdir(parents=True, exist_ok=True)
    return cache
