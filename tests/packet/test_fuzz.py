"""Random damage to a signed packet never escapes the exception hierarchy."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2kt.errors import M2KTError
from m2kt.packet import generate_keypair, read_packet, verify_packet

from conftest import knowledge_packet

_DIR = Path(tempfile.mkdtemp(prefix="m2kt-fuzz-"))
_PRIVATE, _PUBLIC = generate_keypair(_DIR, "fuzz")
_ORIGINAL = knowledge_packet().signed(_PRIVATE).to_bytes()

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(_ORIGINAL) - 1), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, len(_ORIGINAL) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(_ORIGINAL)), st.integers(0, 255)),
)


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


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutations_never_escape_the_hierarchy(mutations) -> None:
    data = _apply(_ORIGINAL, mutations)
    path = _DIR / "mutated.m2kt"
    path.write_bytes(data)
    for open_packet in (lambda: read_packet(path), lambda: verify_packet(path, [_PUBLIC])):
        try:
            open_packet()
        except M2KTError:
            continue
        assert data == _ORIGINAL, "a damaged packet was accepted"
