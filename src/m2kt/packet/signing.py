"""Signing and verification of packet bodies with OpenSSF model-signing (elliptic-curve keys).

model-signing hashes a directory file by file into an in-toto statement and signs it in a
Sigstore bundle. We lay the two body members (manifest and tensors) out in a private temporary
directory and sign that, so the manifest is bound into the signature as tightly as the tensors.
Keys are ECDSA P-256 PEM files: model-signing's offline key signer supports only NIST curves.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from m2kt.atomic import atomic_write_bytes
from m2kt.errors import UntrustedKeyError, UsageError, VerificationError
from m2kt.inputs import read_bounded
from m2kt.packet.canonical import strict_loads
from m2kt.packet.container import MANIFEST, TENSORS

_BODY_DIR = "packet"


@dataclass(frozen=True)
class Signer:
    """Who signed a packet, as far as it was verified: the key's fingerprint and its file."""

    fingerprint: str
    key_path: Path


def generate_keypair(directory: str | Path, name: str = "m2kt") -> tuple[Path, Path]:
    """Write `<name>.key` (private, mode 0600) and `<name>.pub` into `directory`."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file, not a directory", "pass a directory for the keys")
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{path} already exists", "choose another --name or directory")
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_bytes(private_path, private_pem)
    os.chmod(private_path, 0o600)
    atomic_write_bytes(public_path, _public_pem(key.public_key()))
    return private_path, public_path


def fingerprint_of_public_key(path: str | Path) -> str:
    """SHA-256 of the key's PEM encoding: the key hint model-signing records in bundles."""
    key = _load_public_key(Path(path))
    return hashlib.sha256(_public_pem(key)).hexdigest()


def signature_key_hint(signature: bytes) -> str | None:
    """The signer fingerprint a signature *claims*; unverified, for display only."""
    try:
        bundle = strict_loads(signature)
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
    except (ValueError, KeyError, TypeError):
        return None
    return hint if isinstance(hint, str) else None


def sign_body(manifest: bytes, tensors: bytes, private_key: str | Path) -> bytes:
    """Sign the packet body; returns the Sigstore bundle (JSON bytes)."""
    from model_signing import signing

    key_path = Path(private_key)
    check_private_key(key_path)
    with _body_on_disk(manifest, tensors) as (body_dir, signature_path):
        config = signing.Config().use_elliptic_key_signer(private_key=key_path)
        config.set_hashing_config(_hashing_config())
        config.sign(body_dir, signature_path)
        return signature_path.read_bytes()


def verify_body(
    manifest: bytes, tensors: bytes, signature: bytes, trusted_keys: Iterable[str | Path]
) -> Signer:
    """Check `signature` over the body against the trusted public keys.

    Raises `UntrustedKeyError` when no trusted key matches the signer and `VerificationError`
    when the signature does not match the body.
    """
    from model_signing import verifying

    keys = {fingerprint_of_public_key(k): Path(k) for k in trusted_keys}
    if not keys:
        raise UntrustedKeyError("the packet is signed but no trusted public key was given")
    claimed = signature_key_hint(signature)
    if claimed is None:
        raise VerificationError("the signature is malformed (no signer key hint)")
    if claimed not in keys:
        raise UntrustedKeyError(
            f"the packet is signed by key {claimed[:16]}, which you do not trust"
        )
    with _body_on_disk(manifest, tensors, signature) as (body_dir, signature_path):
        config = verifying.Config().use_elliptic_key_verifier(public_key=keys[claimed])
        config.set_hashing_config(_hashing_config())
        try:
            config.verify(body_dir, signature_path)
        except Exception as exc:  # model-signing reports mismatches as ValueError and others
            raise VerificationError(f"signature check failed: {_mismatch(exc)}") from None
    return Signer(fingerprint=claimed, key_path=keys[claimed])


def _mismatch(exc: Exception) -> str:
    """model-signing's complaint in words: which body member changed, never Python bytes."""
    text = str(exc).strip()
    changed = sorted(set(re.findall(r"Hash mismatch for '([^']+)'", text)))
    if changed:
        return f"{' and '.join(changed)} changed since it was signed"
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"b'(?:[^'\\]|\\.)*'", "<bytes>", first_line)[:200]


def _hashing_config():  # type: ignore[no-untyped-def]
    from model_signing import hashing

    return hashing.Config().use_file_serialization().set_ignored_paths(paths=[])


@contextmanager
def _body_on_disk(
    manifest: bytes, tensors: bytes, signature: bytes | None = None
) -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="m2kt-sign-") as tmp:
        body_dir = Path(tmp) / _BODY_DIR
        body_dir.mkdir()
        (body_dir / MANIFEST).write_bytes(manifest)
        (body_dir / TENSORS).write_bytes(tensors)
        signature_path = Path(tmp) / "signature.json"
        if signature is not None:
            signature_path.write_bytes(signature)
        yield body_dir, signature_path


def _public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


_MAX_KEY_BYTES = 64 << 10


def _load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    data = _key_bytes(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a PEM public key ({exc})", "pass the .pub file") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError(f"{path} is not an elliptic-curve key", "create one with `m2kt keygen`")
    return key


def check_private_key(path: Path) -> None:
    """Refuse, with a hint, a path that is not an unencrypted elliptic-curve PEM private key."""
    data = _key_bytes(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"{path} is not an unencrypted PEM private key ({exc})", "pass the .key file"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{path} is not an elliptic-curve key", "create one with `m2kt keygen`")


def _key_bytes(path: Path, kind: str) -> bytes:
    return read_bounded(path, f"{kind} key file", _MAX_KEY_BYTES, "create one with `m2kt keygen`")
