"""The one exception hierarchy of m2kt.

Every error a user can cause (a bad file, a wrong key, a bad argument) is an `M2KTError`
carrying a one-line message and a hint saying what to do next. The CLI prints both and
exits with `exit_code`: 2 for bad input, 1 for a failed verification. Anything else that
escapes is a bug in m2kt.
"""

from __future__ import annotations


class M2KTError(Exception):
    """Base of every error m2kt raises on purpose."""

    exit_code = 2
    default_hint = "check the input and try again"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint


class UsageError(M2KTError):
    """A bad argument, a missing file, a key that cannot be read."""

    default_hint = "run `m2kt <command> --help` for the expected arguments"


class PacketError(M2KTError):
    """A packet that cannot be used as it is: bad input, exit code 2."""

    default_hint = "the file is not a valid m2kt packet; ask its publisher for a fresh copy"


class PacketFormatError(PacketError):
    """The container is corrupt, truncated, or holds members it must not."""


class PacketVersionError(PacketError):
    """The manifest's `format_version` is one this m2kt does not read."""

    default_hint = "upgrade m2kt (`pip install -U m2kt`) or ask for a packet in a supported version"


class SchemaError(PacketError):
    """The manifest does not follow the schema of its `format_version`."""


class LimitError(PacketError):
    """A declared or actual size is over the configured limits."""

    default_hint = "if you trust this packet, raise the limit (see `m2kt inspect --help`)"


class TensorError(PacketError):
    """A tensor's dtype, shape or values disagree with the manifest or are not finite."""


class AdapterError(M2KTError):
    """An adapter directory (config JSON plus safetensors) that cannot be used: exit code 2."""

    default_hint = "check the path names a saved adapter directory, or save the adapter again"


class VerificationError(M2KTError):
    """The packet is not provably what its signer published: exit code 1."""

    exit_code = 1
    default_hint = "do not use this packet; fetch it again from a source you trust"


class UnsignedPacketError(VerificationError):
    """The packet carries no signature and the caller did not allow unsigned packets."""

    default_hint = "sign it with `m2kt sign`, or pass --allow-unsigned if you trust its origin"


class UntrustedKeyError(VerificationError):
    """The packet is signed, but not by a key the caller trusts."""

    default_hint = "pass the signer's public key with --key PUBKEY if you trust it"
