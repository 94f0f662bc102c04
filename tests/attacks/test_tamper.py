"""Every tamper is refused: flipped bytes, edited fields, swapped signatures, wrong keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2kt.errors import UnsignedPacketError, UntrustedKeyError, VerificationError
from m2kt.packet import load_packet, verify_packet
from m2kt.packet.canonical import canonical_json, strict_loads
from m2kt.packet.container import MANIFEST, SIGNATURE, TENSORS, parse_container, write_container
from m2kt.packet.limits import DEFAULT_LIMITS

from conftest import knowledge_packet


def _write(tmp_path: Path, data: bytes, name: str = "p.m2kt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_flipped_byte_anywhere_fails_verification(
    tmp_path: Path, keys, signed_packet_bytes
) -> None:
    size = len(signed_packet_bytes)
    members = parse_container(signed_packet_bytes, DEFAULT_LIMITS)
    # Every byte of the container would take minutes; step through it with a stride that is
    # co-prime to 16 so each region (headers, manifest, tensors, signature, directory) is hit.
    positions = sorted(set(range(0, size, 7)) | {0, size - 1})
    assert len(members) == 3 and len(positions) > 200
    for position in positions:
        data = bytearray(signed_packet_bytes)
        data[position] ^= 0x01
        with pytest.raises(VerificationError):
            verify_packet(_write(tmp_path, bytes(data)), [keys[1]])


def test_an_edited_manifest_field_fails_verification(
    tmp_path: Path, keys, signed_packet_bytes
) -> None:
    members = parse_container(signed_packet_bytes, DEFAULT_LIMITS)
    manifest = strict_loads(members[MANIFEST])
    manifest["concepts"][0]["name"] = "something harmless"
    members[MANIFEST] = canonical_json(manifest)
    with pytest.raises(VerificationError, match="signature check failed"):
        verify_packet(_write(tmp_path, write_container(members)), [keys[1]])


def test_a_signature_swapped_from_another_packet_is_refused(tmp_path: Path, keys) -> None:
    one = parse_container(knowledge_packet(seed=1).signed(keys[0]).to_bytes(), DEFAULT_LIMITS)
    two = parse_container(knowledge_packet(seed=2).signed(keys[0]).to_bytes(), DEFAULT_LIMITS)
    one[SIGNATURE] = two[SIGNATURE]
    with pytest.raises(VerificationError, match="signature check failed"):
        verify_packet(_write(tmp_path, write_container(one)), [keys[1]])


def test_a_wrong_key_is_refused(tmp_path: Path, other_keys, signed_packet_bytes) -> None:
    with pytest.raises(UntrustedKeyError, match="do not trust"):
        verify_packet(_write(tmp_path, signed_packet_bytes), [other_keys[1]])


def test_a_forged_key_hint_is_refused(tmp_path: Path, keys, other_keys) -> None:
    """Mallory signs with her key but claims Alice's fingerprint."""
    alice_hint = strict_loads(
        parse_container(knowledge_packet().signed(keys[0]).to_bytes(), DEFAULT_LIMITS)[SIGNATURE]
    )["verificationMaterial"]["publicKey"]["hint"]
    members = parse_container(knowledge_packet().signed(other_keys[0]).to_bytes(), DEFAULT_LIMITS)
    bundle = strict_loads(members[SIGNATURE])
    bundle["verificationMaterial"]["publicKey"]["hint"] = alice_hint
    members[SIGNATURE] = canonical_json(bundle)
    with pytest.raises(VerificationError):
        verify_packet(_write(tmp_path, write_container(members)), [keys[1]])


def test_unsigned_packets_need_explicit_permission(tmp_path: Path, keys) -> None:
    path = knowledge_packet().save(tmp_path / "u.m2kt")
    with pytest.raises(UnsignedPacketError):
        load_packet(path, trusted_keys=[keys[1]])
    assert load_packet(path, allow_unsigned=True).signature is None


def test_dropping_the_signature_is_noticed(tmp_path: Path, keys, signed_packet_bytes) -> None:
    members = parse_container(signed_packet_bytes, DEFAULT_LIMITS)
    stripped = write_container({MANIFEST: members[MANIFEST], TENSORS: members[TENSORS]})
    with pytest.raises(UnsignedPacketError):
        verify_packet(_write(tmp_path, stripped), [keys[1]])
