"""Long fuzz run of the doors around the packet, counting every input per parser.

    nice -n 19 python benchmarks/fuzz_doors.py --iterations 100000 [--seed 0] [--door spec]

For each door of `m2kt.bench.doors.fuzz.DOORS` (concept spec YAML/JSON, task CSV, token file,
adapter directory, broker JSON answers) it draws `--iterations` inputs, one `random.Random` per
input seeded with `door:seed:i`, so that any escape can be replayed alone. An exception other
than an `M2KTError` of exit code 2 is an escape, printed with its door and index. The counts are
written to `--out` (default benchmarks/results/fuzz-doors.json) every 10,000 inputs and at the
end, so that a run stopped early still records what it measured. The hypothesis harnesses in
tests/attacks/test_fuzz_doors.py run the same doors with shrinking, 200 inputs each."""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from m2kt.bench.doors.fuzz import DOORS, knock

RESULTS = Path(__file__).parent / "results" / "fuzz-doors.json"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=100_000, help="inputs per door")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--door", action="append", choices=sorted(DOORS), help="default: all")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="m2kt-fuzz-doors-"))
    report: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for name in args.door or list(DOORS):
        counts = report.setdefault(name, {"inputs": 0, "escapes": 0, "seconds": 0.0})
        door_started = time.perf_counter()
        for i in range(args.iterations):
            try:
                knock(DOORS[name], random.Random(f"{name}:{args.seed}:{i}"), workdir)
            except Exception as exc:  # an escape from the hierarchy: the bug this run looks for
                counts["escapes"] += 1
                print(f"escape: {name} {i}: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
            counts["inputs"] = i + 1
            counts["seconds"] = round(time.perf_counter() - door_started, 1)
            if (i + 1) % 10_000 == 0 or i + 1 == args.iterations:
                _write(args, report, time.perf_counter() - started)
                print(f"{name}: {i + 1} inputs, {counts['escapes']} escapes", flush=True)
    _write(args, report, time.perf_counter() - started)
    return 1 if any(c["escapes"] for c in report.values()) else 0


def _write(args: argparse.Namespace, report: dict[str, dict[str, float]], seconds: float) -> None:
    result = {
        "iterations_asked": args.iterations,
        "seed": args.seed,
        "doors": report,
        "inputs": sum(c["inputs"] for c in report.values()),
        "escapes": sum(c["escapes"] for c in report.values()),
        "seconds": round(seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
