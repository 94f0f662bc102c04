"""The store's rules, whatever holds the bytes: verify, then store the file, then index it.

An upload is staged, opened with the packet loader (container, schema, tensors, limits) and its
signature checked against the publisher's own keys, then screened; only then is the file added
under its digest and indexed. If indexing fails the file just added is removed again, so the
index never names a file that is not there; `check` proves both agree.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from m2kt.broker.blobs import BlobStore, FileBlobs, file_sha256
from m2kt.broker.errors import (
    BrokerError,
    ConflictError,
    NotFoundError,
    RefusedPacketError,
    ScopeError,
)
from m2kt.broker.index import Entry, Index, Query, SQLiteIndex
from m2kt.broker.screening import Screen, screen_packet
from m2kt.errors import M2KTError, PacketError, VerificationError
from m2kt.packet import DEFAULT_LIMITS, Limits, load_packet

_DIGEST = re.compile(r"^(sha256:)?([0-9a-f]{64})$")
INDEX_FILE = "index.sqlite"


def normalize_digest(text: str) -> str:
    """`sha256:<hex>` from either that form or the bare hex; anything else is refused."""
    match = _DIGEST.match(text.strip().lower())
    if not match:
        raise BrokerError(
            f"{text!r} is not a packet digest", "a digest is sha256: followed by 64 hex digits"
        )
    return f"sha256:{match.group(2)}"


@dataclass(frozen=True)
class Consistency:
    """How the index and the stored files agree; `ok` when they agree exactly."""

    entries: int
    files: int
    missing_files: list[str]
    unindexed_files: list[str]
    wrong_hashes: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing_files or self.unindexed_files or self.wrong_hashes)


class Registry:
    def __init__(
        self,
        blobs: BlobStore,
        index: Index,
        screen: Screen = screen_packet,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.blobs, self.index, self.screen, self.limits = blobs, index, screen, limits

    @classmethod
    def open(cls, directory: str | Path, **options: object) -> Registry:
        """The embedded store: files and an SQLite index in one directory."""
        directory = Path(directory)
        return cls(FileBlobs(directory), SQLiteIndex(directory / INDEX_FILE), **options)  # type: ignore[arg-type]

    @contextmanager
    def staged(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A staging file for one upload, removed afterwards whatever happened."""
        handle, path = self.blobs.staging_file()
        try:
            yield handle, path
        finally:
            handle.close()
            path.unlink(missing_ok=True)

    def publish_file(
        self, source: str | Path, publisher: str, keys: Sequence[Path], tags: Sequence[str] = ()
    ) -> tuple[Entry, bool]:
        """Publish a local file (the directory store's path); see `publish`."""
        with self.staged() as (handle, path), open(source, "rb") as src:
            shutil.copyfileobj(src, handle)
            handle.close()
            return self.publish(path, publisher, keys, tags)

    def publish(
        self, staged: Path, publisher: str, keys: Sequence[Path], tags: Sequence[str] = ()
    ) -> tuple[Entry, bool]:
        """Verify and store a staged upload; returns its entry and whether it is new.

        The same file published again is accepted and changes nothing; the same digest with
        other signature bytes is a conflict (one file per digest).
        """
        try:
            packet = load_packet(staged, trusted_keys=keys, limits=self.limits)
        except VerificationError as exc:
            raise RefusedPacketError(f"upload refused: {_unstaged(exc, staged)}") from None
        except PacketError as exc:
            raise BrokerError(
                f"upload refused, not a valid packet: {_unstaged(exc, staged)}"
            ) from None
        reasons = self.screen(packet)
        if reasons:
            raise RefusedPacketError(f"upload refused by the safety screen: {'; '.join(reasons)}")
        sha = file_sha256(staged)
        entry = Entry.describe(
            packet,
            file_sha256=sha,
            size=staged.stat().st_size,
            publisher=publisher,
            published_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            tags=list(tags),
        )
        if self.blobs.add(staged, entry.digest):
            try:
                self.index.add(entry)
            except BaseException:
                self.blobs.remove(entry.digest)
                raise
            return entry, True
        if self.blobs.sha256(entry.digest) != sha:
            raise ConflictError(f"{entry.digest} is already stored with other signature bytes")
        self.index.add(entry)  # a no-op unless an earlier publish died between file and index
        return self.get(entry.digest), False

    def get(self, digest: str) -> Entry:
        entry = self.index.get(normalize_digest(digest))
        if entry is None:
            raise NotFoundError(f"no packet {digest} in this store")
        return entry

    def read(self, digest: str) -> Iterator[bytes]:
        entry = self.get(digest)
        return self.blobs.read(entry.digest)

    def search(self, query: Query) -> list[Entry]:
        return self.index.search(query)

    def delete(self, digest: str, publisher: str, admin: bool = False) -> Entry:
        """Remove a packet; only its publisher (or an admin) may. Index first, then the file."""
        entry = self.get(digest)
        if entry.publisher != publisher and not admin:
            raise ScopeError(f"{entry.digest} was published by {entry.publisher}, not {publisher}")
        self.index.remove(entry.digest)
        self.blobs.remove(entry.digest)
        return entry

    def check(self) -> Consistency:
        """Compare the index with the stored files, rehashing every file."""
        indexed, stored = set(self.index.digests()), set(self.blobs.digests())
        wrong = [
            d
            for d in sorted(indexed & stored)
            if self.blobs.sha256(d) != self.index.get(d).file_sha256  # type: ignore[union-attr]
        ]
        return Consistency(
            entries=len(indexed),
            files=len(stored),
            missing_files=sorted(indexed - stored),
            unindexed_files=sorted(stored - indexed),
            wrong_hashes=wrong,
        )


def _unstaged(exc: M2KTError, staged: Path) -> str:
    """The loader's message about an upload, without the server's staging path or file name."""
    return exc.message.replace(str(staged), "the upload").replace(staged.name, "the upload")
