"""The manifest schema, version 2 (normative text: docs/packet-format.md).

The manifest is the JSON half of a packet: it names every tensor with its dtype and shape and
describes the parts C (concepts, with their extraction and verification probes), P (the
teacher's states of the extraction probes), D (a linear concept readout), L (the concepts and
probe states at several layers), N (anchors), S (the safety screen's texts), G (abstraction
graph), A (attention), R (reasoning traces), M (provenance) and, for model patches, the patch
payload.
Models are strict: unknown fields, wrong types and inconsistent cross-references are refused, so
that a packet means one thing.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (2,)

DType = Literal["float32", "float16", "bfloat16"]
EdgeType = Literal["is-a", "part-of", "related"]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
MAX_TEXT = 4096  # characters of one probe, anchor or task input
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
JSONScalar = str | int | float | bool
Settings = dict[Annotated[str, Field(max_length=128)], JSONScalar | list[JSONScalar]]

# the optional parts
PARTS = (
    "concepts",
    "probes",
    "readout",
    "layers",
    "anchors",
    "screen",
    "graph",
    "attention",
    "traces",
    "patch",
)
CONCEPTS_TENSOR = "concepts.embeddings"
PROBE_STATES_TENSOR = "probes.states"
ANCHOR_STATES_TENSOR = "anchors.states"
SCREEN_STATES_TENSOR = "screen.states"
READOUT_WEIGHT_TENSOR = "readout.weight"
READOUT_BIAS_TENSOR = "readout.bias"
LAYER_EMBEDDINGS_TENSOR = "layers.embeddings"
LAYER_STATES_TENSOR = "layers.states"
ATTENTION_TENSOR = "attention.patterns"
TRACE_PREFIX = "traces."
PATCH_PREFIX = "patch."
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TensorSpec(_Strict):
    """dtype and shape of one tensor in `tensors.safetensors`."""

    dtype: DType
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)


class TokenScore(_Strict):
    """A probe token and its share of a concept's positive attribution."""

    token: Name
    score: float = Field(ge=0.0, le=1.0)


class UnitScore(_Strict):
    """A hidden unit (index into the embedding width) and its share of a concept's attribution."""

    unit: int = Field(ge=0)
    score: float = Field(ge=0.0, le=1.0)


class Concept(_Strict):
    """One concept of part C: row `index` of `concepts.embeddings`, in list order.

    `probes` are the texts the concept was extracted from; `verification` are texts of the same
    concept held out before anything was computed, which a student scores the transfer on.
    `tokens` and `units` are the evidence gradient attribution found, when that method was used.
    `task_inputs`, when present, says that the last that many `probes` are not a spec's probes
    but task inputs the teacher read and listed under the concept it answered for them.
    """

    id: Identifier
    name: Name
    probes: list[Text] = Field(default_factory=list, max_length=10_000)
    verification: list[Text] = Field(default_factory=list, max_length=10_000)
    task_inputs: int | None = Field(default=None, ge=1, le=10_000)
    layer: int | None = None
    method: Name
    confidence: float = Field(ge=0.0, le=1.0)
    tokens: list[TokenScore] | None = Field(default=None, max_length=64)
    units: list[UnitScore] | None = Field(default=None, max_length=64)


class Probes(_Strict):
    """Part P: `probes.states` [P, d_T], the teacher's state of every extraction probe.

    Rows follow the concepts' `probes` lists, concept by concept. `layer` and `pooling` say how
    they were read (absent for a merge of teachers read differently); `logit_scale` is the
    inverse temperature of the teacher's concept probabilities, softmax(scale · cosine).
    """

    layer: int | None = None
    pooling: Literal["mean", "last"] | None = None
    logit_scale: float = Field(gt=0.0, lt=1e4)


class Readout(_Strict):
    """Part D: the concepts' readout, `readout.weight` [K, d_T · n] and `readout.bias` [K].

    `linear`: the teacher's concept logits of a state read like part P's are
    state · weightᵀ + bias. `mixed`: each concept in its own form, `forms[k]`; concept k's
    score is its log-probability under the linear logits' softmax where its form is `linear`,
    under softmax(`centroid_scale` · centred cosine with the embeddings) where it is `centroid`.
    `layers` (a linear readout only): the weight reads the states of these layers, concatenated
    in this order (n of them, each carried by part L); absent, part P's layer alone (n = 1).
    A packet without part D classifies by the nearest concept embedding (centred cosine).
    """

    kind: Literal["linear", "mixed"]
    forms: list[Literal["centroid", "linear"]] | None = Field(default=None, max_length=1_000_000)
    centroid_scale: float | None = Field(default=None, gt=0.0, lt=1e4)
    layers: list[int] | None = Field(default=None, min_length=2, max_length=1024)


