"""Teacher side, the paper's Algorithm 1: a teacher and a concept spec in, a packet out.

Read top to bottom: resolve layers → split each concept's probes into extraction and
verification probes → read every probe once → pick the layer (and the readout: per concept a
centroid or a linear row, on one layer or several side by side) → extract concepts by the
chosen method → measure their worth → concepts at every candidate layer where kept (part L),
anchors, attention, traces, graph → provenance → packet. Same seed, inputs and creation time
give the same bytes.

The split comes first: the layer choice, the concepts, their confidence, attention and the probe
states a student aligns on (part P) see only extraction probes. The verification probes travel
in the packet so that a student scores the transfer on texts nothing was fitted to. The teacher
also reads a seeded subset of a task-agnostic anchor set at the concepts' layer and pooling
(part N), so that a student can fit its map from the teacher's space without any task data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, Protocol

import torch
from torch.nn import functional as F

from m2kt.anchors import SHIPPED_ANCHORS, load_anchor_set
from m2kt.concepts.probing import ProbeReadings, Reading, read_probes
from m2kt.concepts.readout import KINDS, Kind, ReadingScore, Readout, fit_readout, score_reading
from m2kt.concepts.sets import ConceptSet, Group, labelled_probes
from m2kt.concepts.spec import ConceptSpec
from m2kt.concepts.split import Split, holdout_split
from m2kt.errors import UsageError
from m2kt.extract import attribution, bottleneck, clustering
from m2kt.extract.graph import abstraction_graph
from m2kt.extract.traces import read_traces
from m2kt.extract.worth import Worth, measure_worth
from m2kt.models.view import ModelView, NoAttentionError, Pooling, Purpose
from m2kt.packet import ModelRef, Packet, make_provenance
from m2kt.packet.manifest import (
    ANCHOR_STATES_TENSOR,
    LAYER_EMBEDDINGS_TENSOR,
    LAYER_STATES_TENSOR,
    MAX_TEXT,
    PROBE_STATES_TENSOR,
    READOUT_BIAS_TENSOR,
    READOUT_WEIGHT_TENSOR,
)
from m2kt.progress import StageProgress, quiet

Method = Literal["bottleneck", "clustering", "attribution", "head"]
METHODS: tuple[Method, ...] = ("bottleneck", "clustering", "attribution", "head")


@dataclass(frozen=True)
class TeacherHead:
    """A teacher's own classifier over the spec's concepts, the skill it was tuned for.

    `weights` [K, d_T], one row per spec concept in order, score the pooled state at `layer`
    (the view's pooling) as softmax(`scale` · cosine). With `method="head"` these rows are the
    packet's concepts and `scale` its logit scale, so the teacher's probabilities on any text
    the packet carries a state for are exactly its head's.
    """

    weights: torch.Tensor
    scale: float
    layer: int = -1


@dataclass(frozen=True)
class ExtractionSettings:
    """How to read the teacher. `layers` overrides the spec's candidate layers."""

    method: Method = "bottleneck"
    layers: list[int] | None = None
    pooling: Literal["auto", "mean", "last"] = "auto"
    readout: Literal["auto", "centroid", "linear"] = "auto"  # bottleneck only; see concepts.readout
    keep_layers: bool = False  # carry the concepts at every candidate layer (part L)
    attention: bool = True
    attention_length: int = 16
    clusters: int | None = None
    ig_steps: int = 16
    batch_size: int = 16
    truncate: bool = False
    probe_states: bool = True
    logit_scale: float = 20.0  # inverse temperature of the teacher's concept probabilities
    anchors: str | None = SHIPPED_ANCHORS  # an anchor set (name or file); None: carry none
    anchor_count: int = 1024  # a seeded subset of the set (benchmarks/anchor_sets.py)
    seed: int = 0
    license: str | None = None
    created_at: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.pooling not in ("auto", "mean", "last"):
            raise UsageError(f"unknown pooling {self.pooling!r}; choose auto, mean or last")
        if self.readout not in ("auto", *KINDS):
            raise UsageError(f"unknown readout {self.readout!r}; choose auto, centroid or linear")
        if self.keep_layers and not self.probe_states:
            raise UsageError(
                "concepts kept at several layers travel with their probe states",
                "keep probe states, or drop keep_layers",
            )
        if self.readout == "linear" and (self.method != "bottleneck" or not self.probe_states):
            raise UsageError(
                "a linear readout is fitted on the bottleneck method's probe states",
                "use --method bottleneck with probe states, or --readout centroid",
            )
        for name in ("attention_length", "ig_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")
        if not 0 < self.logit_scale < 1e4:
            raise UsageError(f"logit_scale must be in (0, 10000), got {self.logit_scale}")
        if self.anchor_count < 1:
            raise UsageError(f"anchor_count must be at least 1, got {self.anchor_count}")


class ExportAudit(Protocol):
    """A screen of the extracted concepts before export: notes for the user, figures for provenance.

    The pipeline takes it as a step so the teacher side does not depend on the safety auditor;
    `m2kt extract` passes a `m2kt.safety.ExportScreen` unless told `--no-safety-screen`.
    """

    def __call__(
        self,
        view: ModelView,
        layer: int,
        pooling: Pooling,
        concepts: ConceptSet,
        states: torch.Tensor,
        texts: list[str],
        batch_size: int,
    ) -> tuple[list[str], dict[str, float]]: ...


@dataclass(frozen=True)
class Extraction:
    """The packet and what was learned making it (also in its provenance)."""

    packet: Packet
    worth: Worth | None
    notes: list[str] = field(default_factory=list)


def extract_packet(
    view: ModelView,
    spec: ConceptSpec,
    settings: ExtractionSettings | None = None,
    progress: StageProgress | None = None,
    audit: ExportAudit | None = None,
    *,
    head: TeacherHead | None = None,
    task_inputs: Sequence[str] = (),
) -> Extraction:
    """`head`: the teacher's own classifier (needed by, and only by, `method="head"`).
    `task_inputs`: unlabelled texts of the user's task. The teacher reads them (counted as task
    inputs) after the concepts are made, and each joins the extraction probes of the concept
    the teacher answers for it (`Concept.task_inputs`), with its state in part P: what a
    student refines its map and its answers on. They are never verification probes.
    """
    settings = settings or ExtractionSettings()
    progress = progress or quiet
    notes: list[str] = []
    torch.manual_seed(settings.seed)
    task_texts = _task_texts(spec, task_inputs, settings)
    _check_head(view, spec, settings, head)

    # Setup: layers, texts, concept groups.
    wanted_layers = [head.layer] if head is not None else None
    candidates = view.check_layers(
        wanted_layers or settings.layers or spec.layers or default_layers(view)
    )
    attention_layers = _attention_layers(view, spec, settings, notes)
    texts = spec.all_probes() + list(spec.texts)
    groups, start = [], 0
    for entry in spec.concepts:
        groups.append(Group(entry.name, entry.id, list(range(start, start + len(entry.probes)))))
        start += len(entry.probes)
    if settings.method != "clustering" and not groups:
        raise UsageError("the spec has no named concepts", "use --method clustering for texts")
    if settings.method == "attribution" and view.device.type != "cpu":
        raise UsageError(
            f"--method attribution runs on the CPU only, the teacher is on {view.device}",
            "pass --device cpu, or use --method bottleneck on the GPU",
        )
    split = holdout_split(groups, settings.seed)
    anchor_set = load_anchor_set(settings.anchors) if settings.anchors else None

    # Read every probe once.
    poolings = _poolings(view, settings)
    readings = read_probes(
        view,
        texts,
        candidates,
        attention_layers,
        poolings=poolings,
        attention_length=settings.attention_length,
        batch_size=settings.batch_size,
        truncate=settings.truncate,
        progress=lambda d, t: progress("read probes", d, t),
    )
    kinds = _readout_kinds(settings)
    (pooling, layer), scores, stack = _choose_reading(readings, split.train, settings, kinds)
    states = readings.states[(pooling, layer)]
    kept_layers = _kept_layers(readings, pooling, settings, stack)

    # Concepts by the chosen method from extraction probes, a linear readout where it classifies
    # left-out extraction probes better than the centroids, their worth on verification probes.
    evidence: dict[str, Any] = {}  # what the method measured about itself, for provenance
    concepts, cluster_labels = _extract_concepts(
        view, states, (pooling, layer), split, settings, texts, progress, evidence, notes
    )
    if head is not None:
        concepts = replace(
            concepts, embeddings=F.normalize(head.weights.float(), dim=-1), method="head"
        )
    scale = head.scale if head is not None else settings.logit_scale
    task_states, task_answers = _read_task_inputs(
        view, task_texts, pooling, [layer, *kept_layers], concepts.embeddings, settings, progress
    )
    if stack is not None:
        readout_states = readings.side_by_side(pooling, stack.layers)
        readout = _fit_readout(readout_states, split, stack.score, kinds, stack.layers)
    else:
        readout_states = states
        readout = _fit_readout(states, split, scores.get((pooling, layer)), kinds)
    worth = measure_worth(
        states, split, concepts.embeddings, cluster_labels, readout, readout_states
    )
    if worth is None:
        notes.append("worth not measured: it needs 2+ concepts, some with 3+ probes")
    elif chance := worth.no_better_than_chance():
        notes.append(chance)
    safety: dict[str, float] = {}
    if audit is not None:
        flagged, safety = audit(view, layer, pooling, concepts, states, texts, settings.batch_size)
        notes += flagged

    # Parts D (readout) and L (layers), attention, traces, graph.
    tensors: dict[str, torch.Tensor] = {"concepts.embeddings": concepts.embeddings}
    readout_tensors, readout_part = _readout_part(readout)
    layer_tensors, layers_part = _layers_part(
        readings, pooling, kept_layers, task_states, task_answers, concepts
    )
    tensors |= readout_tensors | layer_tensors
    attention_part = None
    if readings.attention is not None:
        tensors["attention.patterns"] = torch.stack(
            [readings.attention[g.probes].mean(0) for g in concepts.groups]
        )
        attention_part = {
            "layers": readings.attention_layers,
            "length": settings.attention_length,
            "head_reduction": "mean",
        }
    trace_tensors, traces, trace_inputs = read_traces(
        view, spec.traces, layer, settings.truncate, lambda d, t: progress("traces", d, t)
    )
    tensors |= {name: value.cpu() for name, value in trace_tensors.items()}
    anchors_part, anchor_inputs = None, 0
    if anchor_set is not None and settings.probe_states:
        anchor_texts = anchor_set.subset(settings.anchor_count, settings.seed)
        read = _read_at(view, anchor_texts, pooling, [layer], "anchor", settings, progress)
        tensors[ANCHOR_STATES_TENSOR] = read[layer].to(torch.float16)
        anchors_part = {
            "set": anchor_set.name,
            "version": anchor_set.version,
            "sha256": anchor_set.sha256,
            "texts": anchor_texts,
        }
        anchor_inputs = len(anchor_texts)
    probes_part = None
    if settings.probe_states:
        # Each extraction probe's own state (half precision is plenty for fitting a map): the
        # pairs a student fits its alignment layer on.
        # A concept's task inputs follow its spec probes, as in part C.
        rows = _probe_rows(states, task_states[layer], task_answers, concepts)
        tensors[PROBE_STATES_TENSOR] = rows.to(torch.float16)
        probes_part = {"layer": layer, "pooling": pooling, "logit_scale": scale}
    graph = abstraction_graph(concepts, spec)

    # Provenance and packet.
    passes = len(texts) + trace_inputs + anchor_inputs + len(task_texts)
    if settings.method == "attribution":
        passes += sum(len(g.probes) for g in split.train) * (settings.ig_steps + 1)
    provenance = make_provenance(
        method=f"extract:{settings.method}",
        created_at=settings.created_at,
        license=settings.license,
        models=[
            ModelRef(
                id=view.name,
                architecture=view.architecture,
                weight_sha256=view.weight_sha256,
                tokenizer=view.tokenizer_name,
                hidden_size=view.width,
                num_layers=view.num_layers,
            )
        ],
        settings=_settings_record(
            view, spec, settings, candidates, pooling, concepts, readings, notes
        )
        | _reading_record(scores, readout, stack)
        | evidence,
        inputs_seen={"teacher": len(texts) + trace_inputs}
        | ({"teacher_anchors": anchor_inputs} if anchor_inputs else {})
        | ({"teacher_task": len(task_texts)} if task_texts else {}),
        measurements=(worth.as_measurements() if worth else {})
        | safety
        | {
            # every forward pass of the teacher, the safety audit's texts included
            "teacher_forward_inputs": passes + int(safety.get("safety_inputs", 0)),
            "teacher_checkpoint_bytes": view.checkpoint_bytes,
        },
    )
    packet = Packet.create(
        kind="knowledge",
        provenance=provenance,
        tensors=tensors,
        concepts=_concept_entries(
            concepts,
            texts,
            split,
            settings.method,
            [
                [t for t, a in zip(task_texts, task_answers, strict=True) if a == k]
                for k in range(len(concepts.groups))
            ],
        ),
        probes=probes_part,
        readout=readout_part,
        layers=layers_part,
        anchors=anchors_part,
        graph=graph,
        attention=attention_part,
        traces=traces or None,
    )
    return Extraction(packet=packet, worth=worth, notes=notes)


def _task_texts(
    spec: ConceptSpec, task_inputs: Sequence[str], settings: ExtractionSettings
) -> list[str]:
    """The distinct task inputs that are not already a probe of the spec."""
    if not task_inputs:
        return []
    if settings.method == "clustering":
        raise UsageError(
            "task inputs need named concepts to be answered for",
            "use --method bottleneck or head",
        )
    long = next((i for i, t in enumerate(task_inputs) if not 0 < len(t) <= MAX_TEXT), None)
    if long is not None:
        raise UsageError(
            f"task input {long + 1} is empty or over {MAX_TEXT} characters",
            f"cut task inputs to at most {MAX_TEXT} characters (the model reads far fewer)",
        )
    probes = set(spec.all_probes())
    return [t for t in dict.fromkeys(task_inputs) if t not in probes]


def _check_head(
    view: ModelView, spec: ConceptSpec, settings: ExtractionSettings, head: TeacherHead | None
) -> None:
    if (settings.method == "head") != (head is not None):
        raise UsageError(
            "method head takes the teacher's head, and only it does",
            "pass head=TeacherHead(...) with method='head'",
        )
    if head is None:
        return
    shape = (len(spec.concepts), view.width)
    if tuple(head.weights.shape) != shape or not torch.isfinite(head.weights).all():
        raise UsageError(
            f"the teacher's head is {tuple(head.weights.shape)}, the spec and teacher need "
            f"{shape}, finite"
        )
    if not 0 < head.scale < 1e4:
        raise UsageError(f"the head's scale must be in (0, 10000), got {head.scale}")


def _read_task_inputs(
    view: ModelView,
    texts: list[str],
    pooling: Pooling,
    layers: list[int],
    concepts: torch.Tensor,
    settings: ExtractionSettings,
    progress: StageProgress,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The teacher's states of the task inputs at each of `layers` ([T, d] each) and the
    concept it answers for each [T], by the concepts at `layers[0]`."""
    if not texts:
        empty = torch.zeros(0, concepts.shape[1])
        return {n: empty for n in layers}, torch.zeros(0, dtype=torch.long)
    states = _read_at(view, texts, pooling, layers, "task", settings, progress)
    first = states[layers[0]].float()
    answers = (F.normalize(first, dim=-1) @ F.normalize(concepts, dim=-1).T).argmax(-1)
    return states, answers


def _read_at(
    view: ModelView,
    texts: list[str],
    pooling: Pooling,
    layers: list[int],
    purpose: Purpose,
    settings: ExtractionSettings,
    progress: StageProgress,
) -> dict[int, torch.Tensor]:
    """States [N, d] of texts beyond the spec (anchors, task inputs) at `layers` with the
    concepts' pooling, cut at the context, counted under `purpose`."""
    with view.reading(purpose):
        read = read_probes(
            view,
            texts,
            sorted(set(layers)),
            poolings=[pooling],
            batch_size=settings.batch_size,
            truncate=True,
            progress=lambda d, t: progress(f"read {purpose} texts", d, t),
        )
    return {n: read.states[(pooling, n)] for n in layers}


def _probe_rows(
    states: torch.Tensor, task: torch.Tensor, answers: torch.Tensor, concepts: ConceptSet
) -> torch.Tensor:
    """Part P's rows from one layer's states: each concept's extraction probes, then the task
    inputs the teacher answered it for."""
    return torch.cat(
        [torch.cat([states[g.probes], task[answers == k]]) for k, g in enumerate(concepts.groups)]
    )


def _readout_part(readout: Readout) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Part D's tensors and manifest entry; none for centroids (part C is their readout)."""
    if readout.weight is None or readout.bias is None:
        return {}, None
    part: dict[str, Any] = {"kind": readout.kind}
    if readout.kind == "mixed":
        part |= {"forms": list(readout.forms), "centroid_scale": readout.centroid_scale}
    if readout.layers:
        part["layers"] = list(readout.layers)
    return {READOUT_WEIGHT_TENSOR: readout.weight, READOUT_BIAS_TENSOR: readout.bias}, part


def _layers_part(
    readings: ProbeReadings,
    pooling: Pooling,
    layers: list[int],
    task_states: dict[int, torch.Tensor],
    task_answers: torch.Tensor,
    concepts: ConceptSet,
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Part L at `layers` (none kept: no part): each concept's centroid and each extraction
    probe's state (task inputs after a concept's spec probes, as in part P) at every layer."""
    if not layers:
        return {}, None
    embeddings = [
        bottleneck.bottleneck(readings.states[(pooling, n)], n, concepts.groups).embeddings
        for n in layers
    ]
    rows = [
        _probe_rows(readings.states[(pooling, n)], task_states[n], task_answers, concepts)
        for n in layers
    ]
    tensors = {
        LAYER_EMBEDDINGS_TENSOR: torch.stack(embeddings),
        LAYER_STATES_TENSOR: torch.stack(rows).to(torch.float16),
    }
    return tensors, {"layers": layers, "pooling": pooling}


def default_layers(view: ModelView, count: int = 5) -> list[int]:
    """Candidate layers spread over the top two thirds of the model, the last included.

    Which layer holds a concept best differs between models (a decoder's last layer is shaped
    by next-token prediction); the extraction probes choose among these.
    """
    top, low = view.num_layers, max(1, view.num_layers // 3)
    return sorted({round(low + (top - low) * i / (count - 1)) for i in range(count)})


def _attention_layers(
    view: ModelView, spec: ConceptSpec, settings: ExtractionSettings, notes: list[str]
) -> list[int]:
    """The attention layers to read, or none (with a note) when the model hides its weights."""
    if not settings.attention:
        return []
    wanted = spec.attention_layers or list(range(1, view.num_layers + 1))
    layers = view.check_layers(wanted, "attention")
    probe = (spec.all_probes() or list(spec.texts))[:1]
    try:
        view.run(probe, attention_layers=layers[:1], truncate=True)
    except NoAttentionError as exc:
        notes.append(f"no attention patterns: {exc.message}")
        return []
    return layers


def _poolings(view: ModelView, settings: ExtractionSettings) -> list[Pooling]:
    """Candidate poolings: a decoder's last token sees the whole probe, its mean may be steadier."""
    if settings.pooling != "auto":
        return [settings.pooling]
    return ["mean"] if view.kind == "encoder" else ["last", "mean"]


def _readout_kinds(settings: ExtractionSettings) -> tuple[Kind, ...]:
    """The readouts to choose among: both for bottleneck probing (unless one is asked for or no
    probe states are kept to fit on); the other methods' own embeddings are their centroids."""
    if settings.method != "bottleneck" or not settings.probe_states:
        return ("centroid",)
    return KINDS if settings.readout == "auto" else (settings.readout,)


class Stack(NamedTuple):
    """A linear readout over several layers of one pooling, side by side, and its score."""

    pooling: Pooling
    layers: tuple[int, ...]
    score: ReadingScore


def _choose_reading(
    readings: ProbeReadings,
    train: list[Group],
    settings: ExtractionSettings,
    kinds: tuple[Kind, ...],
) -> tuple[Reading, dict[Reading, ReadingScore], Stack | None]:
    """The reading of parts C and P (`_best_reading`), every candidate's cross-validated
    scores, and a readout over several layers where one beats them all (`_choose_stack`).
    Parts P and L share one pooling: with a stack, the best reading of its pooling."""
    (pooling, layer), scores = _best_reading(readings, train, kinds)
    stack = _choose_stack(readings, train, settings, scores)
    if stack is not None and stack.pooling != pooling:
        pooling, layer = min(
            (key for key in scores if key[0] == stack.pooling),
            key=lambda key: scores[key].chosen.loss,
        )
    return (pooling, layer), scores, stack


def _kept_layers(
    readings: ProbeReadings, pooling: Pooling, settings: ExtractionSettings, stack: Stack | None
) -> list[int]:
    """The layers part L keeps, every candidate of the chosen pooling: when asked for, or when
    the readout reads several of them; none without probe states."""
    if not (settings.keep_layers or stack is not None) or not settings.probe_states:
        return []
    return sorted(n for p, n in readings.states if p == pooling)


def _best_reading(
    readings: ProbeReadings, train: list[Group], kinds: tuple[Kind, ...]
) -> tuple[Reading, dict[Reading, ReadingScore]]:
    """The candidate (pooling, layer) whose readout classifies left-out extraction probes best
    (the lowest calibrated loss, `m2kt.concepts.readout.ReadingScore`), with every candidate's
    cross-validated scores.

    The left-out loss tracks what held-out probes see: the leave-one-out consistency of
    centroids chosen first could prefer a layer where one vector a concept looks tidy but a
    linear probe finds more, and left-out accuracy, chosen next, moves in steps of a probe and
    ties at several layers. Verification probes take no part, so the worth measured on them
    stays an honest estimate.
    """
    candidates = list(readings.states)
    if len(train) < 2 or not any(len(g.probes) > 1 for g in train):
        return candidates[0], {}
    index, labels = labelled_probes(train)
    scores = {
        key: score_reading(states[index], labels, len(train), kinds)
        for key, states in readings.states.items()
    }
    best = min(candidates, key=lambda key: (scores[key].chosen.loss, candidates.index(key)))
    return best, scores


def _choose_stack(
    readings: ProbeReadings,
    train: list[Group],
    settings: ExtractionSettings,
    scores: dict[Reading, ReadingScore],
) -> Stack | None:
    """A linear readout over every candidate layer of one pooling, side by side, where it
    classifies left-out extraction probes strictly better than any one reading: a concept set
    no single layer holds well (l1's arithmetic operations) may still be told apart by several
    together. Judged like one reading (its calibrated left-out loss) and taken only where
    strictly lower than every one reading's. Only with `readout="auto"` and 2+ layers."""
    if settings.readout != "auto" or not scores:
        return None
    if settings.method != "bottleneck" or not settings.probe_states:
        return None
    index, labels = labelled_probes(train)
    best: Stack | None = None
    for pooling in dict.fromkeys(p for p, _ in readings.states):
        layers = tuple(sorted(n for p, n in readings.states if p == pooling))
        if len(layers) < 2:
            continue
        side = readings.side_by_side(pooling, layers)[index]
        score = score_reading(side, labels, len(train), ("linear",))
        if best is None or score.linear.loss < best.score.linear.loss:
            best = Stack(pooling, layers, score)
    floor = min(s.chosen.loss for s in scores.values())
    return best if best is not None and best.score.linear.loss < floor else None


def _fit_readout(
    states: torch.Tensor,
    split: Split,
    score: ReadingScore | None,
    kinds: tuple[Kind, ...],
    layers: tuple[int, ...] = (),
) -> Readout:
    """The chosen reading's readout, fitted on every extraction probe, its logits scaled by the
    calibration found in cross-validation; a mixed one keeps each concept's form."""
    kind = score.kind if score is not None else kinds[0]
    if kind == "centroid":
        return Readout("centroid")
    index, labels = labelled_probes(split.train)
    temperature = score.linear.temperature if score is not None else 1.0
    linear = fit_readout("linear", states[index], labels, len(split.train), temperature)
    if kind == "linear" or score is None:
        return replace(linear, layers=layers)
    return replace(
        linear, kind="mixed", forms=score.forms, centroid_scale=score.centroid.temperature
    )


def _extract_concepts(
    view: ModelView,
    states: torch.Tensor,
    reading: Reading,
    split: Split,
    settings: ExtractionSettings,
    texts: list[str],
    progress: StageProgress,
    evidence: dict[str, Any],
    notes: list[str],
) -> tuple[ConceptSet, list[int] | None]:
    """The packet's concepts, made from extraction probes only, and cluster labels.

    Clustering discovers its own groups among every text but the verification probes; each
    cluster's label is the spec concept most of its probes were listed under. Attribution adds
    its baseline and per-concept completeness gaps to `evidence` (and a note where loose).
    """
    pooling, layer = reading
    if settings.method in ("bottleneck", "head"):  # a head's rows replace the means later
        return bottleneck.bottleneck(states, layer, split.train), None
    if settings.method == "attribution":
        targets = bottleneck.bottleneck(states, layer, split.train).embeddings
        probes = [i for g in split.train for i in g.probes]
        labels = [k for k, g in enumerate(split.train) for _ in g.probes]
        found = attribution.attribute(
            view,
            [texts[i] for i in probes],
            labels,
            targets,
            layer,
            steps=settings.ig_steps,
            pooling=pooling,
            truncate=settings.truncate,
            progress=lambda d, t: progress("attribution", d, t),
        )
        position = {i: n for n, i in enumerate(probes)}
        local = [Group(g.name, g.id, [position[i] for i in g.probes]) for g in split.train]
        found_concepts = attribution.attributed_concepts(found, local, layer)
        gaps = attribution.completeness_by_concept(found, local)
        evidence["attribution_baseline"] = found.baseline
        evidence["attribution_completeness"] = gaps
        evidence["attribution_tolerance"] = attribution.TOLERANCE
        loose = [
            g.name for g, gap in zip(split.train, gaps, strict=True) if gap > attribution.TOLERANCE
        ]
        if loose:
            notes.append(
                f"attribution: {len(loose)} concepts' attributions miss their score change by "
                f"over {attribution.TOLERANCE:.0%} (e.g. {loose[0]!r}); raise --ig-steps"
            )
        return replace(found_concepts, groups=split.train), None
    held = set(split.heldout)
    kept = [i for i in range(len(texts)) if i not in held]
    count = settings.clusters or len(split.train) or max(2, math.isqrt(len(kept)))
    concepts = clustering.cluster(states, texts, kept, count, layer, settings.seed)
    if not split.heldout:
        return concepts, None
    label_of = {i: k for k, g in enumerate(split.train) for i in g.probes}
    majority = []
    for group in concepts.groups:
        votes = [label_of[i] for i in group.probes if i in label_of]
        majority.append(max(set(votes), key=lambda k: (votes.count(k), -k)) if votes else -1)
    return concepts, majority


def _concept_entries(
    concepts: ConceptSet, texts: list[str], split: Split, method: Method, tasks: list[list[str]]
) -> list[dict[str, Any]]:
    """Part C. A named concept lists its verification probes; a discovered cluster has none.
    `tasks[k]`: the task inputs the teacher answered concept k for, after its probes."""
    held: dict[int, list[str]] = {}
    for i, k in zip(split.heldout, split.heldout_labels, strict=True):
        held.setdefault(k, []).append(texts[i])
    entries = []
    for k, group in enumerate(concepts.groups):
        probes = [texts[i] for i in group.probes]
        entry: dict[str, Any] = {
            "id": group.id,
            "name": group.name,
            "probes": probes + tasks[k],
            "verification": []
            if method == "clustering"
            else [t for t in held.get(k, []) if t not in probes],
            "layer": concepts.layer,
            "method": concepts.method,
            "confidence": round(float(concepts.confidence[k]), 6),
        }
        if tasks[k]:
            entry["task_inputs"] = len(tasks[k])
        if concepts.tokens is not None:
            entry["tokens"] = [{"token": t[:256], "score": s} for t, s in concepts.tokens[k]]
        if concepts.units is not None:
            entry["units"] = [{"unit": u, "score": s} for u, s in concepts.units[k]]
        entries.append(entry)
    return entries


def _settings_record(
    view: ModelView,
    spec: ConceptSpec,
    settings: ExtractionSettings,
    candidates: list[int],
    pooling: Pooling,
    concepts: ConceptSet,
    readings: ProbeReadings,
    notes: list[str],
) -> dict[str, Any]:
    spec_json = json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    record: dict[str, Any] = {
        "method": settings.method,
        "layer": concepts.layer,
        "candidate_layers": candidates,
        "pooling": pooling,
        "candidate_poolings": sorted({p for p, _ in readings.states}),
        "trace_pooling": view.pooling,
        "attention_layers": readings.attention_layers,
        "attention_length": settings.attention_length,
        "seed": settings.seed,
        "truncate": settings.truncate,
        "spec": spec.name,
        "spec_sha256": hashlib.sha256(spec_json).hexdigest(),
        "context": view.context,
    }
    if settings.method == "attribution":
        record["ig_steps"] = settings.ig_steps
    if settings.method == "clustering":
        record["clusters"] = len(concepts.groups)
    if notes:
        record["notes"] = notes
    return record


def _reading_record(
    scores: dict[Reading, ReadingScore], readout: Readout, stack: Stack | None
) -> dict[str, Any]:
    """Every candidate reading's cross-validated score (a readout over several layers written
    `pooling@a+b+c`), so `m2kt inspect` can show runners-up."""
    record: dict[str, Any] = {"readout": readout.kind}
    if readout.layers:
        record["readout_layers"] = list(readout.layers)
    if readout.kind == "mixed":
        record["linear_concepts"] = sum(form == "linear" for form in readout.forms)
    if not scores:
        return record
    names = [f"{p}@{layer}" for p, layer in scores]
    fits = [score.chosen for score in scores.values()]
    if stack is not None:
        names.append(f"{stack.pooling}@{'+'.join(map(str, stack.layers))}")
        fits.append(stack.score.linear)
    return record | {
        "candidate_readings": names,
        "reading_scores": [round(fit.accuracy, 6) for fit in fits],
        "reading_losses": [round(fit.loss, 6) for fit in fits],
    }
