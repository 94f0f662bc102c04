"""Attacks beyond plain damage: code execution, path tricks, parser bombs, downgrades.

Each test builds a hostile file, checks it is refused with the right `M2KTError` subclass and
a message that names the problem, and that nothing was written beside it: neither by the API
nor by the CLI, whose `ingest` must not create its output directory for a refused packet.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from m2kt.cli import main
from m2kt.errors import (
    M2KTError,
    PacketFormatError,
    PacketVersionError,
    SchemaError,
    TensorError,
    UsageError,
    VerificationError,
)
from m2kt.packet import load_packet, read_packet, verify_packet
from m2kt.packet.canonical import canonical_json, strict_loads
from m2kt.packet.container import (
    MANIFEST,
    SIGNATURE,
    TENSORS,
    parse_container,
    write_container,
)
from m2kt.packet.limits import DEFAULT_LIMITS

from conftest import knowledge_packet


class _Payload:
    """Unpickling this runs `open(marker, "w")`: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def _refused(
    path: Path, error: type[M2KTError], match: str, opener: Callable[[Path], object] = read_packet
) -> M2KTError:
    """`opener(path)` raises `error` matching `match` and leaves the directory as it was."""
    before = sorted(os.listdir(path.parent))
    with pytest.raises(error, match=match) as caught:
        opener(path)
    assert sorted(os.listdir(path.parent)) == before
    assert caught.value.hint
    return caught.value


def _members() -> dict[str, bytes]:
    return parse_container(knowledge_packet().to_bytes(), DEFAULT_LIMITS)


def _manifest_with(edit: Callable[[dict], None]) -> dict[str, bytes]:
    members = _members()
    manifest = strict_loads(members[MANIFEST])
    edit(manifest)
    return members | {MANIFEST: canonical_json(manifest)}


def _write(tmp_path: Path, data: bytes, name: str = "hostile.m2kt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_pickle_named_like_a_packet_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, pickle.dumps(_Payload(marker)))
    _refused(path, PacketFormatError, "not a readable packet")
    assert not marker.exists()


def test_a_torch_save_archive_is_refused_without_unpickling(tmp_path: Path) -> None:
    """torch.save writes a ZIP too; its members are not ours and are never unpickled."""
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"concepts.embeddings": torch.zeros(2), "x": _Payload(marker)}, buffer)
    path = _write(tmp_path, buffer.getvalue())
    _refused(path, PacketFormatError, "unexpected members")
    assert not marker.exists()


def test_a_pickle_in_the_tensor_member_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    members = _members() | {TENSORS: pickle.dumps(_Payload(marker))}
    path = _write(tmp_path, write_container(members))
    _refused(path, M2KTError, "tensor header|truncated|tensors")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd", "packet/../manifest.json"])
def test_path_traversal_member_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / "traversal.m2kt"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in _members().items():
            archive.writestr(member, data)
        archive.writestr(name, b"x")
    _refused(path, PacketFormatError, "unexpected members")
    assert not (tmp_path.parent / "evil").exists()


def test_a_symlink_entry_is_refused(tmp_path: Path) -> None:
    """A ZIP entry marked as a symlink (mode 0o120777) is a different container: refused."""
    members = _members()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (0o120777 if name == TENSORS else 0o644) << 16
            archive.writestr(info, b"/etc/passwd" if name == TENSORS else data)
    _refused(_write(tmp_path, buffer.getvalue()), M2KTError, "canonical|tensor")


def test_a_packet_path_that_is_a_symlink_to_a_device_or_directory(tmp_path: Path) -> None:
    for target in ("/dev/zero", str(tmp_path)):
        link = tmp_path / f"link{len(target)}.m2kt"
        link.symlink_to(target)
        _refused(link, UsageError, "not a regular file")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m["tensors"].update({"../x": {"dtype": "float32", "shape": [1]}}), "names"),
        (lambda m: m["traces"][0].update(id="../../t0"), "traces.0.id"),
        (lambda m: m["concepts"][0].update(id="a/b"), "concepts.0.id"),
    ],
)
def test_path_like_names_inside_the_manifest(tmp_path: Path, edit, match: str) -> None:
    _refused(_write(tmp_path, write_container(_manifest_with(edit))), SchemaError, match)


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, True, None, 3])
def test_format_version_downgrade_or_confusion(tmp_path: Path, version) -> None:
    members = _manifest_with(lambda m: m.update(format_version=version))
    error = _refused(_write(tmp_path, write_container(members)), PacketVersionError, "format_ver")
    assert "upgrade m2kt" in error.hint


def test_a_version_1_packet_is_refused_with_a_hint_to_extract_again(tmp_path: Path) -> None:
    members = _manifest_with(lambda m: m.update(format_version=1))
    error = _refused(_write(tmp_path, write_container(members)), PacketVersionError, "format_ver")
    assert "extract the packet again" in error.hint


def test_a_downgraded_signed_packet_fails_verification(tmp_path: Path, keys) -> None:
    members = parse_container(knowledge_packet().signed(keys[0]).to_bytes(), DEFAULT_LIMITS)
    manifest = strict_loads(members[MANIFEST])
    manifest["format_version"] = 0
    members[MANIFEST] = canonical_json(manifest)
    path = _write(tmp_path, write_container(members))
    _refused(path, VerificationError, "format_version 0", lambda p: verify_packet(p, [keys[1]]))


