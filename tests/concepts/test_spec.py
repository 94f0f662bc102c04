"""Concept specs: shipped ones load; every mistake names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2kt.concepts.spec import SpecError, load_spec, parse_spec, slug

GOOD = """\
name: pets
concepts:
  - name: Cats & kittens
    probes: ["a cat purrs", "the kitten sleeps"]
    parents: [animals]
  - name: dogs
    probes: ["a dog barks"]
traces:
  - id: count
    probe: "one cat and two dogs make"
    answer: "three"
    steps: ["1 + 2 = 3"]
"""


def test_a_valid_spec_and_the_shipped_ones_load(tmp_path: Path) -> None:
    spec = parse_spec(GOOD)
    assert [c.id for c in spec.concepts] == ["cats-kittens", "dogs"]
    assert spec.layers is None and spec.traces[0].steps == ["1 + 2 = 3"]
    for name in ("topics", "arithmetic"):
        shipped = load_spec(name)
        assert all(len(c.probes) >= 3 for c in shipped.concepts)
    as_json = tmp_path / "spec.json"
    as_json.write_text('{"concepts": [{"name": "a", "probes": ["x"]}]}')
    assert load_spec(as_json).concepts[0].name == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace('probes: ["a dog barks"]', "probes: []"), r"line 7: concepts\.1\.probes"),
        (
            GOOD.replace("    answer:", "    colour: red\n    answer:"),
            r"line 11: traces\.0\.colour",
        ),
        (GOOD.replace("name: dogs", "name: cats kittens"), "line 3: concepts: .*same id"),
        (GOOD + "name: again\n", "line 13: key 'name' appears twice"),
        ("concepts: [\n  {name: a, probes: [x]\n", "line 3: not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: empty\n", "no concepts and no texts"),
    ],
)
def test_mistakes_name_the_line(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(text, "spec.yaml")


def test_missing_spec_lists_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such concept spec") as caught:
        load_spec(tmp_path / "nope.yaml")
    assert "arithmetic, topics" in caught.value.hint


def test_yaml_tags_cannot_build_objects() -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("concepts: !!python/object/apply:os.system ['true']\n")


def test_slug_makes_identifiers() -> None:
    assert slug("Sport & games!") == "sport-games" and slug("???") == "concept"
