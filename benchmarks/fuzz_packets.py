"""Long fuzz run of the packet loader and the manifest parser, counting every input.

    python benchmarks/fuzz_packets.py --iterations 100000 [--seed 0]

Each iteration draws one of four targets and one random input for it: container bytes of a
signed packet mutated (flips, cuts, inserts, spliced runs) and opened with `read_packet` and
`verify_packet`; a member (manifest or tensors) mutated and re-wrapped canonically; the
manifest with random fields replaced by random JSON values, parsed by `decode_manifest`; a
random safetensors header parsed by `decode_tensors`. Any exception that is not an
`M2KTError` is an escape (printed with its input's seed); a damaged packet that verifies is a
false accept. The hypothesis harnesses in tests/attacks/test_fuzz.py cover the same ground
with shrinking; this script is the one to run for hours, since it reports its counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from m2kt.bench.doors.fuzz import mutate, paths, random_json, replaced
from m2kt.errors import M2KTError
from m2kt.packet import generate_keypair, read_packet, verify_packet
from m2kt.packet.canonical import canonical_json, strict_loads
from m2kt.packet.container import MANIFEST, TENSORS, parse_container, write_container
from m2kt.packet.example import example_packet
from m2kt.packet.limits import DEFAULT_LIMITS
from m2kt.packet.packet import decode_manifest
from m2kt.packet.tensors import decode_tensors


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="m2kt-fuzz-"))
    private, public = generate_keypair(workdir, "fuzz")
    packet = example_packet()
    original = packet.signed(private).to_bytes()
    members = parse_container(original, DEFAULT_LIMITS)
    manifest = strict_loads(members[MANIFEST])
    manifest_paths = paths(manifest)[1:]
    target = workdir / "input.m2kt"
    counts: Counter[str] = Counter()
    escapes = false_accepts = 0
    started = time.perf_counter()
    for i in range(args.iterations):
        rng = random.Random(f"{args.seed}:{i}")
        kind = rng.choice(("container", "member", "manifest", "tensor-header"))
        counts[kind] += 1
        try:
            if kind == "container":
                data = mutate(original, rng)
                target.write_bytes(data)
                for opener in (
                    lambda: read_packet(target),
                    lambda: verify_packet(target, [public]),
                ):
                    try:
                        opener()
                    except M2KTError:
                        continue
                    if data != original:
                        false_accepts += 1
                        print(f"false accept: iteration {i}", file=sys.stderr)
            elif kind == "member":
                name = rng.choice((MANIFEST, TENSORS))
                target.write_bytes(write_container(members | {name: mutate(members[name], rng)}))
                with contextlib.suppress(M2KTError):
                    read_packet(target)
            elif kind == "manifest":
                edited = manifest
                for _ in range(rng.randint(1, 3)):
                    try:
                        edited = replaced(edited, rng.choice(manifest_paths), random_json(rng))
                    except (KeyError, IndexError, TypeError):
                        continue
                with contextlib.suppress(M2KTError):
                    decode_manifest(canonical_json(edited))
            else:
                header = {
                    rng.choice(sorted(packet.manifest.tensors) + ["__metadata__"]): random_json(rng)
                    for _ in range(rng.randint(0, 4))
                }
                encoded = canonical_json(header)
                length = (
                    len(encoded) if rng.random() < 0.8 else rng.choice([0, 2**63, len(encoded) + 1])
                )
                data = (
                    struct.pack("<Q", length)
                    + encoded
                    + bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
                )
                with contextlib.suppress(M2KTError):
                    decode_tensors(data, packet.manifest.tensors, DEFAULT_LIMITS)
        except Exception as exc:  # an escape from the hierarchy: the bug this run looks for
            escapes += 1
            print(f"escape: iteration {i} ({kind}): {type(exc).__name__}: {exc}", file=sys.stderr)
        if (i + 1) % 10_000 == 0:
            print(
                f"{i + 1} inputs, {escapes} escapes, {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    print(
        json.dumps(
            {
                "iterations": args.iterations,
                "seed": args.seed,
                "per_target": dict(counts),
                "escapes": escapes,
                "false_accepts": false_accepts,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 1 if escapes or false_accepts else 0


if __name__ == "__main__":
    sys.exit(main())