@pytest.mark.parametrize(
    "member, data, error, match",
    [
        (MANIFEST, b"[" * 200_000 + b"]" * 200_000, SchemaError, "nested too deeply"),
        (MANIFEST, b'{"a":' * 200_000 + b"1" + b"}" * 200_000, SchemaError, "nested too deeply"),
        (SIGNATURE, b"[" * 200_000 + b"]" * 200_000, VerificationError, "malformed"),
    ],
)
def test_json_nesting_bombs(tmp_path: Path, keys, member, data, error, match) -> None:
    members = parse_container(knowledge_packet().signed(keys[0]).to_bytes(), DEFAULT_LIMITS)
    path = _write(tmp_path, write_container(members | {member: data}))
    _refused(path, error, match, lambda p: load_packet(p, trusted_keys=[keys[1]]))


def test_tensor_header_nesting_bomb(tmp_path: Path) -> None:
    header = b"[" * 200_000 + b"]" * 200_000
    members = _members() | {TENSORS: struct.pack("<Q", len(header)) + header}
    _refused(_write(tmp_path, write_container(members)), PacketFormatError, "nested too deeply")


def test_a_number_that_overflows_to_infinity(tmp_path: Path) -> None:
    members = _manifest_with(lambda m: m["provenance"]["measurements"].update(x=1.5))
    members[MANIFEST] = members[MANIFEST].replace(b'"x":1.5', b'"x":1e400')
    _refused(_write(tmp_path, write_container(members)), SchemaError, "overflows to infinity")


def test_duplicate_tensor_names_in_the_safetensors_header(tmp_path: Path) -> None:
    members = _members()
    body = members[TENSORS]
    (length,) = struct.unpack("<Q", body[:8])
    header = body[8 : 8 + length]
    first = header.index(b'"concepts.embeddings"')
    entry_end = header.index(b"}", first) + 1
    doubled = header[:1] + header[first:entry_end] + b"," + header[1:]
    data = struct.pack("<Q", len(doubled)) + doubled + body[8 + length :]
    _refused(_write(tmp_path, write_container(members | {TENSORS: data})), M2KTError, "duplicate")


def test_duplicate_container_members(tmp_path: Path) -> None:
    path = tmp_path / "twice.m2kt"
    members = _members()
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(MANIFEST, members[MANIFEST])
    _refused(path, PacketFormatError, "duplicate members")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.uint8])
def test_dtype_confusion(tmp_path: Path, dtype: torch.dtype) -> None:
    """The same bytes read as another dtype would be garbage; the header must match exactly."""
    from safetensors.torch import save

    tensors = dict(knowledge_packet().tensors)
    tensors["concepts.embeddings"] = tensors["concepts.embeddings"].to(dtype)
    members = _members() | {TENSORS: save(dict(sorted(tensors.items())))}
    _refused(_write(tmp_path, write_container(members)), TensorError, "manifest says float32")


def test_a_missing_tensor(tmp_path: Path) -> None:
    from safetensors.torch import save

    tensors = dict(knowledge_packet().tensors)
    del tensors["traces.t0"]
    members = _members() | {TENSORS: save(dict(sorted(tensors.items())))}
    _refused(_write(tmp_path, write_container(members)), TensorError, r"missing \['traces.t0'\]")


def test_a_memory_bomb_in_the_tensor_header_alone(tmp_path: Path) -> None:
    """The safetensors header claims a huge shape the manifest does not: refused before data."""
    members = _members()
    body = members[TENSORS]
    (length,) = struct.unpack("<Q", body[:8])
    header = strict_loads(body[8 : 8 + length])
    header["concepts.embeddings"]["shape"] = [1 << 31, 1 << 31]
    encoded = canonical_json(header)
    data = struct.pack("<Q", len(encoded)) + encoded + body[8 + length :]
    _refused(_write(tmp_path, write_container(members | {TENSORS: data})), TensorError, "shape")


def test_data_prepended_to_a_valid_packet(tmp_path: Path) -> None:
    """ZIP readers accept a prefix (a polyglot file); the canonical check does not."""
    path = _write(tmp_path, b"#!/bin/sh\nrm -rf ~\n" + knowledge_packet().to_bytes())
    _refused(path, PacketFormatError, "canonical|not a readable")


def test_cli_ingest_of_a_hostile_packet_writes_nothing(tmp_path: Path, keys, capsys) -> None:
    members = parse_container(knowledge_packet().signed(keys[0]).to_bytes(), DEFAULT_LIMITS)
    manifest = strict_loads(members[MANIFEST])
    manifest["concepts"][0]["name"] = "gardening"  # a benign name over the signed content
    members[MANIFEST] = canonical_json(manifest)
    path = _write(tmp_path, write_container(members))
    out = tmp_path / "adapter"
    before = sorted(os.listdir(tmp_path))
    code = main(
        [
            "ingest",
            "--student",
            "e2",
            "--packet",
            str(path),
            "--key",
            str(keys[1]),
            "--out",
            str(out),
        ]
    )
    assert code == 1
    assert "signature check failed" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before
