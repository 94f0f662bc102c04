"""Packet files, one per (digest, signer), written once, never modified in place.

`BlobStore` is the interface; `FileBlobs` keeps files under
`objects/<2 hex>/<64 hex digest>/<signer fingerprint>.m2kt`. An object store (S3 and the like)
would implement the same methods with keys of the same shape.

Every change of a key's file happens while the index holds that key's lock (`Index.locked`), so
the file and its row change together. The file system steps are each atomic:
- `put` hard-links the staged upload to a fresh name beside the target and renames it over the
  target, so a reader sees the whole old file, the whole new one, or none;
- `retire` renames the file to a tombstone `<signer>.m2kt.<random>.deleted`; the registry
  removes the tombstone once the index row's deletion has committed, and restores it if the
  deletion did not commit. A reader that has already opened the file keeps reading it.

Uploads are staged in `staging/<instance>/` on the same file system. Each process (each
`FileBlobs`) holds an exclusive `flock` on its own staging folder's lock file while it lives;
a folder whose lock can be taken belongs to a process that has died, and is removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1 << 20
Key = tuple[str, str]  # (digest, signer)


class BlobStore(Protocol):
    def staging_file(self) -> tuple[BinaryIO, Path]:
        """A new, empty file to write an upload into before it is checked."""

    def sync(self, staged: Path) -> None:
        """Make the staged bytes durable before they are stored."""

    def put(self, staged: Path, key: Key) -> None:
        """Store the staged file under `key`, replacing a file no row names."""

    def open(self, key: Key) -> BinaryIO:
        """The stored file, opened; FileNotFoundError if absent."""

    def sha256(self, key: Key) -> str: ...

    def retire(self, key: Key) -> str | None:
        """Move the file out of reach; returns a token for `restore` or `drop`."""

    def restore(self, key: Key, token: str) -> None: ...

    def drop(self, token: str) -> None: ...

    def keys(self) -> list[Key]: ...

    def debris(self, key: Key) -> list[str]:
        """Tombstones and half-stored files of `key`, as tokens for `drop` or `restore`."""

    def remove(self, key: Key) -> None: ...


class FileBlobs:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.staging_root = self.root / "staging"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.staging_root.mkdir(parents=True, exist_ok=True)
        self.removed_staging = self._clean_staging()
        # Locked before it gets a name that `_clean_staging` looks at.
        making = Path(tempfile.mkdtemp(prefix=".", dir=self.staging_root))
        self._lock = open(making / ".lock", "wb")  # noqa: SIM115 (held while we live)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.staging = self.staging_root / uuid.uuid4().hex
        making.rename(self.staging)
        self._finalizer = weakref.finalize(self, _remove_staging, self.staging, self._lock)

    def path(self, key: Key) -> Path:
        digest, signer = key
        hex_digest = digest.removeprefix("sha256:")
        return self.objects / hex_digest[:2] / hex_digest / f"{signer}.m2kt"

    def staging_file(self) -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".m2kt", dir=self.staging)
        return os.fdopen(fd, "w+b"), Path(name)

    def sync(self, staged: Path) -> None:
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())

    def put(self, staged: Path, key: Key) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fresh = target.with_name(f"{target.name}.{uuid.uuid4().hex}.new")
        os.link(staged, fresh)
        os.chmod(fresh, 0o444)
        os.replace(fresh, target)
        _sync_dir(target.parent)

    def open(self, key: Key) -> BinaryIO:
        return open(self.path(key), "rb")

    def sha256(self, key: Key) -> str:
        return file_sha256(self.path(key))

    def retire(self, key: Key) -> str | None:
        target = self.path(key)
        tomb = target.with_name(f"{target.name}.{uuid.uuid4().hex}.deleted")
        try:
            os.rename(target, tomb)
        except FileNotFoundError:
            return None
        _sync_dir(target.parent)
        return str(tomb)

    def restore(self, key: Key, token: str) -> None:
        os.replace(token, self.path(key))

    def drop(self, token: str) -> None:
        Path(token).unlink(missing_ok=True)

    def remove(self, key: Key) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self) -> list[Key]:
        found = set()
        for path in self.objects.glob("*/*/*.m2kt*"):
            found.add((f"sha256:{path.parent.name}", path.name.split(".")[0]))
        return sorted(found)

    def writable(self) -> None:
        """Raise unless a file can be made in this process's staging folder."""
        handle, path = self.staging_file()
        handle.close()
        path.unlink()

    def stored(self, key: Key) -> bool:
        return self.path(key).is_file()

    def debris(self, key: Key) -> list[str]:
        target = self.path(key)
        return sorted(str(p) for p in target.parent.glob(f"{target.name}.*"))

    def legacy_files(self) -> list[Path]:
        """Files of the layout before signers shared digests: `objects/<2 hex>/<hex>.m2kt`."""
        return sorted(self.objects.glob("*/*.m2kt"))

    def _clean_staging(self) -> int:
        """Remove the staging folders of processes that have died (and loose old files)."""
        removed = 0
        for entry in self.staging_root.iterdir():
            if entry.name.startswith("."):
                continue  # being made
            if entry.is_file():  # the single staging folder of older versions
                entry.unlink(missing_ok=True)
                removed += 1
                continue
            try:
                with open(entry / ".lock", "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    removed += sum(1 for p in entry.iterdir() if p.name != ".lock")
                    shutil.rmtree(entry, ignore_errors=True)
            except BlockingIOError:
                continue  # a live process's uploads
            except FileNotFoundError:
                continue  # removed by another process starting at the same time
        return removed

    def close(self) -> None:
        self._finalizer()


def _remove_staging(staging: Path, lock: BinaryIO) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    lock.close()


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
