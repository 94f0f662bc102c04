"""The packet container: one uncompressed ZIP file in a single canonical byte layout.

A reader accepts a file only if re-writing its members with `write_container` reproduces the
file byte for byte. This makes the container's own bytes (headers, timestamps, order) carry no
freedom at all: any flipped byte anywhere in the file is either a changed member, which the
digest and signature catch, or a non-canonical container, which is refused here.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

from m2kt.errors import LimitError, PacketFormatError, UsageError
from m2kt.packet.limits import Limits

MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
SIGNATURE = "signature.sigstore.json"
MEMBER_ORDER = (MANIFEST, TENSORS, SIGNATURE)
_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_container(members: dict[str, bytes]) -> bytes:
    """Serialise members in the one canonical layout (fixed order, times and attributes)."""
    unknown = set(members) - set(MEMBER_ORDER)
    if unknown:
        raise ValueError(f"unknown container members {sorted(unknown)}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in MEMBER_ORDER:
            if name not in members:
                continue
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()


def read_container(path: str | Path, limits: Limits) -> dict[str, bytes]:
    """Read and check a packet file; return its members by name.

    Sizes are checked against `limits` from the file size and the central directory before any
    member is read. Raises `PacketFormatError` or `LimitError`, never a bare library error.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UsageError(f"no such packet: {path}", "check the path") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    if not path.is_file():
        raise UsageError(f"{path} is not a regular file", "pass the path of a .m2kt packet file")
    if size > limits.max_file_bytes:
        raise LimitError(f"{path.name} is {size} bytes, over the limit of {limits.max_file_bytes}")
    with path.open("rb") as handle:  # bounded: the file may grow after the size check
        data = handle.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise LimitError(f"{path.name} grew past the limit of {limits.max_file_bytes} bytes")
    members = parse_container(data, limits)
    if write_container(members) != data:
        raise PacketFormatError(
            f"{path.name}: the container is not in canonical form (bytes outside the members "
            "were altered)"
        )
    return members


def parse_container(data: bytes, limits: Limits) -> dict[str, bytes]:
    """Parse container bytes; see `read_container`."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            _check_directory(infos, limits)
            return {info.filename: archive.read(info) for info in infos}
    except (PacketFormatError, LimitError):
        raise
    except zipfile.BadZipFile as exc:
        raise PacketFormatError(
            f"not a readable packet: {exc} (truncated or corrupt file)"
        ) from None
    except (
        ValueError,
        OSError,
        EOFError,
        struct.error,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        UnicodeDecodeError,
        OverflowError,
        KeyError,
        IndexError,
    ) as exc:
        raise PacketFormatError(f"not a readable packet: {type(exc).__name__}: {exc}") from None


def _check_directory(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise PacketFormatError(f"duplicate members in the container: {names}")
    unknown = [n for n in names if n not in MEMBER_ORDER]
    if unknown:
        raise PacketFormatError(f"unexpected members in the container: {unknown[:5]}")
    for required in (MANIFEST, TENSORS):
        if required not in names:
            raise PacketFormatError(f"the container has no {required}")
    caps = {
        MANIFEST: limits.max_manifest_bytes,
        TENSORS: limits.max_file_bytes,
        SIGNATURE: limits.max_signature_bytes,
    }
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise PacketFormatError(f"member {info.filename} is compressed or encrypted")
        if info.file_size > caps[info.filename]:
            raise LimitError(
                f"member {info.filename} declares {info.file_size} bytes, over the limit of "
                f"{caps[info.filename]}"
            )
