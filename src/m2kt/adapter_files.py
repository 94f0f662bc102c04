"""Adapter directories as PEFT lays them out: `adapter_config.json` plus one safetensors file.

Every trainable piece m2kt hands a user (a Concept Alignment Layer, an ingestion adapter) is
such a directory, optionally with a few extra files (a report). Loading treats it as untrusted:
sizes are checked before anything is read, the JSON must be an object, tensors must be finite
floats, and nothing is ever unpickled.

Saving replaces the whole directory so that a reader, or a crash, sees the old complete
directory or the new complete one. For a target `d`:

1. the new directory is built and fsynced as a hidden sibling `.d.m2kt-new-*`;
2. `d` is renamed to `.d.m2kt-old`, the new directory is renamed to `d`, the parent is fsynced;
3. `.d.m2kt-old` is removed.

Between the two renames of step 2 (two system calls) no `d` exists. A reader arriving then
reads `.d.m2kt-old`, which is complete; after a crash there, the next save renames it back
first. A `.d.m2kt-old` beside an existing `d` is the leftover of a finished save, removed by the
next save; so are `.d.m2kt-new-*` directories over an hour old (a crash while building). Two
processes saving to one directory at the same time are not supported.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _save_safetensors

from m2kt.atomic import _current_umask, _fsync_directory
from m2kt.errors import AdapterError, UsageError
from m2kt.faults import crash_point
from m2kt.packet.canonical import strict_loads
from m2kt.packet.limits import MiB

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MAX_CONFIG_BYTES = 16 * MiB
_OLD = ".m2kt-old"
_NEW = ".m2kt-new-"
_STALE_BUILD_SECONDS = 3600
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def save_adapter_dir(
    directory: Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    extra_files: Mapping[str, bytes] | None = None,
) -> None:
    """Write `directory` atomically: `config` as JSON, `tensors` as safetensors, `extra_files`.

    Everything is serialised and checked before the disk is touched; on any error the previous
    directory, if any, is left exactly as it was and no temporary directory remains.
    """
    target = Path(directory)
    files = {CONFIG_FILE: _config_bytes(config), WEIGHTS_FILE: _weights_bytes(tensors)}
    for name, data in (extra_files or {}).items():
        _check_extra_name(name)
        files[name] = bytes(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    if target.exists() and not target.is_dir():
        raise UsageError(
            f"{target} is a file; an adapter is saved as a directory", "pick a new path"
        )
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}{_NEW}", dir=target.parent))
    try:
        os.chmod(build, 0o777 & ~_current_umask())  # mkdtemp's 0700 is not what users expect
        for name, data in files.items():
            _write_file(build / name, data)
        _fsync_directory(build)
        _swap_in(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def load_adapter_dir(
    directory: Path, *, max_bytes: int = 2**31
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config object and the tensors of an adapter directory; `max_bytes` bounds the weights.

    Raises AdapterError, with a hint, for every problem a user can cause.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise UsageError(f"max_bytes must be a positive integer; got {max_bytes!r}")
    target = Path(directory)
    error = AdapterError(
        f"adapter directory {target} kept being replaced while it was read",
        "load it again once the process saving it has finished",
    )
    for _ in range(5):  # a save may swap the directory between any two of our system calls
        try:
            source = _existing(target)
        except AdapterError as exc:  # no directory, or a file: look again in case of a swap
            error = exc
            continue
        try:
            config_data, weights_data = _read_files(source, max_bytes)
        except _Replaced:
            continue
        return _parse_config(config_data, target), _parse_weights(weights_data, target)
    raise error


def _config_bytes(config: Mapping[str, Any]) -> bytes:
    if not isinstance(config, Mapping):
        raise UsageError(f"an adapter config must be a mapping; got {type(config).__name__}")
    try:
        text = json.dumps(
            dict(config), indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"the adapter config cannot be written as JSON: {exc}",
            "use strings, finite numbers, booleans, None, lists and dicts with string keys",
        ) from None
    return (text + "\n").encode("utf-8")


def _weights_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    ready: dict[str, torch.Tensor] = {}
    for name, tensor in sorted(tensors.items()):
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise UsageError(f"adapter tensors must map names to tensors; got {name!r}")
        if tensor.dtype not in _FLOAT_DTYPES:
            raise AdapterError(f"tensor {name} is {tensor.dtype}; adapters hold float tensors only")
        if not torch.isfinite(tensor).all():
            raise AdapterError(
                f"tensor {name} holds NaN or infinite values", "fix the training run"
            )
        ready[name] = tensor.detach().to("cpu").contiguous().clone()  # clone: no shared storage
    return _save_safetensors(ready, metadata={"format": "pt"})


def _check_extra_name(name: str) -> None:
    plain = isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
    if not plain or "\\" in name or name in (CONFIG_FILE, WEIGHTS_FILE):
        raise UsageError(
            f"extra file name {name!r} is not allowed",
            f"use a plain file name other than {CONFIG_FILE} and {WEIGHTS_FILE}",
        )


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _aside(target: Path) -> Path:
    return target.parent / f".{target.name}{_OLD}"


def _swap_in(build: Path, target: Path) -> None:
    """Rename `build` to `target`, moving an existing `target` aside first (module docstring)."""
    if not target.exists():
        os.rename(build, target)
        _fsync_directory(target.parent)
        return
    aside = _aside(target)
    crash_point("adapter:before-swap")
    os.rename(target, aside)
    crash_point("adapter:between-renames")
    try:
        os.rename(build, target)
    except BaseException:
        os.rename(aside, target)
        raise
    _fsync_directory(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _recover(target: Path) -> None:
    """Undo what a crashed save left behind (see the module docstring)."""
    aside = _aside(target)
    if aside.is_dir():
        if target.exists() or target.is_symlink():
            shutil.rmtree(aside)
        else:
            os.rename(aside, target)
            _fsync_directory(target.parent)
    prefix = f".{target.name}{_NEW}"
    cutoff = time.time() - _STALE_BUILD_SECONDS
    with os.scandir(target.parent) as entries:
        for entry in entries:
            stale = entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False)
            if stale and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)


def _existing(target: Path) -> Path:
    """The directory to read for `target`: itself, or the old one while a save swaps it."""
    source = target
    if not target.exists() and _aside(target).is_dir():
        source = _aside(target)  # a save is between its two renames, or crashed there
    if not source.exists():
        raise AdapterError(
            f"adapter directory {target} does not exist",
            "check the path, or save the adapter first",
        )
    if not source.is_dir():
        raise AdapterError(
            f"{target} is a file; an adapter is a directory of {CONFIG_FILE} and {WEIGHTS_FILE}",
            "pass the directory the adapter was saved to",
        )
    return source


class _Replaced(Exception):
    """A save swapped the directory while it was being read: read it again."""


def _read_files(directory: Path, max_bytes: int) -> tuple[bytes, bytes]:
    """Both files, opened through one handle on the directory, so that a save swapping in a new
    directory meanwhile cannot pair one version's config with another version's weights."""
    if os.open not in os.supports_dir_fd:  # no dir_fd (Windows): read by path
        return (
            _read_limited(directory / CONFIG_FILE, None, directory, MAX_CONFIG_BYTES),
            _read_limited(directory / WEIGHTS_FILE, None, directory, max_bytes),
        )
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        raise _Replaced from None
    try:
        return (
            _read_limited(CONFIG_FILE, dir_fd, directory, MAX_CONFIG_BYTES),
            _read_limited(WEIGHTS_FILE, dir_fd, directory, max_bytes),
        )
    except AdapterError:
        if _replaced(directory, dir_fd):
            raise _Replaced from None
        raise
    finally:
        os.close(dir_fd)


def _replaced(directory: Path, dir_fd: int) -> bool:
    """Whether `directory` is no longer the directory `dir_fd` was opened on."""
    try:
        return os.stat(directory).st_ino != os.fstat(dir_fd).st_ino
    except FileNotFoundError:
        return True


def _read_limited(name: str | Path, dir_fd: int | None, directory: Path, limit: int) -> bytes:
    """The bytes of one file, refusing it before reading when it is over `limit` bytes."""
    shown = Path(name).name
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        raise AdapterError(
            f"{directory} has no {shown}",
            f"an adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}; save it again",
        ) from None
    except IsADirectoryError:
        raise AdapterError(f"{directory / shown} is not a regular file") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AdapterError(f"{directory / shown} is not a regular file")
        if info.st_size > limit:
            raise AdapterError(
                f"{directory / shown} is {info.st_size} bytes, over the limit of {limit}",
                "if you trust this adapter, raise the limit (max_bytes)",
            )
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew after the check
        raise AdapterError(f"{directory / shown} is over the limit of {limit} bytes")
    return data


def _parse_config(data: bytes, directory: Path) -> dict[str, Any]:
    try:
        value = strict_loads(data)
    except ValueError as exc:
        raise AdapterError(
            f"{directory / CONFIG_FILE} is not valid JSON: {exc}",
            "the file is damaged; save the adapter again",
        ) from None
    if not isinstance(value, dict):
        kind = _JSON_TYPES.get(type(value), type(value).__name__)
        raise AdapterError(
            f"{directory / CONFIG_FILE} holds {kind}, not a JSON object",
            "the file is damaged or not an adapter config; save the adapter again",
        )
    return value


def _parse_weights(data: bytes, directory: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = _load_safetensors(data)
    except Exception as exc:  # the Rust parser raises its own SafetensorError type
        raise AdapterError(
            f"{directory / WEIGHTS_FILE} is not a valid safetensors file ({exc})",
            "the file is damaged or truncated; save the adapter again",
        ) from None
    for name, tensor in sorted(tensors.items()):
        if tensor.dtype not in _FLOAT_DTYPES:
            raise AdapterError(
                f"tensor {name} in {directory / WEIGHTS_FILE} is {tensor.dtype}; adapters hold "
                "float16, bfloat16, float32 or float64 tensors only",
                "the file was not written by m2kt; save the adapter again",
            )
        if not torch.isfinite(tensor).all():
            raise AdapterError(
                f"tensor {name} in {directory / WEIGHTS_FILE} holds NaN or infinite values",
                "the training run that wrote it diverged; train and save it again",
            )
    return tensors
