"""Crash points: named places where a write is most fragile, for the crash-consistency tests.

With `M2KT_CRASH_AT=<name>` in its environment, a process SIGKILLs itself when it reaches that
place, so a test can prove that a crash at the worst moment (a temporary file written and not
yet renamed, an adapter directory moved aside and the new one not yet in) leaves the old output
or the complete new one. Unset, a crash point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("atomic-write:before-rename", "adapter:before-swap", "adapter:between-renames")


def crash_point(name: str) -> None:
    """Kill this process here if `M2KT_CRASH_AT` names this point."""
    if os.environ.get("M2KT_CRASH_AT") == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
