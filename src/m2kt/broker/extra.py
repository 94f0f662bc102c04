"""The broker's HTTP parts come from the optional `broker` extra; say so in one line if absent."""

from __future__ import annotations

from importlib.util import find_spec

from m2kt.errors import UsageError

BROKER_HINT = 'install the broker extra: pip install -c constraints.txt -e ".[broker]"'


def require(*modules: str) -> None:
    for module in modules:
        if find_spec(module) is None:
            raise UsageError(
                f"this command needs the package {module}, which is not installed", BROKER_HINT
            )
