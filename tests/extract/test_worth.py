"""A packet's worth at export: the note when its concepts are no better than guessing."""

from __future__ import annotations

from m2kt.extract.worth import Worth


def _worth(accuracy: float, heldout: int, concepts: int) -> Worth:
    return Worth(accuracy, linear_probe_accuracy=1.0, chance=1 / concepts, heldout=heldout)


def test_concepts_at_chance_are_said_and_concepts_above_it_are_not() -> None:
    at_chance = _worth(4 / 15, heldout=15, concepts=5)  # 4 of 15 right, chance 3 of 15
    note = at_chance.no_better_than_chance()
    assert note is not None and "no better than chance" in note and "26.7% of 15" in note
    assert _worth(12 / 15, heldout=15, concepts=5).no_better_than_chance() is None


def test_few_held_out_probes_cannot_show_a_packet_better_than_chance() -> None:
    """Two of two right among two concepts is what guessing gives one time in four."""
    assert _worth(1.0, heldout=2, concepts=2).no_better_than_chance() is not None
    assert _worth(1.0, heldout=10, concepts=2).no_better_than_chance() is None
