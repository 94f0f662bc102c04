"""`m2kt ingest` and `m2kt evaluate` as a user runs them: e1's topics packet into e2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2kt.cli import main
from m2kt.concepts.spec import load_spec
from m2kt.extract.pipeline import extract_packet
from m2kt.models.load import load_model
from m2kt.packet import read_packet

from conftest import TWO_PROBES, patch_packet, shifted_concepts


@pytest.fixture(scope="module")
def packets(tmp_path_factory: pytest.TempPathFactory, keys) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packets")
    good = extract_packet(load_model("e1"), load_spec("topics")).packet
    paths = {"good": root / "good.m2kt", "bad": root / "bad.m2kt", "patch": root / "p.m2kt"}
    good.signed(keys[0]).save(paths["good"])
    shifted_concepts(good).save(paths["bad"])
    patch_packet().save(paths["patch"])
    return paths


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_ingest_evaluate_and_a_rollback_that_keeps_the_old_adapter(
    packets, keys, tmp_path, capsys
) -> None:
    out = tmp_path / "adapter"
    ingest = ["ingest", "--student", "e2", "--out", str(out)]
    assert main([*ingest, "--packet", str(packets["good"]), "--key", str(keys[1])]) == 0
    printed = capsys.readouterr().out
    assert "ok   transfer" in printed and "wrote" in printed
    kept = _files(out)
    assert set(kept) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "ingestion_report.json",
    }

    report = json.loads(kept["ingestion_report.json"])
    assert report["safety_screen"] is not None  # the auditor ran by default
    screened = report["inputs"]["student_safety_screen"]  # its texts count as inputs read
    assert screened == report["safety_screen"]["inputs_read"] > 0
    assert report["inputs"]["student"] > report["inputs"]["student_training"] + screened

    assert main(["evaluate", "--student", "e2", "--adapter", str(out), "--text", "Goal!"]) == 0
    assert "sport" in capsys.readouterr().out

    # Sentences of your own, one a topic: too few to split, scored whole with --split all.
    mine = tmp_path / "mine.csv"
    topics = load_spec("topics").concepts
    mine.write_text("text,label\n" + "".join(f"A note on {c.name}.,{c.name}\n" for c in topics))
    evaluate = ["evaluate", "--student", "e2", "--adapter", str(out), "--task", str(mine)]
    assert main(evaluate) == 2  # its test split would lack classes
    capsys.readouterr()
    assert main([*evaluate, "--split", "all"]) == 0
    printed = capsys.readouterr().out
    assert f"mine all ({len(topics)} inputs)" in printed
    # the CSV's classes come sorted, the packet's in the spec's order: matched by name, the
    # packet names most topics (scored against shuffled labels it would name almost none)
    after = float(printed.split("% with the ingested packet")[0].rsplit(" ", 1)[1])
    assert after >= 50

    # A packet built to fail: exit 1, the reasons printed, the previous adapter untouched;
    # your sentences (--verify-on) refuse it too, naming the packet's figure and zero-shot's.
    bad = [*ingest, "--packet", str(packets["bad"]), "--allow-unsigned", "--verify-on", str(mine)]
    assert main(bad) == 1
    captured = capsys.readouterr()
    assert "FAIL transfer" in captured.out and "rolled back" in captured.err
    (line,) = [x for x in captured.out.splitlines() if x.startswith("FAIL yours: zero-shot")]
    assert f"your sentences, {mine} (n=" in line  # of the concepts the screen kept
    assert "after against 100.0% with the student's zero-shot reading" in line
    assert _files(out) == kept


def test_no_screen_keeps_the_auditor_out_but_not_the_safety_probes(packets, keys, tmp_path) -> None:
    out = tmp_path / "adapter"
    command = ["ingest", "--student", "e2", "--out", str(out), "--packet", str(packets["good"])]
    assert main([*command, "--key", str(keys[1]), "--no-screen"]) == 0
    report = json.loads((out / "ingestion_report.json").read_text())
    assert report["safety_screen"] is None and report["dropped_concepts"] == []
    names = [check["name"] for check in report["checks"]]
    assert "safety" in names and "screen" not in names  # one switch, before and after training


@pytest.mark.parametrize(
    ("which", "extra", "code", "message"),
    [
        ("patch", ["--allow-unsigned"], 2, "patch packet without concepts"),
        # not "the label … names no concept": the packet is what is wrong
        ("patch", ["--allow-unsigned", "--verify-on", "mine.csv"], 2, "patch packet without"),
        ("good", ["--residual-rank", "9999"], 2, "does not fit a student of width 384"),
        ("bad", [], 1, "not signed"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    packets, keys, which, extra, code, message, tmp_path, capsys
) -> None:
    out = tmp_path / "adapter"
    args = ["ingest", "--student", "e2", "--packet", str(packets[which]), "--out", str(out)]
    assert main([*args, "--key", str(keys[1]), *extra]) == code
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"", "empty.csv", "needs a header with `text` and `label` columns"),
        (b"text,label\n", "header.csv", "has a header but no rows"),
        (b"text,label\nA goal.,sport\nRates rose.,finance\n", "x.csv", "'finance' names no"),
        (b"text,label\nCaf\xe9 prices,business\nGoal,sport\n", "latin1.csv", "cannot read"),
        (b"text,label\nA goal.,sport\n", "mine.txt", "--verify-on takes a CSV file"),
        (None, "missing.csv", "no such --verify-on file"),
    ],
)
def test_a_bad_file_of_your_sentences_is_refused_in_one_line_before_any_model_loads(
    packets, keys, content, name, message, tmp_path, capsys
) -> None:
    mine, out = tmp_path / name, tmp_path / "adapter"
    if content is not None:
        mine.write_bytes(content)
    args = ["ingest", "--student", "e2", "--packet", str(packets["good"]), "--out", str(out)]
    assert main([*args, "--key", str(keys[1]), "--verify-on", str(mine)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) <= 2  # the problem, and a hint
    assert not out.exists()


def test_evaluate_refuses_another_student_and_another_vocabulary(
    packets, keys, tmp_path, capsys
) -> None:
    out = tmp_path / "adapter"
    args = ["ingest", "--student", "e2", "--packet", str(packets["good"]), "--out", str(out)]
    assert main([*args, "--key", str(keys[1])]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--student", "e1", "--adapter", str(out), "--text", "x"]) == 2
    assert "made for e2" in capsys.readouterr().err
    assert main(["evaluate", "--student", "e2", "--adapter", str(out), "--task", "bbc"]) == 2
    err = capsys.readouterr().err
    assert "task bbc has classes" in err and "the adapter's concepts are" in err


def test_the_main_job_transfers_a_verified_packet(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "| verdict | accepted |" in printed and "ok   transfer" in printed
    assert (tmp_path / "demo" / "adapter" / "adapter_model.safetensors").is_file()
    # the packet is what `m2kt extract` writes: screened, with the screen's texts (part S)
    assert read_packet(tmp_path / "demo" / "topics.m2kt").manifest.screen is not None
    assert (
        main(
            [
                "verify",
                str(tmp_path / "demo" / "topics.m2kt"),
                "--key",
                str(tmp_path / "demo" / "demo-signer.pub"),
            ]
        )
        == 0
    )


def test_two_probes_a_concept_cannot_be_verified_without_the_flag(tmp_path, capsys) -> None:
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_PROBES)
    packet = tmp_path / "two.m2kt"
    assert main(["extract", "--teacher", "e1", "--concepts", str(spec), "--out", str(packet)]) == 0
    out = tmp_path / "adapter"
    ingest = ["ingest", "--student", "e2", "--packet", str(packet), "--out", str(out)]
    capsys.readouterr()
    assert main([*ingest, "--allow-unsigned"]) == 1
    printed = capsys.readouterr()
    assert "only 0 held-out verification probes" in printed.out
    assert "--accept-unverified" in printed.out and not out.exists()
    assert main([*ingest, "--allow-unsigned", "--accept-unverified"]) == 0
    printed = capsys.readouterr()
    assert "(unverified)" in printed.out
    assert "note: accepted unverified" in printed.err and "--split all" in printed.err
    report = json.loads((out / "ingestion_report.json").read_text())
    assert report["verification"] == "unverified" and report["accepted"] is True
