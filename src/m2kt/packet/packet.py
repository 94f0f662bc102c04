"""The `Packet` object and the three ways to open one: read, verify, load for use."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from m2kt import __version__
from m2kt.atomic import atomic_write_bytes
from m2kt.errors import (
    PacketError,
    PacketVersionError,
    SchemaError,
    UnsignedPacketError,
    VerificationError,
)
from m2kt.packet.canonical import canonical_json, packet_digest, strict_loads
from m2kt.packet.container import MANIFEST, SIGNATURE, TENSORS, read_container, write_container
from m2kt.packet.limits import DEFAULT_LIMITS, Limits
from m2kt.packet.manifest import PARTS, SUPPORTED_VERSIONS, Manifest, Provenance
from m2kt.packet.signing import Signer, sign_body, verify_body
from m2kt.packet.tensors import decode_tensors, encode_tensors, spec_of


@dataclass(frozen=True)
class Packet:
    """A manifest, its tensors, and optionally a signature over both.

    Build one with `Packet.create`; the encoded body is computed once and is what the digest,
    the signature and the file are made of, so all three always agree.
    """

    manifest: Manifest
    tensors: dict[str, torch.Tensor]
    signature: bytes | None = None
    signer: Signer | None = None
    manifest_bytes: bytes = field(default=b"", repr=False)
    tensor_bytes: bytes = field(default=b"", repr=False)

    @classmethod
    def create(
        cls, *, kind: str, provenance: Provenance, tensors: dict[str, torch.Tensor], **parts: Any
    ) -> Packet:
        """Validate the parts against each other and encode the body.

        `parts` are the optional manifest parts (`concepts`, `probes`, `graph`, `attention`,
        `traces`, `patch`) as models or plain dicts; the tensor table is derived from `tensors`.
        """
        table = {name: spec_of(t) for name, t in tensors.items()}
        raw = {"format_version": SUPPORTED_VERSIONS[-1], "kind": kind, "tensors": table}
        raw |= {"provenance": provenance} | {k: v for k, v in parts.items() if v is not None}
        try:
            manifest = Manifest.model_validate(_plain(raw))
        except ValidationError as exc:
            raise SchemaError(f"cannot build the packet: {_first_errors(exc)}") from None
        return cls(
            manifest=manifest,
            tensors=dict(tensors),
            manifest_bytes=encode_manifest(manifest),
            tensor_bytes=encode_tensors(tensors),
        )

    def rebuilt(self, tensors: dict[str, torch.Tensor] | None = None, **parts: Any) -> Packet:
        """A new, unsigned packet with this one's parts but `tensors` and the given `parts`."""
        m = self.manifest
        kept = {name: getattr(m, name) for name in PARTS} | {"provenance": m.provenance}
        return Packet.create(
            kind=m.kind, tensors=self.tensors if tensors is None else tensors, **(kept | parts)
        )

    @property
    def digest(self) -> str:
        """`sha256:<hex>` over the body; the same whether or not the packet is signed."""
        return packet_digest(self.manifest_bytes, self.tensor_bytes)

    def to_bytes(self) -> bytes:
        members = {MANIFEST: self.manifest_bytes, TENSORS: self.tensor_bytes}
        if self.signature is not None:
            members[SIGNATURE] = self.signature
        return write_container(members)

    def save(self, path: str | Path) -> Path:
        """Write the packet file atomically."""
        return atomic_write_bytes(path, self.to_bytes())

    def signed(self, private_key: str | Path) -> Packet:
        """A copy carrying a fresh signature by `private_key`."""
        signature = sign_body(self.manifest_bytes, self.tensor_bytes, private_key)
        return replace(self, signature=signature, signer=None)


def make_provenance(*, method: str, created_at: str | None = None, **fields: Any) -> Provenance:
    """Provenance with the library version and a creation time filled in.

    The time comes from `created_at`, else from SOURCE_DATE_EPOCH (reproducible builds), else
    the clock; pass it explicitly wherever identical bytes matter.
    """
    if created_at is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        moment = (
            datetime.fromtimestamp(int(epoch), timezone.utc)
            if epoch
            else datetime.now(timezone.utc)
        )
        created_at = moment.replace(microsecond=0).isoformat()
    return Provenance.model_validate(
        _plain(
            {"created_at": created_at, "library_version": __version__, "method": method} | fields
        )
    )


def encode_manifest(manifest: Manifest) -> bytes:
    return canonical_json(manifest.model_dump(mode="json", exclude_none=True))


def decode_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes: JSON, then version, then schema, then canonical form."""
    try:
        raw = strict_loads(data)
    except ValueError as exc:
        raise SchemaError(f"manifest.json is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SchemaError("manifest.json is not a JSON object")
    version = raw.get("format_version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise PacketVersionError(
            f"format_version {version!r} is not supported (this m2kt {__version__} reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})",
            "version 1 packets verified on probes their concepts were made from: extract the "
            "packet again with this m2kt"
            if type(version) is int and version == 1
            else "",
        )
    unknown = sorted(set(raw) - set(Manifest.model_fields))
    if unknown:
        raise SchemaError(
            f"manifest.json has parts this m2kt {__version__} does not know: "
            f"{', '.join(repr(name[:40]) for name in unknown[:5])}",  # names from outside
            "the packet was written by a later m2kt: update m2kt to read it, or have it "
            "written without those parts (docs/packet-format.md §8)",
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(f"manifest.json: {_first_errors(exc)}") from None
    if encode_manifest(manifest) != data:
        raise SchemaError("manifest.json is not in canonical form (it was edited after writing)")
    return manifest


def read_packet(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Packet:
    """Open and check a packet without judging its signature (for `inspect`)."""
    members = read_container(path, limits)
    manifest = decode_manifest(members[MANIFEST])
    tensors = decode_tensors(members[TENSORS], manifest.tensors, limits)
    return Packet(
        manifest=manifest,
        tensors=tensors,
        signature=members.get(SIGNATURE),
        manifest_bytes=members[MANIFEST],
        tensor_bytes=members[TENSORS],
    )


def verify_packet(
    path: str | Path, trusted_keys: Iterable[str | Path], limits: Limits = DEFAULT_LIMITS
) -> Packet:
    """Prove a packet was signed by one of `trusted_keys`: the question `m2kt verify` answers.

    Any reason the file cannot be proven genuine, a damaged file included, is a
    `VerificationError`.
    """
    try:
        return load_packet(path, trusted_keys=trusted_keys, limits=limits)
    except PacketError as exc:
        raise VerificationError(f"verification failed: {exc.message}") from None


def load_packet(
    path: str | Path,
    *,
    trusted_keys: Iterable[str | Path] = (),
    allow_unsigned: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> Packet:
    """Open a packet for use: its signature is verified against `trusted_keys` by default.

    With `allow_unsigned=True` an unsigned packet is accepted, and a signed one is verified only
    when trusted keys are given.
    """
    keys = list(trusted_keys)
    packet = read_packet(path, limits)
    if packet.signature is None:
        if allow_unsigned:
            return packet
        raise UnsignedPacketError(f"{Path(path).name} is not signed")
    if allow_unsigned and not keys:
        return packet
    signer = verify_body(packet.manifest_bytes, packet.tensor_bytes, packet.signature, keys)
    return replace(packet, signer=signer)


def _plain(value: Any) -> Any:
    """Turn nested pydantic models into plain JSON values so strict validation sees one shape."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _first_errors(exc: ValidationError, count: int = 3) -> str:
    parts = []
    for error in exc.errors()[:count]:
        location = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - count
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
