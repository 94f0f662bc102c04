"""Ingest a knowledge packet into a frozen student: the paper's Algorithm 2, end to end.

checkpoint → read the packet's probes and anchors through the student → judge the map on
held-out anchors → fit the adapter on the composite loss → verify (the anchor alignment
against its floor, transfer on the packet's verification probes with a statistical gate,
held-in on a probe set no packet carries, safety; with `verify_on`, transfer and zero-shot
again on the user's own labelled sentences) → accept, or roll back bit-exactly.

Two adapters (`IngestSettings.adapter`): `memory`, the concept memory on the student's pooled
state, trained on cached states (no backpropagation through the student); `blocks`, the same
memory plus LoRA inside the student's blocks (`m2kt.ingest.blocks`), trained through the
student with the packet's layer traces as hints for its layers. With `blocks` the student's
modules change during training (wrapped by peft, the base weights untouched); verification
reads the checks' texts again through the adapted student.

The student's base weights are never trained, so the checkpoint is a hash plus an in-memory
copy of its state: after training the hash of the base weights is taken again, and on any
failure the in-block adapter is taken out, the copy loaded back and the hash of the whole
state re-checked against the one taken before. On success an in-block adapter stays in the
student (its forward is the adapted one). Files on disk are only ever read; the adapter
directory is written in one atomic swap, and only when verification passes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from m2kt import __version__, distributed
from m2kt.adapter_files import save_adapter_dir
from m2kt.align.quality import anchor_alignment
from m2kt.concepts.probing import read_probes
from m2kt.concepts.spec import load_spec
from m2kt.errors import UsageError
from m2kt.ingest.blocks import (
    BlockAdapter,
    BlockSettings,
    base_weight_sha256,
    has_block_adapter,
    target_modules,
)
from m2kt.ingest.fit import FitResult, FitSettings, fit_memory
from m2kt.ingest.fit_blocks import BlocksFit, fit_in_blocks
from m2kt.ingest.hints import PairingKind
from m2kt.ingest.loss import LossWeights, Targets
from m2kt.ingest.memory import ConceptMemory
from m2kt.ingest.report import DroppedConcept, IngestionReport
from m2kt.ingest.student import StudentReading, read_student
from m2kt.ingest.student_blocks import block_read, layer_hints
from m2kt.ingest.user_sentences import UserSentences, read_user_sentences
from m2kt.ingest.verify import (
    Check,
    Gate,
    Margins,
    Verdict,
    alignment_check,
    held_in_check,
    safety_check,
    screen_check,
    transfer_check,
    user_checks,
    zero_shot_check,
)
from m2kt.models.fingerprint import weight_sha256
from m2kt.models.view import ModelView
from m2kt.packet import Packet, concept_probes
from m2kt.progress import Progress, StageProgress, quiet
from m2kt.report.records import INGESTION_FILE as REPORT_FILE
from m2kt.safety.descriptions import default_unsafe_descriptions, read_descriptions
from m2kt.safety.sides import screen_for_ingestion

HELD_IN = Path(__file__).with_name("held_in.yaml")  # the shipped held-in set (speech acts)
MEMORY_PREFIX = "m2kt.memory."  # a block adapter's file: the memory's tensors beside peft's
AdapterKind = Literal["memory", "blocks"]


@dataclass(frozen=True)
class IngestSettings:
    weights: LossWeights = field(default_factory=LossWeights)
    fit: FitSettings = field(default_factory=FitSettings)
    margins: Margins = field(default_factory=Margins)
    gate: Gate = field(default_factory=Gate)
    layer: int = -1
    alignment_floor: float = 0.2  # held-out anchor R² below which the map is refused
    held_in: str | None = None  # a spec of the student's own skill; default: HELD_IN
    unsafe: str | None = None  # a file of unsafe-concept descriptions; default: shipped list
    screen: bool = (
        True  # the auditor drops concepts it flags, and the screen checks the slots after
    )
    batch_size: int = 16
    truncate: bool = False
    adapter: AdapterKind = "memory"  # or "blocks": LoRA inside the student's blocks too
    blocks: BlockSettings = field(default_factory=BlockSettings)
    pairing: PairingKind = "cka"  # how the layer hints pair student and teacher layers
    # a CSV of the user's own labelled sentences (`text,label`, labels the concept names),
    # written apart from the packet: verification judges the packet on them too, never fits them
    verify_on: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.adapter not in ("memory", "blocks"):
            raise UsageError(f"unknown adapter {self.adapter!r}", "choose memory or blocks")
        if self.pairing not in ("cka", "last"):
            raise UsageError(f"unknown layer pairing {self.pairing!r}", "choose cka or last")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Ingestion:
    """The outcome: an accepted memory with its report, or a rollback with its reasons."""

    accepted: bool
    memory: ConceptMemory | None
    verdict: Verdict
    report: IngestionReport
    blocks: BlockAdapter | None = None  # the in-block adapter, in the student, when accepted

    def save(self, out_dir: str | Path) -> Path:
        """Write the adapter directory atomically (config, safetensors weights, report).

        A block adapter's directory is peft's: its `adapter_config.json` is the LoRA config
        (with m2kt's own under the key `m2kt`, which peft ignores) and its safetensors file
        holds the LoRA matrices under peft's names beside the memory's (`m2kt.memory.*`)."""
        import json

        if not self.accepted or self.memory is None:
            raise UsageError("a rolled-back ingestion has no adapter to save")
        out = Path(out_dir)
        own = self.memory.config.to_dict() | {
            "student": self.report["student"],
            "adapter": "blocks" if self.blocks else "memory",
        }
        tensors = self.memory.tensors()
        config: dict[str, Any] = own
        if self.blocks is not None:
            config = self.blocks.config_dict() | {"m2kt": own}
            tensors = self.blocks.tensors() | {MEMORY_PREFIX + k: v for k, v in tensors.items()}
        report = json.dumps(self.report, indent=2, sort_keys=True).encode()
        save_adapter_dir(out, config, tensors, {REPORT_FILE: report})
        return out


def ingest(
    view: ModelView,
    packet: Packet,
    settings: IngestSettings | None = None,
    progress: StageProgress | None = None,
    auditor: ModelView | None = None,
) -> Ingestion:
    """Ingest `packet` into the frozen student `view`; `auditor`, another model, judges what
    the packet's probes say in its own space, while what a concept's vector hides is still
    judged in the student's, where it lands (`m2kt ingest --auditor`)."""
    settings = settings or IngestSettings()
    progress = progress or quiet
    started = time.perf_counter()
    model = view.model
    if has_block_adapter(model):
        raise UsageError(
            f"{view.name} already carries an adapter inside its blocks",
            "ingest into a freshly loaded student",
        )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    user = user_sentences(settings.verify_on, packet)
    checkpoint = {k: v.detach().clone() for k, v in model.state_dict().items()}
    counted = view.reads.copy()
    hash_before = weight_sha256(model)

    progress("safety screen", 0, 1)
    screen, audit, working = screen_for_ingestion(
        view,
        packet,
        settings.layer,
        settings.unsafe,
        settings.batch_size,
        settings.screen,
        auditor,
    )
    progress("safety screen", 1, 1)
    # Texts the student read for the screen: its training texts, and the packet's probes.
    screened = audit.inputs_read if audit else 0
    if audit is None and screen is not None:
        screened = int(screen.calibration["texts_read"])
    audited = audit.student_scores() if audit else None
    dropped: list[DroppedConcept] = (
        [{"id": f.id, "name": f.name, "reason": f.reasons[0]} for f in audit.flagged]
        if audit
        else []
    )
    held_in = load_spec(settings.held_in or HELD_IN)
    held_texts = held_in.all_probes()
    _check_independent(
        held_texts,
        packet,
        f"the held-in set {settings.held_in or 'shipped with m2kt'}",
        "pass --held-in with a spec whose probes the packet does not carry",
    )
    reading = read_student(
        view,
        working,
        layer=settings.layer,
        seed=settings.fit.seed,
        batch_size=settings.batch_size,
        truncate=settings.truncate,
        progress=lambda d, t: progress("read packet probes", d, t),
    )
    held_labels = torch.tensor(
        [k for k, c in enumerate(held_in.concepts) for _ in c.probes], dtype=torch.long
    )
    unsafe_texts = (
        read_descriptions(settings.unsafe) if settings.unsafe else default_unsafe_descriptions()
    )
    # the user's sentences of concepts the screen kept; read here, used only by verification
    user_texts, user_labels = user.kept(reading.concepts) if user else ([], torch.zeros(0))
    if user and user.repeated:
        reading.notes.append(
            f"{user.repeated} rows of your file repeat an earlier sentence: each sentence was "
            "judged once"
        )
    unchecked = [c for c in reading.concepts if c not in user.concepts] if user else []
    if unchecked:  # the verdict covers the concepts your sentences name, and only those
        reading.notes.append(
            f"your sentences name no {', '.join(repr(c) for c in unchecked[:8])}"
            + (f" (and {len(unchecked) - 8} more)" if len(unchecked) > 8 else "")
            + ": the verification on them says nothing of these concepts"
        )
    if user and len(user_texts) < len(user.texts):
        reading.notes.append(
            f"{len(user.texts) - len(user_texts)} of your {len(user.texts)} sentences are of "
            "concepts the safety auditor dropped: they were left out of the checks"
        )
    extra = _read_states(
        view,
        held_texts + unsafe_texts + user_texts,
        reading,
        settings.batch_size,
        lambda d, t: progress("read held-in, safety and your sentences", d, t),
    )
    h, u = len(held_texts), len(unsafe_texts)
    held_states, unsafe_states, user_states = extra[:h], extra[h : h + u], extra[h + u :]
    targets = reading.targets
    targets = type(targets)(**(targets.__dict__ | {"unsafe": unsafe_states}))

    fit = settings.fit
    if reading.alignment is not None:  # the ridge the held-out anchors preferred
        ridge = reading.alignment.ridge
        if fit.slots == "teacher" and targets.anchor_student is not None:
            assert targets.anchor_teacher is not None  # ψ runs the other way: its own choice
            ridge = anchor_alignment(
                targets.anchor_student, targets.anchor_teacher, seed=fit.seed
            ).ridge
        fit = replace(fit, ridge=ridge)
    result: FitResult | BlocksFit
    adapted: dict[str, torch.Tensor] = {}  # the checks' texts read through the adapted student
    hint_pairs: list[list[int]] = []
    if settings.adapter == "blocks":
        # the screened packet: its traces teach, its probes line up with `reading`'s labels
        result, hint_pairs = _fit_in_blocks(
            view, working, reading, targets, settings, fit, progress
        )
        verification = list(concept_probes(working).verification_texts)
        texts = verification + held_texts + unsafe_texts + user_texts
        again = _read_states(
            view,
            texts,
            reading,
            settings.batch_size,
            lambda d, t: progress("read the checks through the adapted student", d, t),
        )
        v = len(reading.heldout_labels)
        adapted = {
            "heldout": again[:v],
            "held": again[v : v + h],
            "unsafe": again[v + h : v + h + u],
            "user": again[v + h + u :],
        }
    else:
        result = fit_memory(reading.concepts, targets, settings.weights, fit, progress=progress)
    memory = result.memory
    m = settings.margins
    gate = settings.gate
    yours = (
        user_checks(
            memory,
            user_states,
            user_labels,
            targets.student_anchors,
            reading.zero_shot,
            user.source,
            gate,
            adapted.get("user"),
        )
        if user and user_texts
        else []
    )
    reading.notes.extend(  # lower on the user's sentences, not significantly: said, not silent
        f"on your sentences the packet scores {c.after:.1%} against {c.before:.1%} in the "
        f"{c.name.removeprefix('yours: ')} check: lower, though not significantly at "
        f"n={len(user_labels)}"
        for c in yours
        if c.passed and c.after < c.before
    )
    # a set of the user's large enough to verify stands in for too few verification probes
    verified_by_user = bool(yours) and "too few" not in _decision(yours[0])
    own_gate = replace(gate, accept_unverified=True) if verified_by_user else gate
    verdict = Verdict(
        [
            transfer_check(
                memory,
                reading.heldout_states,
                reading.heldout_labels,
                targets.student_anchors,
                m.transfer,
                own_gate,
                adapted=adapted.get("heldout"),
            ),
            held_in_check(memory, held_states, held_labels, m.held_in, adapted.get("held")),
            safety_check(
                memory,
                held_states,
                unsafe_states,
                m.safety,
                (adapted["held"], adapted["unsafe"]) if adapted else None,
                slots_screened=screen is not None,
            ),
            zero_shot_check(
                memory,
                reading.heldout_states,
                reading.heldout_labels,
                reading.zero_shot,
                m.transfer,
                own_gate,
                adapted=adapted.get("heldout"),
            ),
        ]
        + yours
        + (
            [screen_check(memory, held_states, screen, m.safety, audited, adapted.get("held"))]
            if screen
            else []
        )
        + (
            [alignment_check(reading.alignment, settings.alignment_floor)]
            if reading.alignment
            else []
        )
    )
    if verified_by_user:  # the packet's own probes were too few: say what verified it instead
        verdict = Verdict([_verified_instead(c, len(user_labels)) for c in verdict.checks])
    hash_after = base_weight_sha256(model)
    if hash_after != hash_before:  # cannot happen with frozen weights; checked, not assumed
        verdict.checks.append(
            Check("weights", 0.0, 1.0, False, "the student's weights changed during ingestion")
        )
    accepted = verdict.passed
    blocks = result.adapter if isinstance(result, BlocksFit) else None
    if not accepted:
        if blocks is not None:
            blocks.remove()
        model.load_state_dict(checkpoint)
        hash_after = weight_sha256(model)
        if hash_after != hash_before:
            raise RuntimeError("rollback failed to restore the student's weights")
    transfer = verdict.checks[0].statistics or {}
    read = _summed_reads(view.reads_since(counted))
    report: IngestionReport = {
        "m2kt_version": __version__,
        "accepted": accepted,
        # verified: the gate could judge the transfer; unverifiable: too few probes, refused;
        # unverified: too few probes, accepted because the caller asked for it
        # (verified: the packet's probes or, with verify_on, the user's sentences could judge)
        "verification": "verified"
        if verified_by_user
        else {
            "unverified": "unverified",
            "refused: too few probes": "unverifiable",
        }.get(transfer.get("decision", ""), "verified"),
        "verified_on": _verified_on(user, yours, len(user_texts), unchecked),
        "packet": {
            "digest": packet.digest,
            "signer": packet.signer.fingerprint if packet.signer else None,
            "parents": list(packet.manifest.provenance.parents),
            "teacher": [r.model_dump(mode="json") for r in packet.manifest.provenance.models],
        },
        "student": {
            "id": view.name,
            "architecture": view.architecture,
            "weight_sha256": hash_before,
            "weight_sha256_after": hash_after,
            "layer": reading.layer,
            "pooling": reading.pooling,
            "name_prior": reading.name_prior.as_dict(),
        },
        "inputs": {
            "teacher": _teacher_inputs(packet),
            "student": sum(read.values()),
            "student_task": read["task"],
            "student_anchors": read["anchor"],
            "student_probes": read["probe"],
            "student_training": reading.inputs_read,
            "student_safety_screen": screened,
            "auditor_safety_screen": audit.auditor_inputs_read if audit else 0,
        },
        "alignment": reading.alignment.as_dict() if reading.alignment else None,
        "adapter": settings.adapter,
        "layer_hints": hint_pairs,  # (student layer, teacher layer) pairs, blocks only
        "trainable_parameters": result.trainable_parameters,
        "selection": result.selection,  # the steps chosen on the held-out quarter
        "settings": settings.as_dict() | {"fit": fit.as_dict()},
        "checks": [c.as_dict() for c in verdict.checks],
        "final_loss": {t: v[-1] for t, v in result.history.items()},
        "loss_history": result.history,
        "safety_screen": audit.as_dict() if audit else None,
        # what the adapter cannot answer: `m2kt evaluate` names these wherever it is used
        "dropped_concepts": dropped,
        "notes": reading.notes
        + [f"the safety auditor dropped {d['name']!r}: {d['reason']}" for d in dropped],
        "seconds": time.perf_counter() - started,
    }
    return Ingestion(
        accepted, memory if accepted else None, verdict, report, blocks if accepted else None
    )


def _read_states(
    view: ModelView,
    texts: list[str],
    reading: StudentReading,
    batch_size: int,
    progress: Progress,
) -> torch.Tensor:
    """The student's states [N, d_S] of `texts` at the reading's layer and pooling."""
    found = read_probes(
        view,
        texts,
        [reading.layer],
        poolings=[reading.pooling],
        batch_size=batch_size,
        truncate=True,
        progress=progress,
    )
    return found.states[(reading.pooling, reading.layer)].float()


def _fit_in_blocks(
    view: ModelView,
    packet: Packet,
    reading: StudentReading,
    targets: Targets,
    settings: IngestSettings,
    fit: FitSettings,
    progress: StageProgress,
) -> tuple[BlocksFit, list[list[int]]]:
    """The memory and LoRA in the student's blocks, trained through the student on the
    packet's training texts, with the packet's layer traces as hints when it has them."""
    texts = reading.pair_texts
    hints, pairs, hint_layers = (
        layer_hints(
            view,
            packet,
            texts,
            reading.pooling,
            settings.pairing,
            batch_size=settings.batch_size,
            truncate=settings.truncate,
        )
        if settings.weights.reason
        else (None, (), [])
    )
    read = block_read(
        view,
        texts,
        reading.layer,
        reading.pooling,
        hint_layers,
        batch_size=settings.batch_size,
        truncate=settings.truncate,
    )
    targets_names = target_modules(view.model, view.layers)
    result = fit_in_blocks(
        reading.concepts,
        targets,
        read,
        lambda: BlockAdapter(
            view.model, targets_names, settings.blocks, seed=fit.seed, base_name=view.name
        ),
        settings.weights,
        fit,
        settings.blocks,
        hints=hints,
        progress=progress,
    )
    return result, [list(p) for p in pairs]


def user_sentences(path: str | None, packet: Packet) -> UserSentences | None:
    """The user's sentences, read and matched to the packet's concepts before any model reads
    anything; refused if they share a text with the packet (they would not be held out)."""
    if path is None or not packet.manifest.concepts:  # no concepts: ingestion refuses it itself
        return None
    names = [c.name for c in packet.manifest.concepts]
    found = read_user_sentences(path, names)
    _check_independent(found.texts, packet, f"--verify-on {path}", "drop the shared rows")
    return found


def _verified_on(
    user: UserSentences | None, checks: list[Check], n: int, unchecked: list[str]
) -> dict[str, Any] | None:
    """The report's record of the user's sentences: the file's hash, how many were judged
    (rows of concepts the screen dropped are left out), the kept concepts they never name
    and the three accuracies."""
    if user is None:
        return None
    record = user.report(n) | {"unchecked_concepts": unchecked}
    if not checks:
        return record
    transfer, zero_shot = checks
    return record | {
        "own_anchors": transfer.before,
        "zero_shot": zero_shot.before,
        "packet": transfer.after,
        "decision": [_decision(transfer), _decision(zero_shot)],
        "p_value": [(c.statistics or {}).get("p_value") for c in (transfer, zero_shot)],
    }


def _verified_instead(check: Check, n: int) -> Check:
    """A check of the packet's own probes, too few to judge, accepted because the user's
    sentences could judge: its reason says so instead of suggesting --accept-unverified."""
    if _decision(check) != "unverified":
        return check
    own = (check.statistics or {}).get("n", 0)
    return replace(
        check,
        reason=f"only {own} held-out verification probes, too few: verified on your {n} "
        "sentences instead",
    )


def _decision(check: Check) -> str:
    return str((check.statistics or {}).get("decision", ""))


def _teacher_inputs(packet: Packet) -> int:
    """Texts the teacher read to make the packet, as its provenance records them."""
    provenance = packet.manifest.provenance
    recorded = provenance.measurements.get("teacher_forward_inputs")
    if isinstance(recorded, int | float):
        return int(recorded)
    return int(sum(provenance.inputs_seen.values()))


def _check_independent(texts: list[str], packet: Packet, source: str, hint: str) -> None:
    """A set that judges the packet from outside (the held-in set, the user's sentences) may
    share no text with it: a packet's text there would not be held out."""
    m = packet.manifest
    carried = {t for c in m.concepts or [] for t in [*c.probes, *c.verification]}
    carried |= {t.probe for t in m.traces or []}
    shared = [t for t in texts if t in carried]
    if shared:
        raise UsageError(
            f"{source} shares {len(shared)} texts with the packet (first: "
            f"{shared[0][:60]!r}), so it is not held out from it",
            hint,
        )


def _summed_reads(reads: dict[str, int]) -> dict[str, int]:
    """Texts the student read by purpose, summed over the processes that shared the reading."""
    names = list(reads)
    total = distributed.all_sum(torch.tensor([float(reads[n]) for n in names], dtype=torch.float64))
    return {n: int(total[i]) for i, n in enumerate(names)}
