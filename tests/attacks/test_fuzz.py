"""Fuzzing the packet loader and the manifest parser: nothing escapes the exception hierarchy.

Four harnesses, each a property that any input either loads or raises an `M2KTError`:
- raw container bytes, mutated (flips, cuts, inserts) from a signed packet: `read_packet` and
  `verify_packet`;
- members re-wrapped in a canonical container after mutating them, so that the damage reaches
  the manifest and tensor parsers instead of stopping at the container's CRC check;
- the manifest parser on structured edits: a random field replaced by random JSON;
- the safetensors header parser on random header JSON.

CI runs a short pass (`M2KT_FUZZ_EXAMPLES`, default 200 a harness). A long run:
`M2KT_FUZZ_EXAMPLES=25000 pytest tests/attacks/test_fuzz.py` (100,000 inputs in all; see
docs/security.md for the figures of the last one).
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2kt.bench.doors.fuzz import paths, replaced
from m2kt.errors import M2KTError
from m2kt.packet import generate_keypair, read_packet, verify_packet
from m2kt.packet.canonical import canonical_json, strict_loads
from m2kt.packet.container import MANIFEST, TENSORS, parse_container, write_container
from m2kt.packet.limits import DEFAULT_LIMITS
from m2kt.packet.packet import decode_manifest
from m2kt.packet.tensors import decode_tensors

from conftest import knowledge_packet

EXAMPLES = int(os.environ.get("M2KT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_DIR = Path(tempfile.mkdtemp(prefix="m2kt-fuzz-"))
_PRIVATE, _PUBLIC = generate_keypair(_DIR, "fuzz")
_PACKET = knowledge_packet()
_ORIGINAL = _PACKET.signed(_PRIVATE).to_bytes()
_MEMBERS = parse_container(_ORIGINAL, DEFAULT_LIMITS)
_MANIFEST = strict_loads(_MEMBERS[MANIFEST])


def _mutations(size: int) -> st.SearchStrategy[list[tuple[str, int, int]]]:
    one = st.one_of(
        st.tuples(st.just("flip"), st.integers(0, size - 1), st.integers(1, 255)),
        st.tuples(st.just("cut"), st.integers(0, size - 1), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, size), st.integers(0, 255)),
    )
    return st.lists(one, min_size=1, max_size=4)


def _apply(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, position, value in mutations:
        position = min(position, len(buf))
        if kind == "flip" and position < len(buf):
            buf[position] ^= value
        elif kind == "cut":
            del buf[position:]
        elif kind == "insert":
            buf.insert(position, value)
    return bytes(buf)


def _load_or_refuse(data: bytes, *, verify: bool = True) -> None:
    """Open `data` as a packet; only an M2KTError may stop it, and damage must not pass."""
    path = _DIR / "mutated.m2kt"
    path.write_bytes(data)
    openers = [lambda: read_packet(path)]
    if verify:
        openers.append(lambda: verify_packet(path, [_PUBLIC]))
    for open_packet in openers:
        try:
            open_packet()
        except M2KTError:
            continue
        if verify:
            assert data == _ORIGINAL, "a damaged packet was accepted"


@FUZZ
@given(_mutations(len(_ORIGINAL)))
def test_container_bytes(mutations) -> None:
    _load_or_refuse(_apply(_ORIGINAL, mutations))


@FUZZ
@given(st.sampled_from([MANIFEST, TENSORS]), st.data())
def test_member_bytes(member: str, data: st.DataObject) -> None:
    mutated = _apply(_MEMBERS[member], data.draw(_mutations(len(_MEMBERS[member]))))
    _load_or_refuse(write_container(_MEMBERS | {member: mutated}), verify=False)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


_MANIFEST_PATHS = paths(_MANIFEST)[1:]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_MANIFEST_PATHS), _json), min_size=1, max_size=3))
def test_manifest_parser_structured(edits) -> None:
    manifest = _MANIFEST
    for path, new in edits:
        try:
            manifest = replaced(manifest, path, new)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed this path
    try:
        data = canonical_json(manifest)
    except ValueError:
        return
    try:
        decode_manifest(data)
    except M2KTError:
        return


@FUZZ
@given(st.binary(max_size=512) | _json.map(lambda v: canonical_json(v)))
def test_manifest_parser_raw(data: bytes) -> None:
    try:
        decode_manifest(data)
    except M2KTError:
        return


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(sorted(_PACKET.manifest.tensors) + ["__metadata__", "x"]),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "F64", "??"]),
                "shape": st.lists(st.integers(-2, 2**40), max_size=4),
                "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3),
            }
        )
        | _json,
        max_size=4,
    ),
    st.binary(max_size=256),
)
def test_tensor_header(header: dict[str, Any], payload: bytes) -> None:
    encoded = canonical_json(header)
    data = struct.pack("<Q", len(encoded)) + encoded + payload
    try:
        decode_tensors(data, _PACKET.manifest.tensors, DEFAULT_LIMITS)
    except M2KTError:
        return
