"""Fuzzing the doors around the packet: one random input per call, from a seeded `random.Random`.

Each door is a parser of input from outside. `DOORS[name](rng, workdir)` draws one input (a valid
seed file mutated byte-wise, or with a field replaced by random JSON) and feeds it to the parser;
the property is that it returns or raises an `M2KTError` with exit code 2. The same functions
drive the hypothesis harnesses of the test suite (`tests/attacks/test_fuzz_doors.py`, which
shrink) and the long counted run (`benchmarks/fuzz_doors.py`); `mutate` and `random_json` are
also the mutators of the packet fuzzer (`benchmarks/fuzz_packets.py`).

Doors: the concept spec (YAML and JSON), the task CSV, the broker's token file, the adapter
directory (`adapter_config.json` + safetensors) and the broker's JSON answers (entries and
error bodies, as the client reads them).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

Door = Callable[[random.Random, Path], None]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-4 byte-level edits: flip, cut the rest, insert random bytes, splice a run of itself."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(("flip", "cut", "insert", "splice"))
        at = rng.randrange(len(buf) + 1)
        if kind == "flip" and at < len(buf):
            buf[at] ^= rng.randint(1, 255)
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "splice" and len(buf) > 8:
            start = rng.randrange(len(buf) - 4)
            buf[at:at] = buf[start : start + rng.randint(1, 64)]
    return bytes(buf)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 7)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice([0, 1, -1, 2**31, 2**63, -(2**70), rng.randint(-1000, 1000)])
    if choice == 3:
        return rng.choice([0.5, -0.0, 1e308, 1e-320, rng.uniform(-1e6, 1e6)])
    if choice in (4, 5, 6):
        return rng.choice(["", "x", "../../etc", "a" * 300, "\u0000", "é", "sha256:" + "0" * 64])
    if choice == 7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["id", "name", "x", "shape", "dtype"]): random_json(rng, depth + 1)}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists, the empty path first."""
    found = [prefix]
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for key, item in items:
        found += paths(item, (*prefix, key))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of `value` with the item at `path` replaced by `new`."""
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def edited(value: Any, rng: random.Random) -> Any:
    """`value` with 1-3 random items (or keys' values) replaced by random JSON."""
    for _ in range(rng.randint(1, 3)):
        value = replaced(value, rng.choice(paths(value)[1:] or [()]), random_json(rng))
    return value


def _variant(seed: Any, rng: random.Random, encode: Callable[[Any], bytes]) -> bytes:
    """A mutated input: the encoded seed with byte edits, or the seed with structured edits."""
    if rng.random() < 0.5:
        return mutate(encode(seed), rng)
    try:
        return encode(edited(seed, rng))
    except (ValueError, TypeError, yaml.YAMLError):  # a value the encoder cannot write
        return encode(seed)


SPEC = {
    "name": "pets",
    "concepts": [
        {"name": "cats", "probes": ["A cat purrs.", "The kitten sleeps."], "parents": ["pets"]},
        {"name": "dogs", "probes": ["A dog barks.", "The puppy runs."]},
    ],
    "layers": [-1, 2],
    "traces": [{"id": "add", "probe": "2 + 3 =", "answer": "5", "steps": ["2 + 3 = 5"]}],
    "texts": ["A bird sings."],
}


def spec_door(rng: random.Random, workdir: Path) -> None:
    from m2kt.concepts.spec import parse_spec_bytes

    if rng.random() < 0.5:
        data = _variant(SPEC, rng, lambda v: yaml.safe_dump(v, allow_unicode=True).encode())
    else:
        data = _variant(SPEC, rng, lambda v: json.dumps(v).encode())
    parse_spec_bytes(data, "fuzz.yaml")


CSV = "text,label\n" + "".join(
    f'"{label} text number {i}, with a comma",{label}\n'
    for i in range(12)
    for label in ("sport", "politics", "tech")
)


def csv_door(rng: random.Random, workdir: Path) -> None:
    from m2kt.tasks import load_task

    path = workdir / "task.csv"
    path.write_bytes(mutate(CSV.encode(), rng))
    load_task(str(path))


TOKENS = {
    "publishers": {
        "alice": {"token_sha256": "0" * 64, "scopes": ["publish", "read"], "keys": ["a.pub"]},
        "bob": {
            "token_sha256": "1" * 64,
            "scopes": ["admin"],
            "keys": [],
            "expires_at": "2030-01-01T00:00:00+00:00",
        },
        "carol": {
            "token_sha256": "",
            "scopes": ["read"],
            "keys": [],
            "revoked_at": "2026-01-01T00:00:00+00:00",
        },
    }
}


def tokens_door(rng: random.Random, workdir: Path) -> None:
    from m2kt.broker.tokens import TokenTable

    path = workdir / "tokens.json"
    path.write_bytes(_variant(TOKENS, rng, lambda v: json.dumps(v).encode()))
    TokenTable.load(path).authenticate("token")


ADAPTER_CONFIG = {"peft_type": "M2KT_CAL", "base_model": "e2", "rank": 4, "concepts": ["a", "b"]}
_ADAPTER_SEED: dict[str, bytes] = {}


def adapter_door(rng: random.Random, workdir: Path) -> None:
    from m2kt.adapter_files import CONFIG_FILE, WEIGHTS_FILE, load_adapter_dir, save_adapter_dir

    directory = workdir / "adapter"
    if not _ADAPTER_SEED:
        g = torch.Generator().manual_seed(0)
        tensors = {"cal.weight": torch.randn(4, 4, generator=g), "cal.bias": torch.zeros(4)}
        save_adapter_dir(workdir / "seed-adapter", ADAPTER_CONFIG, tensors)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            _ADAPTER_SEED[name] = (workdir / "seed-adapter" / name).read_bytes()
    directory.mkdir(exist_ok=True)
    config, weights = _ADAPTER_SEED[CONFIG_FILE], _ADAPTER_SEED[WEIGHTS_FILE]
    if rng.random() < 0.5:
        config = _variant(ADAPTER_CONFIG, rng, lambda v: json.dumps(v).encode())
    else:
        weights = mutate(weights, rng)
    (directory / CONFIG_FILE).write_bytes(config)
    (directory / WEIGHTS_FILE).write_bytes(weights)
    load_adapter_dir(directory, max_bytes=1 << 20)


ENTRY = {
    "digest": "sha256:" + "0" * 64,
    "file_sha256": "1" * 64,
    "size": 1234,
    "kind": "knowledge",
    "publisher": "alice",
    "signer": "2" * 64,
    "created_at": "2026-01-01T00:00:00+00:00",
    "published_at": "2026-01-02T00:00:00+00:00",
    "teachers": ["e1"],
    "concepts": ["sport", "politics"],
    "tags": ["news"],
    "parents": [],
}


def broker_body_door(rng: random.Random, workdir: Path) -> None:
    from m2kt.broker.client import entries_from_body, entry_from_body, error_from_body

    encode: Callable[[Any], bytes] = lambda v: json.dumps(v).encode()  # noqa: E731
    kind = rng.randrange(3)
    if kind == 0:
        entry_from_body(_variant(ENTRY, rng, encode))
    elif kind == 1:
        entries_from_body(_variant([ENTRY, ENTRY], rng, encode))
    else:
        body = {"error": "upload refused", "hint": "sign it", "type": "RefusedPacketError"}
        error = error_from_body(
            rng.choice([400, 401, 404, 413, 422, 429, 500]),
            _variant(body, rng, encode),
            rng.choice([None, "", "7", "²", "-1", "1e3", "9" * 5000]),
        )
        " ".join(error.message.split() + error.hint.split())  # what the CLI does with it


DOORS: dict[str, Door] = {
    "spec": spec_door,
    "csv": csv_door,
    "tokens": tokens_door,
    "adapter": adapter_door,
    "broker-body": broker_body_door,
}


def knock(door: Door, rng: random.Random, workdir: Path) -> None:
    """Run `door` once; an M2KTError of exit code 2 is a refusal, anything else escapes."""
    from m2kt.errors import M2KTError

    try:
        door(rng, workdir)
    except M2KTError as exc:
        if exc.exit_code != 2:
            raise AssertionError(f"bad input exited {exc.exit_code}: {exc.message}") from None
