import zipfile
from pathlib import Path

import pytest

from m2kt.errors import UsageError
from m2kt.models.embedded import _extract_model


def _zip(path: Path, members: dict[str, bytes]) -> zipfile.ZipFile:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return zipfile.ZipFile(path)


def test_extraction_is_all_or_nothing_and_survives_a_stale_partial(tmp_path: Path) -> None:
    target = tmp_path / "model"
    (tmp_path / "model.partial" / "junk").mkdir(parents=True)  # an interrupted earlier run
    _extract_model(_zip(tmp_path / "m.zip", {"model/config.json": b"{}"}), target)
    assert (target / "model" / "config.json").read_bytes() == b"{}"
    assert not (tmp_path / "model.partial").exists()


def test_members_outside_the_target_are_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "evil.zip", {"../escape.txt": b"x"})
    with pytest.raises(UsageError, match="outside"):
        _extract_model(archive, tmp_path / "model")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "model").exists()
