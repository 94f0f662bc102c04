"""Each malformed input of the spec is refused with its own error type and a clear message."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from m2kt.errors import (
    LimitError,
    PacketFormatError,
    PacketVersionError,
    SchemaError,
    TensorError,
    UsageError,
)
from m2kt.packet import Limits, read_packet
from m2kt.packet.canonical import canonical_json, strict_loads
from m2kt.packet.container import MANIFEST, TENSORS, parse_container, write_container
from m2kt.packet.limits import DEFAULT_LIMITS

from conftest import knowledge_packet


@pytest.fixture
def members() -> dict[str, bytes]:
    return parse_container(knowledge_packet().to_bytes(), DEFAULT_LIMITS)


def _read(tmp_path: Path, members: dict[str, bytes], limits: Limits = DEFAULT_LIMITS):
    path = tmp_path / "p.m2kt"
    path.write_bytes(write_container(members))
    return read_packet(path, limits)


def _edit_manifest(members: dict[str, bytes], edit) -> dict[str, bytes]:
    manifest = strict_loads(members[MANIFEST])
    edit(manifest)
    return members | {MANIFEST: canonical_json(manifest)}


def test_truncated_file(tmp_path: Path, members) -> None:
    data = write_container(members)
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path = tmp_path / "t.m2kt"
        path.write_bytes(data[:cut])
        with pytest.raises(PacketFormatError, match="truncated or corrupt|not a readable"):
            read_packet(path)


def test_not_a_zip_at_all(tmp_path: Path) -> None:
    path = tmp_path / "x.m2kt"
    path.write_bytes(b"\x80\x04\x95 this is what a pickle looks like")
    with pytest.raises(PacketFormatError):
        read_packet(path)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such packet"):
        read_packet(tmp_path / "nope.m2kt")


def test_unknown_format_version_is_named(tmp_path: Path, members) -> None:
    def bump(m):
        m["format_version"] = 7

    with pytest.raises(PacketVersionError, match="format_version 7 is not supported"):
        _read(tmp_path, _edit_manifest(members, bump))


def test_missing_and_unknown_fields(tmp_path: Path, members) -> None:
    with pytest.raises(SchemaError, match="provenance"):
        _read(tmp_path, _edit_manifest(members, lambda m: m.pop("provenance")))
    with pytest.raises(SchemaError, match="surprise"):
        _read(tmp_path, _edit_manifest(members, lambda m: m.update(surprise=1)))


def test_wrong_types_in_the_manifest(tmp_path: Path, members) -> None:
    def stringly(m):
        m["concepts"][0]["confidence"] = "high"

    with pytest.raises(SchemaError, match="concepts.0.confidence"):
        _read(tmp_path, _edit_manifest(members, stringly))


def test_inconsistent_parts(tmp_path: Path, members) -> None:
    def dangling(m):
        m["graph"]["edges"][0]["target"] = "nowhere"

    with pytest.raises(SchemaError, match="unknown nodes"):
        _read(tmp_path, _edit_manifest(members, dangling))


def test_non_canonical_manifest(tmp_path: Path, members) -> None:
    pretty = json.dumps(strict_loads(members[MANIFEST]), indent=2).encode()
    with pytest.raises(SchemaError, match="canonical"):
        _read(tmp_path, members | {MANIFEST: pretty})


def test_duplicate_json_keys(tmp_path: Path, members) -> None:
    doubled = b'{"kind":"patch",' + members[MANIFEST][1:]
    with pytest.raises(SchemaError, match="duplicate key"):
        _read(tmp_path, members | {MANIFEST: doubled})


def test_nan_in_the_manifest_json(tmp_path: Path, members) -> None:
    nan = members[MANIFEST].replace(b'"confidence":0.5', b'"confidence":NaN', 1)
    with pytest.raises(SchemaError, match="NaN"):
        _read(tmp_path, members | {MANIFEST: nan})


def _with_tensors(members: dict[str, bytes], **changes: torch.Tensor) -> dict[str, bytes]:
    tensors = knowledge_packet().tensors | changes
    return members | {TENSORS: save_safetensors(dict(sorted(tensors.items())))}


def test_dtype_disagrees_with_manifest(tmp_path: Path, members) -> None:
    half = knowledge_packet().tensors["concepts.embeddings"].half()
    with pytest.raises(TensorError, match="manifest says float32"):
        _read(tmp_path, _with_tensors(members, **{"concepts.embeddings": half}))


def test_shape_disagrees_with_manifest(tmp_path: Path, members) -> None:
    with pytest.raises(TensorError, match="shape"):
        _read(tmp_path, _with_tensors(members, **{"concepts.embeddings": torch.zeros(3, 9)}))


def test_integer_tensor_is_refused(tmp_path: Path, members) -> None:
    ints = torch.zeros(3, 8, dtype=torch.int64)
    with pytest.raises(TensorError):
        _read(tmp_path, _with_tensors(members, **{"concepts.embeddings": ints}))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values(tmp_path: Path, members, bad: float) -> None:
    values = torch.zeros(3, 8)
    values[1, 2] = bad
    with pytest.raises(TensorError, match="NaN or infinite"):
        _read(tmp_path, _with_tensors(members, **{"concepts.embeddings": values}))


def test_extra_tensor(tmp_path: Path, members) -> None:
    with pytest.raises(TensorError, match="extra"):
        _read(tmp_path, _with_tensors(members, sneaky=torch.zeros(1)))


def test_header_length_lies(tmp_path: Path, members) -> None:
    body = members[TENSORS]
    too_long = struct.pack("<Q", len(body)) + body[8:]
    with pytest.raises(PacketFormatError, match="truncated"):
        _read(tmp_path, members | {TENSORS: too_long})
    huge = struct.pack("<Q", 1 << 40) + body[8:]
    with pytest.raises(LimitError):
        _read(tmp_path, members | {TENSORS: huge})


def test_declared_sizes_are_checked_before_reading(tmp_path: Path, members) -> None:
    def bomb(m):
        m["tensors"]["concepts.embeddings"]["shape"] = [3, 1 << 40]
        m["tensors"]["traces.t0"]["shape"] = [3, 1 << 40]

    # The manifest promises a memory bomb; it is refused from the declaration alone.
    with pytest.raises(LimitError, match="elements"):
        _read(tmp_path, _edit_manifest(members, bomb))


def test_file_and_member_limits(tmp_path: Path, members) -> None:
    with pytest.raises(LimitError, match="over the limit"):
        _read(tmp_path, members, Limits(max_file_bytes=100))
    with pytest.raises(LimitError, match="manifest.json"):
        _read(tmp_path, members, Limits(max_manifest_bytes=10))


def test_unexpected_or_missing_members(tmp_path: Path, members) -> None:
    import zipfile

    path = tmp_path / "extra.m2kt"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("../../etc/evil", b"x")
    with pytest.raises(PacketFormatError, match="unexpected members"):
        read_packet(path)
    with pytest.raises(PacketFormatError, match="has no tensors"):
        _read(tmp_path, {MANIFEST: members[MANIFEST]})


def test_compressed_members_are_refused(tmp_path: Path, members) -> None:
    import zipfile

    path = tmp_path / "deflated.m2kt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(PacketFormatError, match="compressed"):
        read_packet(path)
