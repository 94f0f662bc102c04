"""Read what a teacher knows into a knowledge packet, from a small concept spec.

The teacher reads each probe of the spec once; concepts come out as embeddings of its width,
with attention patterns (heads averaged, lengths resampled), reasoning traces, an abstraction
graph and provenance. A third of each concept's probes is held out to measure the packet's
worth, printed at the end and kept in the packet.

Methods:
  bottleneck    a concept is the mean pooled state of its probes at one layer (default),
                with a linear readout for the concepts one vector loses (on several
                layers side by side where that classifies left-out probes better)
  clustering    discover concepts with k-means over the probes' states (--clusters K)
  attribution   integrated gradients: probe states pooled where the concept is carried,
                with each concept's top tokens and hidden units

Teachers: embedded ids (e1, e2, e3, l1), a .gguf file, or a Hugging Face model directory.
Shipped specs: topics, arithmetic; or your own YAML/JSON file (see docs/concept-spec.md).
Runs unchanged under torchrun or accelerate launch: the processes share the probe batches and
process 0 writes the packet (docs/scale.md).

Examples:
  m2kt extract --teacher e1 --concepts topics --out topics.m2kt --sign keys/m2kt.key
  m2kt extract --teacher l1 --concepts arithmetic --out arithmetic.m2kt --method attribution
  m2kt extract --teacher e1 --concepts topics --out t.m2kt --layer 2 --layer 6 --keep-layers
  torchrun --standalone --nproc_per_node 2 --no-python m2kt extract --teacher e1 ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from m2kt.cli._common import (
    anchor_source,
    console,
    error_console,
    model_reference,
    output_file,
    private_key,
    shown,
)
from m2kt.cli._launch import add_device_argument, load_on, stage_progress
from m2kt.packet.summary import worth_lines
from m2kt.report.records import write_packet_record

NAME = "extract"
SUMMARY = "read a teacher's concepts into a knowledge packet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from m2kt.extract.pipeline import METHODS

    parser.add_argument(
        "--teacher", required=True, type=model_reference, metavar="MODEL", help="the model to read"
    )
    parser.add_argument(
        "--concepts", required=True, metavar="SPEC", help="concept spec file or shipped name"
    )
    parser.add_argument(
        "--out", required=True, type=output_file, metavar="PACKET", help="where to write it"
    )
    parser.add_argument(
        "--sign", type=private_key, metavar="KEY", help="sign the packet with this private key"
    )
    parser.add_argument("--method", choices=METHODS, default="bottleneck")
    parser.add_argument(
        "--layer",
        type=int,
        action="append",
        metavar="N",
        help="candidate hidden layer (repeatable; negative counts from the end; "
        "default: the spec's, else five over the top two thirds)",
    )
    parser.add_argument(
        "--readout",
        choices=["auto", "centroid", "linear"],
        default="auto",
        help="how the concepts classify a state (bottleneck): one centroid each, a linear "
        "readout (packet part D), or (auto) whichever classifies left-out extraction probes "
        "better, per concept, on one layer or on every --layer side by side",
    )
    parser.add_argument(
        "--keep-layers",
        action="store_true",
        help="keep the concepts and probe states at every candidate --layer (packet part L), "
        "not only at the chosen one",
    )
    parser.add_argument(
        "--clusters", type=int, metavar="K", help="clusters for --method clustering"
    )
    parser.add_argument("--ig-steps", type=int, default=16, metavar="N", help="attribution steps")
    parser.add_argument("--no-attention", action="store_true", help="skip attention patterns")
    parser.add_argument(
        "--anchors",
        type=anchor_source,
        default="words",
        metavar="SET",
        help="task-agnostic texts a student aligns on: the shipped set `words` or a text file, "
        "one text per line",
    )
    parser.add_argument(
        "--anchor-count", type=int, default=1024, metavar="N", help="seeded subset of the set"
    )
    parser.add_argument("--no-anchors", action="store_true", help="carry no anchor states")
    parser.add_argument(
        "--task-inputs",
        type=Path,
        metavar="FILE",
        help="unlabelled texts of your task (one a line, or a CSV's text column): the teacher "
        "answers each, and the packet carries them with its states for the student to refine on",
    )
    parser.add_argument(
        "--no-probe-states",
        action="store_true",
        help="leave out each probe's state (a student fits its alignment on them)",
    )
    parser.add_argument(
        "--no-safety-screen",
        action="store_true",
        help="skip the audit of the concepts and traces by meaning",
    )
    parser.add_argument(
        "--keep-flagged",
        action="store_true",
        help="keep concepts and traces the safety audit flags (by default they are dropped); "
        "the packet's provenance says they were flagged and kept",
    )
    parser.add_argument(
        "--auditor",
        metavar="MODEL",
        help="judge what the probes say in this model's space (an embedded id, a directory or "
        "a .gguf); the concept vectors still count through their drift from the teacher's "
        "reading (docs/security.md)",
    )
    parser.add_argument(
        "--attention-length", type=int, default=16, metavar="L", help="resampled map size"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        metavar="N",
        help="probes per forward pass; peak memory grows with it, not with the probe count",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--truncate", action="store_true", help="cut probes longer than the model's context"
    )
    parser.add_argument("--max-length", type=int, metavar="N", help="cap the context in tokens")
    parser.add_argument("--license", metavar="ID", help="licence of the knowledge, e.g. MIT")
    parser.add_argument(
        "--created-at",
        metavar="ISO",
        help="creation time to record (default: SOURCE_DATE_EPOCH, else now)",
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from m2kt import distributed
    from m2kt.concepts.spec import load_spec
    from m2kt.extract.pipeline import ExtractionSettings, extract_packet
    from m2kt.patch.unlabelled import read_texts
    from m2kt.safety import ExportScreen, finish_export

    spec = load_spec(args.concepts)
    tasks = read_texts(args.task_inputs) if args.task_inputs else []
    settings = ExtractionSettings(
        method=args.method,
        layers=args.layer,
        readout=args.readout,
        keep_layers=args.keep_layers,
        attention=not args.no_attention,
        probe_states=not args.no_probe_states,
        anchors=None if args.no_anchors else args.anchors,
        anchor_count=args.anchor_count,
        attention_length=args.attention_length,
        clusters=args.clusters,
        ig_steps=args.ig_steps,
        batch_size=args.batch_size,
        truncate=args.truncate,
        seed=args.seed,
        license=args.license,
        created_at=args.created_at,
    )
    started = time.perf_counter()
    with distributed.joined(args.device) as world:
        view = load_on(world, args.teacher, args.max_length)
        with stage_progress(world) as progress:
            auditor = load_on(world, args.auditor, args.max_length) if args.auditor else None
            audit = None if args.no_safety_screen else ExportScreen(auditor=auditor)
            result = extract_packet(view, spec, settings, progress, audit, task_inputs=tasks)
    if not world.is_writer:
        return 0
    packet, safety_notes = (
        finish_export(result.packet, audit, args.keep_flagged) if audit else (result.packet, [])
    )
    packet = packet.signed(args.sign) if args.sign else packet
    path = packet.save(args.out)
    record = write_packet_record(path, "extract", packet, time.perf_counter() - started)
    for note in result.notes + safety_notes:
        error_console.print(f"note: {shown(note)}")
    m = packet.manifest
    console.print(
        f"wrote {path} {packet.digest} ({'signed' if args.sign else 'unsigned'}): "
        f"{len(m.concepts or [])} concepts at layer {m.concepts[0].layer if m.concepts else '-'}, "
        f"{len(m.traces or [])} traces, "
        f"{'attention' if m.attention else 'no attention'}; record: {record}"
    )
    for line in worth_lines(packet):
        console.print(shown(line))
    return 0
