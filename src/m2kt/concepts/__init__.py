"""Concept blocks both sides share: the spec a user writes, reading probes through a model, groups
of probes, the held-out split, and the geometry that scores states against concept vectors.

The teacher side (extract), the safety auditor and the student side (ingest, merge) all build on
these, so none of them has to import another.
"""

from m2kt.concepts.probing import ProbeReadings, Reading, read_probes
from m2kt.concepts.sets import ConceptSet, Group
from m2kt.concepts.spec import ConceptSpec, load_spec, parse_spec
from m2kt.concepts.split import Split, holdout_split

__all__ = [
    "ConceptSet",
    "ConceptSpec",
    "Group",
    "ProbeReadings",
    "Reading",
    "Split",
    "holdout_split",
    "load_spec",
    "parse_spec",
    "read_probes",
]
