"""The store's rules, whatever holds the bytes: verify, then store the file and index it.

An upload is staged, opened with the packet loader (container, schema, tensors, limits) and its
signature checked against the publisher's own keys, then screened. Only then, holding the lock
of its key (digest, signer) in the index, is the file stored and its row inserted; a delete
removes the row and moves the file to a tombstone under the same lock. So for every process
sharing the index and the store, a key's row and file change together, and a crash leaves at
most debris that `recover` settles at start: staging files, a file without its row (removed:
the client's repeated publish stores it again), a tombstone whose deletion did not commit
(restored). `check` proves the index and the files agree.

Ownership: an entry belongs to the key that signed it. Whoever holds that key (a publisher with
it registered) may publish and delete it, and nobody else can take the (digest, signer) slot,
because an upload must verify against the uploader's own keys.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from m2kt.broker.blobs import FileBlobs, Key, file_sha256, read_chunks
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
from m2kt.packet import DEFAULT_LIMITS, Limits, fingerprint_of_public_key, load_packet
from m2kt.packet.packet import read_packet
from m2kt.packet.signing import signature_key_hint

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
    missing_files: list[Key]
    unindexed_files: list[Key]
    wrong_hashes: list[Key]

    @property
    def ok(self) -> bool:
        return not (self.missing_files or self.unindexed_files or self.wrong_hashes)


class Registry:
    def __init__(
        self,
        blobs: FileBlobs,
        index: Index,
        screen: Screen = screen_packet,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.blobs, self.index, self.screen, self.limits = blobs, index, screen, limits

    @classmethod
    def open(cls, directory: str | Path, index: str | None = None, **options: object) -> Registry:
        """Files in `directory`; the index in its SQLite file, or the PostgreSQL of `index`."""
        directory = Path(directory)
        return cls(FileBlobs(directory), open_index(index, directory), **options)  # type: ignore[arg-type]

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

        Idempotent by (digest, signer): when the signer's entry exists, it is returned as it is
        (whoever uploaded it). Another signer's entry of the same digest is not touched.
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
        entry = Entry.describe(
            packet,
            file_sha256=file_sha256(staged),
            size=staged.stat().st_size,
            publisher=publisher,
            published_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            tags=list(tags),
        )
        self.blobs.sync(staged)
        with self.index.locked(*entry.key) as tx:
            found = tx.get(*entry.key)
            if found is not None:
                return found, False
            self.blobs.put(staged, entry.key)  # over a file no row names: a crash's leftover
            try:
                tx.add(entry)
            except BaseException:
                self.blobs.remove(entry.key)
                raise
        return entry, True

    def entries(self, digest: str) -> list[Entry]:
        """Every signer's entry of `digest`, oldest first."""
        return self.index.search(Query(digest=normalize_digest(digest), limit=10_000))

    def get(self, digest: str, signers: Sequence[str] = ()) -> Entry:
        """The oldest entry of `digest` whose signer starts with one of `signers` (any if none)."""
        wanted = [s.strip().lower() for s in signers if s.strip()]
        for entry in self.entries(digest):
            if not wanted or any(entry.signer.startswith(s) for s in wanted):
                return entry
        by = f" signed by {', '.join(s[:16] for s in wanted)}" if wanted else ""
        raise NotFoundError(f"no packet {digest}{by} in this store")

    def open_file(self, digest: str, signers: Sequence[str] = ()) -> tuple[Entry, BinaryIO]:
        """An entry and its file, opened: a delete after this point does not cut the reader off,
        and a delete before it is a 404, never a half answer."""
        entry = self.get(digest, signers)
        try:
            return entry, self.blobs.open(entry.key)
        except FileNotFoundError:
            raise NotFoundError(f"no packet {digest} in this store (just removed)") from None

    def read(self, digest: str, signers: Sequence[str] = ()) -> Iterator[bytes]:
        return read_chunks(self.open_file(digest, signers)[1])

    def search(self, query: Query) -> list[Entry]:
        return self.index.search(query)

    def delete(
        self,
        digest: str,
        publisher: str,
        keys: Sequence[Path] = (),
        signer: str | None = None,
        admin: bool = False,
    ) -> Entry:
        """Remove one signer's entry and its file: the caller's own, unless `signer` names one.

        A caller owns an entry signed by one of their keys, or uploaded by them; an admin owns
        every entry.
        """
        prints = {fingerprint_of_public_key(k) for k in keys}
        entries = self.entries(digest)
        if signer:
            entries = [e for e in entries if e.signer.startswith(signer.strip().lower())]
        if not entries:
            raise NotFoundError(f"no packet {digest} in this store")
        mine = [e for e in entries if admin or owns(e, publisher, prints)]
        if not mine:
            holders = ", ".join(f"{e.signer[:16]} (by {e.publisher})" for e in entries)
            raise ScopeError(f"{entries[0].digest} is held by {holders}, not by {publisher}")
        if len(mine) > 1:
            raise ConflictError(
                f"{digest} has {len(mine)} entries you may delete",
                "name one with its signer (--signer, or ?signer= on the API)",
            )
        entry = mine[0]
        tomb = None
        try:
            with self.index.locked(*entry.key) as tx:
                if tx.get(*entry.key) is None:
                    raise NotFoundError(f"no packet {digest} in this store (just removed)")
                tx.remove(*entry.key)
                tomb = self.blobs.retire(entry.key)
        except BaseException:
            if tomb is not None and self.index.get(*entry.key) is not None:
                self.blobs.restore(entry.key, tomb)  # the row's deletion did not commit
            raise
        if tomb is not None:
            self.blobs.drop(tomb)
        return entry

    def recover(self) -> Counter[str]:
        """Settle what a crash left, key by key under each key's lock; safe while other
        processes serve the same index and store. Returns what it did, counted by kind:
        staging_files, legacy_files_moved, unindexed_files_removed, deletions_undone,
        rows_without_file_removed, debris_removed."""
        counts: Counter[str] = Counter(staging_files=self.blobs.removed_staging)
        self.blobs.removed_staging = 0  # counted once
        for path in self.blobs.legacy_files():
            counts["legacy_files_moved"] += self._move_legacy(path)
        for key in sorted(set(self.index.keys()) | set(self.blobs.keys())):
            with self.index.locked(*key) as tx:
                row = tx.get(*key) is not None
                debris = self.blobs.debris(key)
                stored = self.blobs.stored(key)
                tombs = [d for d in debris if d.endswith(".deleted")]
                if row and not stored and tombs:
                    self.blobs.restore(key, tombs[-1])
                    debris.remove(tombs[-1])
                    counts["deletions_undone"] += 1
                elif row and not stored:
                    tx.remove(*key)
                    counts["rows_without_file_removed"] += 1
                elif stored and not row:
                    self.blobs.remove(key)
                    counts["unindexed_files_removed"] += 1
                for token in debris:
                    self.blobs.drop(token)
                    counts["debris_removed"] += 1
        return counts

    def _move_legacy(self, path: Path) -> int:
        """A file of the one-file-per-digest layout, moved to its (digest, signer) place."""
        try:
            signature = read_packet(path, self.limits).signature
        except PacketError:
            signature = None
        signer = signature_key_hint(signature) if signature else None
        key = (f"sha256:{path.stem}", signer or "")
        with self.index.locked(*key) as tx:
            if tx.get(*key) is None or not signer:
                path.unlink(missing_ok=True)
                return 0
            self.blobs.path(key).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, self.blobs.path(key))
            return 1

    def check(self) -> Consistency:
        """Compare the index with the stored files, rehashing every file."""
        indexed, stored = set(self.index.keys()), set(self.blobs.keys())
        stored = {k for k in stored if self.blobs.stored(k)}
        wrong = [
            k
            for k in sorted(indexed & stored)
            if self.blobs.sha256(k) != self.index.get(*k).file_sha256  # type: ignore[union-attr]
        ]
        return Consistency(
            entries=len(indexed),
            files=len(stored),
            missing_files=sorted(indexed - stored),
            unindexed_files=sorted(stored - indexed),
            wrong_hashes=wrong,
        )


def owns(entry: Entry, publisher: str, fingerprints: set[str]) -> bool:
    """The ownership rule: an entry is its signer's, and its uploader's."""
    return entry.signer in fingerprints or entry.publisher == publisher


def open_index(spec: str | None, directory: Path) -> Index:
    """`postgresql://…` (or `postgres://…`): the shared index; otherwise SQLite in the store."""
    if spec and spec.startswith(("postgresql://", "postgres://")):
        from m2kt.broker.postgres import PostgresIndex

        return PostgresIndex(spec)
    return SQLiteIndex(Path(spec) if spec else directory / INDEX_FILE)


def _unstaged(exc: M2KTError, staged: Path) -> str:
    """The loader's message about an upload, without the server's staging path or file name."""
    return exc.message.replace(str(staged), "the upload").replace(staged.name, "the upload")
