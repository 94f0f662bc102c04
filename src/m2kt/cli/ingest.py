"""Ingest a knowledge packet into a frozen student, verify it, and keep it or roll it back.

The student reads the packet's probes; a small Concept Alignment Layer maps the teacher's
concepts into the student's space and a concept memory with a low-rank residual is trained on
the composite loss (geometric, structural, reasoning, KL, safety). With --adapter blocks, LoRA
inside the student's blocks (attention and MLP projections, made by peft) is trained with it,
through the student, and the packet's layer traces teach the student's own layers; the
directory then also loads with `PeftModel.from_pretrained`. The student's own weights never
change. Verification compares held-out concept probes, the student's own held-in skill
and closeness to unsafe concepts before and after; if any check fails the student is restored
bit-exactly, nothing is written, and the command exits 1 with the reasons.

On success DIR holds adapter_config.json, adapter_model.safetensors and
ingestion_report.json (inputs each model read, time, parameters, checks, loss per term,
packet hash and provenance), written in one atomic swap: an interrupted run leaves the previous
DIR as it was. Runs unchanged under torchrun or accelerate launch: the processes share the probe
batches and the training probes, and process 0 writes DIR (docs/scale.md).

With --verify-on FILE.csv the user's own labelled sentences, written apart from the spec, are
checked too: if the packet is significantly worse on them than the student's own anchors or
its zero-shot reading of the concept names, it is rolled back; enough of them (20 at the
defaults) verify a packet whose own verification probes are too few. They are never trained on.

Examples:
  m2kt ingest --student e2 --packet topics.m2kt --key keys/m2kt.pub --out adapters/topics
  m2kt ingest --student e2 --packet topics.m2kt --key keys/m2kt.pub --out a --verify-on mine.csv
  m2kt ingest --student e2 --packet topics.m2kt --allow-unsigned --out a --no-term struct
  m2kt ingest --student e2 --packet arithmetic.m2kt --key keys/m2kt.pub --out a --adapter blocks
"""

from __future__ import annotations

import argparse

from m2kt.cli._common import (
    add_limit_arguments,
    add_trust_arguments,
    concept_spec,
    console,
    error_console,
    limits_from,
    model_reference,
    output_directory,
    shown,
)
from m2kt.cli._launch import add_device_argument, load_on, stage_progress

