"""Reading a file a user names (a spec, a CSV, a key, a token file) with a bound on its size."""

from __future__ import annotations

from pathlib import Path

from m2kt.errors import M2KTError, UsageError


def read_bounded(
    path: Path, what: str, max_bytes: int, hint: str, error: type[M2KTError] = UsageError
) -> bytes:
    """The bytes of `path`; a missing path, a directory or device, an unreadable file or one over
    `max_bytes` is an `error` naming `what` (e.g. "concept spec"), with `hint`. At most
    `max_bytes + 1` bytes are read, so a file that grows, or /dev/zero, cannot exhaust memory."""
    if not path.exists():
        raise error(f"no such {what}: {path}", hint)
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file", hint)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}", hint) from None
    if len(data) > max_bytes:
        raise error(f"{what} {path} is over the limit of {max_bytes:,} bytes", hint)
    return data