class Layers(_Strict):
    """Part L: the concepts kept at several layers, read with one pooling.

    `layers.embeddings` [len(layers), K, d_T]: each concept's centroid at each layer;
    `layers.states` [len(layers), P, d_T]: each extraction probe's state at each layer, rows as
    in part P. Part C's embeddings and part P stay those of the packet's own layer.
    """

    layers: list[int] = Field(min_length=1, max_length=1024)
    pooling: Literal["mean", "last"]


class Anchors(_Strict):
    """Part N: `anchors.states` [len(texts), d_T], the teacher's states of task-agnostic texts.

    The texts are drawn from a named, versioned anchor set (its SHA-256 over the whole set);
    they are read like part P's probes, so a student that reads the same texts can fit a map
    between the two spaces without any task data.
    """

    set: Name
    version: Name
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    texts: list[Text] = Field(min_length=1, max_length=100_000)


class ScreenTexts(_Strict):
    """Part S: `screen.states` [len(texts), d_T], the teacher's states of the safety screen's
    training texts (m2kt.safety), read at part P's layer and pooling when the export audit ran.

    A student cannot read the teacher, so without them it can screen a concept's vector only
    through a map fitted on neutral anchors, which carries harm's directions poorly; with them
    it fits the same screen the export audit fitted, in the teacher's own space, and measures
    each vector against its probes' teacher states there (docs/security.md, round 6).
    """

    texts: list[Text] = Field(min_length=1, max_length=100_000)


class GraphNode(_Strict):
    id: Identifier
    name: Name
    kind: Literal["concept", "abstract"]


class GraphEdge(_Strict):
    source: Identifier
    target: Identifier
    type: EdgeType
    weight: float = Field(ge=0.0, le=1e6)


class Graph(_Strict):
    """Part G: concept nodes (ids of part C) and abstract parents, typed weighted edges."""

    nodes: list[GraphNode] = Field(max_length=1_000_000)
    edges: list[GraphEdge] = Field(max_length=10_000_000)


class Attention(_Strict):
    """Part A: `attention.patterns` of shape [K concepts, len(layers), length, length].

    Heads are aggregated and sequence positions resampled to `length`, so that a student with
    another head count or tokenizer can compare them with its own.
    """

    layers: list[int] = Field(min_length=1, max_length=1024)
    length: int = Field(ge=1, le=4096)
    head_reduction: Name = "mean"


class Trace(_Strict):
    """One reasoning trace of part R: tensor `traces.<id>` of shape [len(steps), width]."""

    id: Identifier
    probe: Text
    answer: Text | None = None
    steps: list[Name] = Field(min_length=1, max_length=4096)


class ModelRef(_Strict):
    """Identity of a model that produced (part of) the packet."""

    id: Name
    architecture: Name
    weight_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    tokenizer: Name | None = None
    hidden_size: int | None = Field(default=None, ge=1)
    num_layers: int | None = Field(default=None, ge=1)