NAME = "ingest"
SUMMARY = "put a knowledge packet into a frozen student, verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from m2kt.ingest.loss import TERMS

    parser.add_argument(
        "--student", required=True, type=model_reference, metavar="MODEL", help="the model to teach"
    )
    parser.add_argument("--packet", required=True, metavar="PACKET", help="knowledge packet")
    parser.add_argument(
        "--out", required=True, type=output_directory, metavar="DIR", help="adapter directory"
    )
    add_trust_arguments(parser)
    add_limit_arguments(parser)
    parser.add_argument(
        "--cal",
        choices=["linear", "low_rank", "mlp"],
        default="linear",
        help="Concept Alignment Layer (default linear)",
    )
    parser.add_argument("--cal-rank", type=int, metavar="R", help="rank of a low_rank layer")
    parser.add_argument(
        "--slots",
        choices=["aligned", "teacher"],
        default="aligned",
        help="aligned: the teacher's concepts mapped into the student's space (default); "
        "teacher: the student's state mapped into the teacher's space and scored by its "
        "concepts, as its head would (docs/ingest.md)",
    )
    parser.add_argument(
        "--pair-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="weight of a probe or task-input pair against an anchor pair in the closed form",
    )
    parser.add_argument("--residual-rank", type=int, default=8, metavar="R")
    parser.add_argument(
        "--adapter",
        choices=["memory", "blocks"],
        default="memory",
        help="memory: a concept memory on the frozen student's state (default, cheaper: no "
        "backpropagation through the student); blocks: LoRA inside its blocks too",
    )
    parser.add_argument(
        "--block-rank", type=int, default=8, metavar="R", help="LoRA rank (--adapter blocks)"
    )
    parser.add_argument(
        "--block-lr", type=float, default=3e-3, help="LoRA learning rate (--adapter blocks)"
    )
    parser.add_argument(
        "--pairing",
        choices=["cka", "last"],
        default="cka",
        help="which student layer learns from which teacher layer trace (--adapter blocks): "
        "chosen by linear CKA on the packet's probes, or the last layers only",
    )
    for term in TERMS:
        parser.add_argument(
            f"--{term}", type=float, default=1.0, metavar="W", help=f"weight of L_{term}"
        )
    parser.add_argument(
        "--no-term", action="append", default=[], choices=TERMS, help="switch a term off"
    )
    parser.add_argument("--steps", type=int, default=200, metavar="N")
    parser.add_argument(
        "--no-step-selection",
        action="store_true",
        help="train exactly --steps steps instead of choosing 0…N on a quarter of the "
        "packet's extraction probes",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layer", type=int, default=-1, metavar="N", help="student layer")
    parser.add_argument(
        "--held-in",
        type=concept_spec,
        metavar="SPEC",
        help="spec of the student's own skill, sharing no text with the packet "
        "(default: the shipped speech-acts set)",
    )
    parser.add_argument(
        "--unsafe", metavar="FILE", help="unsafe-concept descriptions (default: the shipped list)"
    )
    parser.add_argument(
        "--no-screen",
        action="store_true",
        help="skip the safety screen: no concept is audited or dropped, and the concept slots are "
        "not screened after training (the safety margin check still runs)",
    )
    parser.add_argument(
        "--auditor",
        type=model_reference,
        metavar="MODEL",
        help="judge what the packet's probes say in this model's space (an embedded id, a "
        "directory or a .gguf), a judge that may tell harm from its near-misses better than a "
        "small student; what a concept's vector hides is still judged in the student's space. "
        "Second frozen test set, e1 -> e2 judged by l1: 64.9%% of injected harms detected at 1%% "
        "false alarms against 49.5%% without, 0.9%% of near-miss benign audits flagged against "
        "9.9%% (docs/security.md). Not loaded with --no-screen",
    )
    parser.add_argument("--held-in-margin", type=float, default=0.05, metavar="M")
    parser.add_argument("--transfer-margin", type=float, default=0.0, metavar="M")
    parser.add_argument("--safety-margin", type=float, default=0.05, metavar="M")
    parser.add_argument(
        "--level",
        type=float,
        default=0.05,
        metavar="P",
        help="one-sided significance at which a drop on the verification probes refuses",
    )
    parser.add_argument(
        "--alignment-floor",
        type=float,
        default=0.2,
        metavar="R2",
        help="refuse when the map fitted on the packet's anchors explains less than this share "
        "of held-out anchors (R²)",
    )
    parser.add_argument(
        "--verify-on",
        metavar="FILE.csv",
        help="your own labelled sentences (`text,label`, the labels the concept names), written "
        "apart from the spec: the packet is judged on them against the student's own anchors "
        "and its zero-shot reading of the names, and rolled back if significantly worse; "
        "never trained on",
    )
    parser.add_argument(
        "--accept-unverified",
        action="store_true",
        help="accept a packet with too few verification probes to detect a 25%% drop; "
        "the report says unverified",
    )
    parser.add_argument("--max-length", type=int, metavar="N", help="cap the context in tokens")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        metavar="N",
        help="probes per forward pass of the student; peak memory grows with it",
    )
    add_device_argument(parser)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from m2kt import distributed
    from m2kt.ingest.blocks import BlockSettings
    from m2kt.ingest.fit import FitSettings
    from m2kt.ingest.loss import TERMS, LossWeights
    from m2kt.ingest.pipeline import IngestSettings, ingest, user_sentences
    from m2kt.ingest.verify import Gate, Margins
    from m2kt.packet import load_packet

    weights = LossWeights(**{t: 0.0 if t in args.no_term else getattr(args, t) for t in TERMS})
    settings = IngestSettings(
        weights=weights,
        fit=FitSettings(
            slots=args.slots,
            pair_weight=args.pair_weight,
            cal=args.cal,
            cal_rank=args.cal_rank,
            residual_rank=args.residual_rank,
            steps=args.steps,
            select_steps=not args.no_step_selection,
            lr=args.lr,
            seed=args.seed,
        ),
        margins=Margins(args.transfer_margin, args.held_in_margin, args.safety_margin),
        gate=Gate(level=args.level, accept_unverified=args.accept_unverified),
        layer=args.layer,
        alignment_floor=args.alignment_floor,
        held_in=args.held_in,
        unsafe=args.unsafe,
        screen=not args.no_screen,
        batch_size=args.batch_size,
        adapter=args.adapter,
        blocks=BlockSettings(rank=args.block_rank, steps=args.steps, lr=args.block_lr),
        pairing=args.pairing,
        verify_on=args.verify_on,
    )
    packet = load_packet(
        args.packet,
        trusted_keys=args.key,
        allow_unsigned=args.allow_unsigned,
        limits=limits_from(args),
    )
    user_sentences(args.verify_on, packet)  # a bad file is refused before any model loads
    with distributed.joined(args.device) as world:
        view = load_on(world, args.student, args.max_length)
        judges = args.auditor and not args.no_screen  # an auditor judges only for the screen
        auditor = load_on(world, args.auditor, args.max_length) if judges else None
        with stage_progress(world) as progress:
            outcome = ingest(view, packet, settings, progress, auditor)
    if not world.is_writer:
        return 0 if outcome.accepted else 1
    for check in outcome.verdict.checks:
        mark = "ok  " if check.passed else "FAIL"
        console.print(f"{mark} {check.name:<9} {shown(check.reason)}")
    for note in outcome.report["notes"]:
        error_console.print(f"note: {shown(note)}")
    if not outcome.accepted:
        unchanged = outcome.report["student"]["weight_sha256"][:12]
        error_console.print(
            f"rolled back: the student is unchanged (weights {unchanged}) "
            f"and {args.out} was not written"
        )
        return 1
    out = outcome.save(args.out)
    r = outcome.report
    console.print(
        f"wrote {out} ({r['verification']}): {r['trainable_parameters']:,} trained "
        f"parameters ({r['adapter']} adapter), "
        f"{r['inputs']['student_training']} packet probes read by the student, "
        f"{r['seconds']:.1f} s"
    )
    yours = r["verified_on"]
    if yours and "packet" in yours:
        console.print(
            f"your sentences ({yours['n']} of {shown(yours['file'])}): "
            f"{yours['own_anchors']:.1%} with the student's own anchors, {yours['zero_shot']:.1%} "
            f"with its zero-shot reading of the names, {yours['packet']:.1%} with the packet"
        )
    if r["dropped_concepts"]:
        names = ", ".join(shown(d["name"]) for d in r["dropped_concepts"])
        error_console.print(f"note: the adapter cannot answer the dropped concepts: {names}")
    if r["verification"] == "unverified":  # accepted on request: say how to judge it instead
        probes = (r["checks"][0].get("statistics") or {}).get("n", 0)
        error_console.print(
            f"note: accepted unverified: the packet's {probes} verification probes cannot show "
            "a drop; judge the adapter on sentences of your own "
            f"written apart from the spec: m2kt evaluate --student {shown(args.student)} "
            f"--adapter {shown(str(out))} --task mine.csv --split all"
        )
    return 0
