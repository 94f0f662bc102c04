"""Content-addressed packet files: one file per packet digest, written once, never modified.

`BlobStore` is the interface; `FileBlobs` keeps files under `objects/<2 hex>/<64 hex>.m2kt`.
An object store (S3 and the like) would implement the same methods with keys of the same shape.
Uploads are staged in `staging/` on the same file system, so that adding one is a hard link:
atomic, and refused when the digest is already there, which settles two concurrent publishers
of the same packet without a lock.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1 << 20


class BlobStore(Protocol):
    def staging_file(self) -> tuple[BinaryIO, Path]:
        """A new, empty file to write an upload into before it is checked."""

    def add(self, staged: Path, digest: str) -> bool:
        """Store the staged file under `digest`; False if one is there already (kept as is)."""

    def read(self, digest: str) -> Iterator[bytes]:
        """The stored bytes in chunks; FileNotFoundError if absent."""

    def sha256(self, digest: str) -> str: ...

    def remove(self, digest: str) -> bool: ...

    def digests(self) -> list[str]: ...


class FileBlobs:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.staging = self.root / "staging"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        hex_digest = digest.removeprefix("sha256:")
        return self.objects / hex_digest[:2] / f"{hex_digest}.m2kt"

    def staging_file(self) -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".m2kt", dir=self.staging)
        return os.fdopen(fd, "w+b"), Path(name)

    def add(self, staged: Path, digest: str) -> bool:
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(staged, target)
        except FileExistsError:
            return False
        os.chmod(target, 0o444)
        return True

    def read(self, digest: str) -> Iterator[bytes]:
        with open(self.path(digest), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def sha256(self, digest: str) -> str:
        return file_sha256(self.path(digest))

    def remove(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> list[str]:
        return sorted(f"sha256:{p.stem}" for p in self.objects.glob("*/*.m2kt"))


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