class Provenance(_Strict):
    """Part M: where the knowledge came from and how it was read out."""

    created_at: Annotated[str, Field(max_length=64)]
    library_version: Name
    method: Name
    models: list[ModelRef] = Field(default_factory=list, max_length=64)
    settings: Settings = Field(default_factory=dict)
    license: Name | None = None
    parents: list[Digest] = Field(default_factory=list, max_length=1024)
    inputs_seen: dict[Identifier, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    measurements: Settings = Field(default_factory=dict)


class Patch(_Strict):
    """The payload of a model patch: a logit-space adapter and the named axes it acts on.

    Its tensors are the declared tensors whose names start with `patch.`; the logit width is
    len(task_classes) + len(aux_classes).
    """

    adapter: Name
    task_classes: list[Name] = Field(min_length=2, max_length=100_000)
    aux_classes: list[Name] = Field(default_factory=list, max_length=100_000)
    templates: list[Text] = Field(default_factory=list, max_length=1024)
    config: Settings = Field(default_factory=dict)

    @property
    def logit_dim(self) -> int:
        return len(self.task_classes) + len(self.aux_classes)


class Manifest(_Strict):
    """The whole manifest. Parts are optional; what is present must be consistent."""

    format_version: Literal[2]
    kind: Literal["knowledge", "patch"]
    tensors: dict[str, TensorSpec] = Field(max_length=100_000)
    provenance: Provenance
    concepts: list[Concept] | None = Field(default=None, max_length=1_000_000)
    probes: Probes | None = None
    readout: Readout | None = None
    layers: Layers | None = None
    anchors: Anchors | None = None
    screen: ScreenTexts | None = None
    graph: Graph | None = None
    attention: Attention | None = None
    traces: list[Trace] | None = Field(default=None, max_length=100_000)
    patch: Patch | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        problems = _cross_reference_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def expected_tensors(self) -> set[str]:
        """Names of the tensors the declared parts refer to."""
        names: set[str] = set()
        if self.concepts is not None:
            names.add(CONCEPTS_TENSOR)
        if self.probes is not None:
            names.add(PROBE_STATES_TENSOR)
        if self.readout is not None:
            names.update((READOUT_WEIGHT_TENSOR, READOUT_BIAS_TENSOR))
        if self.layers is not None:
            names.update((LAYER_EMBEDDINGS_TENSOR, LAYER_STATES_TENSOR))
        if self.anchors is not None:
            names.add(ANCHOR_STATES_TENSOR)
        if self.screen is not None:
            names.add(SCREEN_STATES_TENSOR)
        if self.attention is not None:
            names.add(ATTENTION_TENSOR)
        for trace in self.traces or []:
            names.add(TRACE_PREFIX + trace.id)
        if self.patch is not None:
            names.update(n for n in self.tensors if n.startswith(PATCH_PREFIX))
        return names


def _cross_reference_problems(m: Manifest) -> list[str]:
    """Every way the parts of `m` can disagree with each other or with the tensor table."""
    problems: list[str] = []
    bad_names = [n for n in m.tensors if not _TENSOR_NAME.match(n)]
    if bad_names:
        problems.append(f"invalid tensor names {bad_names[:3]}")
    if m.kind == "patch":
        if m.patch is None:
            problems.append("a patch packet needs a `patch` part")
        knowledge = (
            m.concepts,
            m.probes,
            m.readout,
            m.layers,
            m.anchors,
            m.screen,
            m.attention,
            m.traces,
        )
        if any(p is not None for p in knowledge):
            problems.append(
                "a patch packet must not carry concepts, probes, a readout, layers, anchors, "
                "screen texts, attention or traces"
            )
    elif m.patch is not None:
        problems.append("a knowledge packet must not carry a `patch` part")

    expected = m.expected_tensors()
    declared = set(m.tensors)
    if m.patch is not None and not any(n.startswith(PATCH_PREFIX) for n in declared):
        problems.append("the patch part declares no `patch.*` tensors")
    if declared - expected:
        problems.append(f"tensors no part refers to: {sorted(declared - expected)[:5]}")
    if expected - declared:
        problems.append(f"tensors referred to but not declared: {sorted(expected - declared)[:5]}")
    if problems:
        return problems

    width = None
    if m.concepts is not None:
        ids = [c.id for c in m.concepts]
        if len(set(ids)) != len(ids):
            problems.append("concept ids are not unique")
        shape = m.tensors[CONCEPTS_TENSOR].shape
        if len(shape) != 2 or shape[0] != len(m.concepts):
            problems.append(f"{CONCEPTS_TENSOR} must have shape [{len(m.concepts)}, width]")
        else:
            width = shape[1]
            wide = [c.id for c in m.concepts if any(u.unit >= width for u in c.units or [])]
            if wide:
                problems.append(f"concepts name hidden units beyond the width {width}: {wide[:5]}")
        over = [c.id for c in m.concepts if (c.task_inputs or 0) > len(c.probes)]
        if over:
            problems.append(f"concepts list more task inputs than probes: {over[:5]}")
        shared = [c.id for c in m.concepts if set(c.probes) & set(c.verification)]
        if shared:
            problems.append(f"concepts verify on their own extraction probes: {shared[:5]}")
    if m.probes is not None:
        if m.concepts is None:
            problems.append("probe states need the concepts part")
        else:
            rows = sum(len(c.probes) for c in m.concepts)
            shape = m.tensors[PROBE_STATES_TENSOR].shape
            if len(shape) != 2 or shape[0] != rows or (width and shape[1] != width):
                problems.append(f"{PROBE_STATES_TENSOR} must have shape [{rows}, {width}]")
    if m.layers is not None:
        problems.extend(_layers_problems(m, width))
    if m.readout is not None:
        problems.extend(_readout_problems(m, width))
    for part, tensor, what in (
        (m.anchors, ANCHOR_STATES_TENSOR, "anchor"),
        (m.screen, SCREEN_STATES_TENSOR, "screen"),
    ):
        if part is None:
            continue
        shape = m.tensors[tensor].shape
        if m.probes is None:
            problems.append(f"{what} states need the probes part (their layer and pooling)")
        elif len(shape) != 2 or shape[0] != len(part.texts) or (width and shape[1] != width):
            problems.append(f"{tensor} must have shape [{len(part.texts)}, {width}]")
    if m.attention is not None:
        if m.concepts is None:
            problems.append("attention patterns need the concepts part")
        else:
            want = [
                len(m.concepts),
                len(m.attention.layers),
                m.attention.length,
                m.attention.length,
            ]
            if m.tensors[ATTENTION_TENSOR].shape != want:
                problems.append(f"{ATTENTION_TENSOR} must have shape {want}")
    if m.traces is not None:
        ids = [t.id for t in m.traces]
        if len(set(ids)) != len(ids):
            problems.append("trace ids are not unique")
        for trace in m.traces:
            shape = m.tensors[TRACE_PREFIX + trace.id].shape
            if len(shape) != 2 or shape[0] != len(trace.steps):
                problems.append(f"traces.{trace.id} must have shape [{len(trace.steps)}, width]")
            elif width is not None and shape[1] != width:
                problems.append(
                    f"traces.{trace.id} width {shape[1]} differs from concepts' {width}"
                )
    if m.graph is not None:
        problems.extend(_graph_problems(m.graph, {c.id for c in m.concepts or []}))
    if m.patch is not None:
        classes = m.patch.task_classes + m.patch.aux_classes
        if len(set(classes)) != len(classes):
            problems.append("patch class names (task and auxiliary) must be unique")
    return problems


def _layers_problems(m: Manifest, width: int | None) -> list[str]:
    """Part L against parts C and P: distinct layers, its tensors' shapes."""
    assert m.layers is not None
    if m.concepts is None or m.probes is None:
        return ["concepts at several layers need the concepts and probes parts"]
    problems = []
    if len(set(m.layers.layers)) != len(m.layers.layers):
        problems.append("part L's layers are not unique")
    count, rows = len(m.layers.layers), sum(len(c.probes) for c in m.concepts)
    want = [count, len(m.concepts), width]
    if m.tensors[LAYER_EMBEDDINGS_TENSOR].shape != want:
        problems.append(f"{LAYER_EMBEDDINGS_TENSOR} must have shape {want}")
    if m.tensors[LAYER_STATES_TENSOR].shape != [count, rows, width]:
        problems.append(f"{LAYER_STATES_TENSOR} must have shape {[count, rows, width]}")
    return problems


def _readout_problems(m: Manifest, width: int | None) -> list[str]:
    """Part D against parts C, P and L: its kind's fields, its layers, its tensors' shapes."""
    part = m.readout
    assert part is not None
    if m.concepts is None or m.probes is None:
        return ["a readout needs the concepts and probes parts (its layer and pooling)"]
    problems = []
    concepts = len(m.concepts)
    if part.kind == "mixed":
        if part.forms is None or len(part.forms) != concepts or part.centroid_scale is None:
            problems.append(f"a mixed readout needs {concepts} forms and a centroid_scale")
        if part.layers is not None:
            problems.append("a mixed readout reads one layer; only a linear one has layers")
    elif part.forms is not None or part.centroid_scale is not None:
        problems.append("forms and centroid_scale belong to a mixed readout")
    count = 1
    if part.layers is not None:
        count = len(part.layers)
        kept = m.layers.layers if m.layers is not None else []
        missing = [n for n in part.layers if n not in kept]
        if len(set(part.layers)) != count or missing:
            problems.append(
                f"the readout's layers must be distinct and carried by part L (missing {missing})"
            )
        if m.layers is not None and m.layers.pooling != m.probes.pooling:
            problems.append("part L must be read with part P's pooling for a readout over layers")
    weight = m.tensors[READOUT_WEIGHT_TENSOR].shape
    if width is None or weight != [concepts, width * count]:
        problems.append(f"{READOUT_WEIGHT_TENSOR} must have shape [{concepts}, {width} × {count}]")
    elif m.tensors[READOUT_BIAS_TENSOR].shape != [concepts]:
        problems.append(f"{READOUT_BIAS_TENSOR} must have shape [{concepts}]")
    return problems


def _graph_problems(graph: Graph, concept_ids: set[str]) -> list[str]:
    problems = []
    node_ids = [n.id for n in graph.nodes]
    if len(set(node_ids)) != len(node_ids):
        problems.append("graph node ids are not unique")
    missing = [n.id for n in graph.nodes if n.kind == "concept" and n.id not in concept_ids]
    if missing:
        problems.append(f"graph concept nodes not in part C: {missing[:5]}")
    known = set(node_ids)
    dangling = [f"{e.source}->{e.target}" for e in graph.edges if {e.source, e.target} - known]
    if dangling:
        problems.append(f"graph edges to unknown nodes: {dangling[:5]}")
    return problems
