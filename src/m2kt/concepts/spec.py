"""The concept spec: what a teacher is asked about, in a small YAML or JSON file, not a data set.

    concepts:
      - name: sport
        probes: ["The striker scored twice.", "She won the 100 m final."]
        parents: [leisure]          # optional abstract parents (graph edges is-a)
    layers: [4, 6]                  # optional candidate layers (default: five spread over the
                                    # top two thirds); the most consistent one is used
    attention_layers: [1, 6]        # optional (default: every layer)
    traces:                         # optional reasoning probes
      - id: add-carry
        probe: "47 + 38 ="
        answer: "85"
        steps: ["7 + 8 = 15, write 5, carry 1", "4 + 3 + 1 = 8", "85"]
    texts: ["…"]                    # optional unlabelled inputs for the clustering method

Errors name the line of the file they are about: a spec is written by hand. A spec is read
with limits (`MAX_SPEC_BYTES`, UTF-8 only, `MAX_DEPTH` levels of nesting, `MAX_NODES` YAML nodes
counting each alias use, `MAX_CONCEPTS` concepts and `MAX_PROBES` inputs in all), so that a
hostile or mistaken file is refused in milliseconds instead of running for hours.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from m2kt.errors import UsageError
from m2kt.inputs import read_bounded

MAX_SPEC_BYTES = 16 << 20
MAX_DEPTH = 16
MAX_NODES = 250_000
MAX_CONCEPTS = 1_000
MAX_PROBES = 20_000
SHIPPED = Path(__file__).parent / "specs"

ProbeText = Annotated[str, Field(min_length=1, max_length=4096)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class SpecError(UsageError):
    """A concept spec that cannot be used, with the line it is about."""

    default_hint = "fix the concept spec (format: `m2kt extract --help`)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConceptEntry(_Strict):
    name: Name
    probes: list[ProbeText] = Field(min_length=1, max_length=10_000)
    parents: list[Name] = Field(default_factory=list, max_length=64)

    @property
    def id(self) -> str:
        return slug(self.name)


class TraceEntry(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    probe: ProbeText
    answer: Annotated[str, Field(max_length=4096)] | None = None
    steps: list[ProbeText] = Field(default_factory=list, max_length=256)


class ConceptSpec(_Strict):
    name: Name = "concepts"
    description: Annotated[str, Field(max_length=4096)] | None = None
    concepts: list[ConceptEntry] = Field(default_factory=list, max_length=MAX_CONCEPTS)
    layers: list[int] | None = Field(default=None, min_length=1, max_length=256)
    attention_layers: list[int] | None = Field(default=None, min_length=1, max_length=256)
    traces: list[TraceEntry] = Field(default_factory=list, max_length=10_000)
    texts: list[ProbeText] = Field(default_factory=list, max_length=MAX_PROBES)

    @field_validator("concepts")
    @classmethod
    def _unique(cls, concepts: list[ConceptEntry]) -> list[ConceptEntry]:
        seen: dict[str, str] = {}
        for concept in concepts:
            if concept.id in seen:
                raise ValueError(
                    f"concepts {seen[concept.id]!r} and {concept.name!r} have the same id "
                    f"{concept.id!r}; names must differ in letters or digits"
                )
            seen[concept.id] = concept.name
        return concepts

    @model_validator(mode="after")
    def _bounded(self) -> ConceptSpec:
        inputs = len(self.all_probes()) + len(self.texts)
        inputs += sum(1 + len(t.steps) for t in self.traces)
        if inputs > MAX_PROBES:
            raise ValueError(
                f"the spec asks for {inputs:,} model inputs (probes, trace steps and texts); "
                f"at most {MAX_PROBES:,} are read"
            )
        return self

    def all_probes(self) -> list[str]:
        return [p for c in self.concepts for p in c.probes]


def slug(name: str) -> str:
    """A packet identifier made from a human name: `Sport & games` → `sport-games`."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:120]
    return text or "concept"


def load_spec(source: str | Path) -> ConceptSpec:
    """Read a spec file, or a shipped spec by name (`topics`, `arithmetic`)."""
    path = Path(source)
    if not path.exists() and (SHIPPED / f"{source}.yaml").is_file():
        path = SHIPPED / f"{source}.yaml"
    shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
    hint = f"pass a YAML/JSON file, or a shipped spec: {shipped}"
    if not str(source).strip():
        raise SpecError("the concept spec is empty", hint)
    data = read_bounded(path, "concept spec", MAX_SPEC_BYTES, hint, SpecError)
    return parse_spec_bytes(data, path.name)


def parse_spec_bytes(data: bytes, filename: str = "spec") -> ConceptSpec:
    """Validate a spec file's bytes, which must be UTF-8 (a byte-order mark is allowed)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"{filename} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start})",
            "save the spec as UTF-8",
        ) from None
    return parse_spec(text, filename)


def parse_spec(text: str, filename: str = "spec") -> ConceptSpec:
    """Validate spec text (YAML or JSON); every error names `filename` and a line."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters right here
        root = loader.get_single_node()
        if root is not None:
            _check_size(root, filename)
            duplicate = _duplicate_key(root)
            if duplicate:
                raise SpecError(
                    f"{filename} line {duplicate[1]}: key {duplicate[0]!r} appears twice"
                )
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{filename}{where}: not valid YAML/JSON: {problem}") from None
    except RecursionError:  # the YAML composer recurses once per level, before our check runs
        raise SpecError(f"{filename}: nested more than {MAX_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    if root is None or not isinstance(data, dict):
        raise SpecError(f"{filename}: the spec must be a mapping with a `concepts` list")
    try:
        spec = ConceptSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = list(error["loc"])
        line = _line_of(root, location)
        field = ".".join(str(p) for p in location) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SpecError(f"{filename} line {line}: {field}: {message}") from None
    if not spec.concepts and not spec.texts:
        raise SpecError(f"{filename}: the spec has no concepts and no texts; give at least one")
    return spec


def _check_size(root: yaml.Node, filename: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_NODES nodes, aliases counted at
    each use (so that a few anchors cannot stand for a billion nodes)."""
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise SpecError(f"{filename} line {line}: nested more than {MAX_DEPTH} levels deep")
        if seen > MAX_NODES:
            raise SpecError(
                f"{filename}: more than {MAX_NODES:,} YAML nodes (aliases count at each use)"
            )
        if isinstance(node, yaml.MappingNode):
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    raise SpecError(f"{filename} line {line}: a key must be a plain value")
            stack += [(n, depth + 1) for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(n, depth + 1) for n in node.value]


def _line_of(node: yaml.Node, location: list[Any]) -> int:
    """1-based line of the deepest node on `location` that exists in the document."""
    for key in location:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _duplicate_key(node: yaml.Node) -> tuple[str, int] | None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if key.value in seen:
                return key.value, key.start_mark.line + 1
            seen.add(key.value)
            found = _duplicate_key(value)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item)
            if found:
                return found
    return None
