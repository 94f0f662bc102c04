"""Model patches: carry a weak model's fine-tuning to a stronger model without backprop.

  m2kt patch train    --weak e2 --task bbc --out weak.m2kt [--sign KEY]
  m2kt patch transfer weak.m2kt --to e1 --task bbc --out strong.m2kt --key PUB [--sign KEY]
  m2kt patch apply    strong.m2kt --model e1 --key PUB --text "Shares rose 5% on Monday"
  m2kt patch apply    strong.m2kt --model e1 --key PUB --task bbc --split test

Without any label: --inputs texts.txt --classes a,b,c [--templates "A {} story." ...] in place
of --task (`train` then needs --weak-finetuned; `transfer` chooses its settings on agreement with
the patch on its own model, on held-out unlabelled inputs, then refits the moved patch toward
it by KL on the inputs, the epoch chosen on the same agreement; the record says so).

`train` learns the patch from unlabelled inputs (labels never enter its loss; without
--weak-finetuned, the weak model's class-name head is first tuned on the task's labels as the
adaptation to capture). `transfer` fits one orthogonal basis change with forward passes only.
Models are embedded ids (e1, e2, e3) or Hugging Face directories.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from m2kt.cli._common import (
    add_limit_arguments,
    add_trust_arguments,
    console,
    limits_from,
    model_reference,
    output_directory,
    output_file,
    private_key,
    progress_bars,
    shown,
)
from m2kt.report.records import write_packet_record

NAME = "patch"
SUMMARY = "train, transfer and apply model patches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    train = verbs.add_parser("train", help="learn a patch on a weak model, without labels")
    train.add_argument(
        "--weak",
        required=True,
        type=model_reference,
        metavar="MODEL",
        help="weak pre-trained model",
    )
    train.add_argument("--weak-finetuned", metavar="DIR", help="your fine-tuned weak model")
    train.add_argument(
        "--logit-dim",
        type=int,
        default=256,
        metavar="K",
        help="task + auxiliary classes (default 256)",
    )
    _common(train)

    transfer = verbs.add_parser("transfer", help="carry a patch to another model")
    transfer.add_argument("packet", metavar="PATCH")
    transfer.add_argument(
        "--to", required=True, type=model_reference, metavar="MODEL", help="the stronger model"
    )
    transfer.add_argument(
        "--from",
        dest="source",
        type=model_reference,
        metavar="MODEL",
        help="the patch's model, if not the one it records",
    )
    transfer.add_argument(
        "--identity-weight",
        type=float,
        metavar="LAMBDA",
        help="λ of the basis change (default: chosen on the validation split)",
    )
    transfer.add_argument(
        "--map",
        choices=["orthogonal", "linear"],
        help="the basis change (default: whichever validates better)",
    )
    transfer.add_argument(
        "--few-shot",
        type=int,
        default=0,
        metavar="N",
        help="Patch+: then tune the moved patch on N labelled training inputs per class (e.g. "
        "16) together with agreement (KL) with the patch on its own model over the unlabelled "
        "inputs the transfer read; the mix β and the epoch chosen on validation, the untouched "
        "patch kept if nothing beats it there",
    )
    transfer.add_argument(
        "--few-shot-tunes",
        choices=["all", "bias"],
        default="all",
        help="Patch+ tunes all the patch's weights, or only its output bias (K values)",
    )
    transfer.add_argument(
        "--fit-length",
        type=int,
        metavar="TOKENS",
        help="both models read the transfer's inputs (training and validation) truncated to "
        "this many tokens: a fraction of the cost on long texts (e.g. 64; default: full length)",
    )
    transfer.add_argument(
        "--no-refine",
        dest="refine",
        action="store_false",
        help="with --inputs: keep the moved patch as transferred (default: refitted toward the "
        "patch on its own model by KL on the inputs, the epoch chosen on held-out agreement)",
    )
    add_trust_arguments(transfer)
    add_limit_arguments(transfer)
    _common(transfer)

    apply = verbs.add_parser("apply", help="classify inputs with a patched model")
    apply.add_argument("packet", metavar="PATCH")
    apply.add_argument("--model", required=True, type=model_reference, metavar="MODEL")
    source = apply.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to classify (repeatable)")
    source.add_argument("--task", help="score a task split instead")
    apply.add_argument("--split", default="test", choices=["train", "val", "test"])
    apply.add_argument(
        "--cache", type=output_directory, metavar="DIR", help="embedding cache directory"
    )
    add_trust_arguments(apply)
    add_limit_arguments(apply)


def _common(parser: argparse.ArgumentParser) -> None:
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--task", help="bbc, tweets, or your own CSV file with text,label columns")
    data.add_argument("--inputs", type=Path, metavar="FILE", help="unlabelled texts, one a line")
    parser.add_argument("--classes", metavar="A,B,C", help="class names, with --inputs")
    parser.add_argument(
        "--templates",
        nargs="+",
        metavar="TEMPLATE",
        help='prompt templates with {} for the class name, with --inputs (default "{}." '
        '"This text is about {}." "It is {}.")',
    )
    parser.add_argument(
        "--out", required=True, type=output_file, metavar="PATH", help="where to write the patch"
    )
    parser.add_argument(
        "--sign", type=private_key, metavar="KEY", help="sign the result with this private key"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-inputs",
        type=int,
        metavar="N",
        help="use at most N of the task's (unlabelled) training inputs",
    )
    parser.add_argument(
        "--cache", type=output_directory, metavar="DIR", help="embedding cache directory"
    )


def run(args: argparse.Namespace) -> int:
    from m2kt.concepts.geometry import accuracy
    from m2kt.errors import UsageError
    from m2kt.packet import load_packet
    from m2kt.patch.api import (
        format_scores,
        load_patched_model,
        score_transfer,
        train_patch,
        transfer_patch_packet,
    )
    from m2kt.patch.config import PatchConfig
    from m2kt.patch.unlabelled import UnlabelledTask, load_unlabelled
    from m2kt.tasks import TextClassificationTask, load_task

    cache = Path(args.cache) if args.cache else None
    if args.verb == "apply":
        packet = load_packet(
            args.packet,
            trusted_keys=args.key,
            allow_unsigned=args.allow_unsigned,
            limits=limits_from(args),
        )
        model = load_patched_model(packet, args.model)
        if args.text:
            probabilities = model.task_logits(args.text).softmax(dim=-1)
            for text, row in zip(args.text, probabilities, strict=True):
                best = int(row.argmax())
                label = shown(model.axes.task_classes[best])
                console.print(f"{label}\t{float(row[best]):.2f}\t{shown(text)}")
            return 0
        labelled = load_task(args.task)
        model.axes.check_matches(labelled.class_names)
        split = getattr(labelled, args.split)
        score = accuracy(model.task_logits(split.texts, cache), split.labels)
        console.print(
            f"{args.task} {args.split}: accuracy {100 * score:.1f}% on {len(split)} inputs"
        )
        return 0

    if args.inputs is None and (args.classes or args.templates):
        raise UsageError("--classes and --templates go with --inputs", "pass --inputs FILE")
    if args.inputs is not None and not args.classes:
        raise UsageError("--inputs needs --classes", "e.g. --classes business,tech")
    task: TextClassificationTask | UnlabelledTask = (
        load_task(args.task).limited(args.max_inputs, ("train",))
        if args.task is not None
        else load_unlabelled(args.inputs, args.classes, args.templates).limited(args.max_inputs)
    )
    started = time.perf_counter()
    with progress_bars() as progress:
        if args.verb == "train":
            packet = train_patch(
                args.weak,
                task,
                weak_finetuned=args.weak_finetuned,
                config=PatchConfig(logit_dim=args.logit_dim),
                seed=args.seed,
                cache=cache,
                progress=progress,
            )
        else:
            source = load_packet(
                args.packet,
                trusted_keys=args.key,
                allow_unsigned=args.allow_unsigned,
                limits=limits_from(args),
            )
            packet = transfer_patch_packet(
                source,
                args.to,
                task,
                source=args.source,
                identity_weight=args.identity_weight,
                transfer_map=args.map,
                few_shot=args.few_shot,
                few_shot_tunes=args.few_shot_tunes,
                fit_length=args.fit_length,
                refine=args.refine,
                seed=args.seed,
                cache=cache,
                progress=progress,
            )
    if args.sign:
        packet = packet.signed(args.sign)
    path = packet.save(args.out)
    record = write_packet_record(path, f"patch {args.verb}", packet, time.perf_counter() - started)
    seen = packet.manifest.provenance.inputs_seen
    console.print(
        f"wrote {path} {packet.digest} ({'signed' if args.sign else 'unsigned'}); "
        f"inputs seen: {seen}; record: {record}"
    )
    if args.verb == "transfer" and isinstance(task, TextClassificationTask):
        scores = score_transfer(source, packet, task, cache=cache)
        console.print(shown(format_scores(scores), lines=True))
    return 0
