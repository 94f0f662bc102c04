"""Fuzzing the doors around the packet: spec, CSV, token file, adapter directory, broker answers.

Each harness is a property: any input a door's fuzzer draws (`m2kt.bench.doors.fuzz`) is read or
refused with an `M2KTError` of exit code 2, never another exception. Hypothesis draws the random
source, so a failure shrinks to a short sequence of choices. CI runs `M2KT_FUZZ_EXAMPLES`
(default 200) a door; the long counted run is `benchmarks/fuzz_doors.py`.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2kt.bench.doors.fuzz import DOORS, knock

EXAMPLES = int(os.environ.get("M2KT_FUZZ_EXAMPLES", "200"))
_WORKDIR = Path(tempfile.mkdtemp(prefix="m2kt-fuzz-doors-"))


@pytest.mark.parametrize("door", sorted(DOORS))
def test_door(door: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.randoms(use_true_random=False))
    def harness(rng: random.Random) -> None:
        knock(DOORS[door], rng, _WORKDIR)

    harness()
