"""The frozen evaluation family: four domains, 8+ probes a concept, held out apart, hashed."""

from __future__ import annotations

import shutil

import pytest

from m2kt.bench.extract import family
from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError


@pytest.mark.parametrize("name", family.FAMILY)
def test_each_spec_is_frozen_with_separate_heldout_sentences(name: str) -> None:
    frozen = family.frozen_spec(name)
    spec = load_spec(frozen.path)
    assert [c.id for c in spec.concepts] == list(frozen.heldout)
    assert all(len(c.probes) >= 8 for c in spec.concepts)
    assert all(len(texts) >= 4 for texts in frozen.heldout.values())
    held = {t for texts in frozen.heldout.values() for t in texts}
    assert not held & set(spec.all_probes())


def test_an_edited_family_file_is_refused(tmp_path, monkeypatch) -> None:
    copy = tmp_path / "specs"
    shutil.copytree(family.SPECS, copy)
    (copy / "sports.heldout.yaml").write_text(
        (copy / "sports.heldout.yaml").read_text().replace("Game, set and match.", "Tennis.")
    )
    monkeypatch.setattr(family, "SPECS", copy)
    family.frozen_spec("cooking")
    with pytest.raises(UsageError, match="sports.heldout.yaml has changed"):
        family.frozen_spec("sports")
