"""Size limits checked before anything large is read from an untrusted packet."""

from __future__ import annotations

from dataclasses import dataclass

from m2kt.errors import UsageError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Upper bounds a packet must respect; the defaults suit packets up to a few GiB.

    Every bound is checked against what the container *declares* before the data is read, so a
    file that lies about its sizes is refused without allocating what it asks for.
    """

    max_file_bytes: int = 4 * GiB
    max_manifest_bytes: int = 16 * MiB
    max_signature_bytes: int = 1 * MiB
    max_tensor_header_bytes: int = 16 * MiB
    max_tensors: int = 100_000
    max_tensor_elements: int = 1 << 30
    max_rank: int = 6

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise UsageError(f"limit {name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = Limits()
