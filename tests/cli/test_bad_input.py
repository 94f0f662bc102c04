"""Validate before work: each bad spec, CSV, key or output path is one line, exit 2, no model load.

Each case was a traceback or a run of many seconds before issue 20; each now ends in a typed
error before the command starts loading a model (it prints `loading …` when it does).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from m2kt.broker.client import DirectoryStore
from m2kt.broker.errors import RefusedPacketError
from m2kt.cli import main
from m2kt.errors import VerificationError
from m2kt.packet import verify_packet
from m2kt.packet.container import MANIFEST, parse_container, write_container
from m2kt.packet.limits import DEFAULT_LIMITS

from conftest import knowledge_packet


def refused(capsys, argv: list[str], *, seconds: float = 10.0) -> str:
    """Run `m2kt argv`; it must exit 2 with one `error:` line, quickly and before any model."""
    started = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - started < seconds
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], out.err
    assert "loading" not in out.err and out.out == ""
    return lines[0]


def _extract(spec: Path | str, out: Path) -> list[str]:
    return ["extract", "--teacher", "e1", "--concepts", str(spec), "--out", str(out)]


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)
)

SPECS = {
    "not UTF-8": (b"concepts:\n  - name: caf\xe9\n    probes: [x]\n", "not UTF-8"),
    "JSON 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
    "YAML 40 deep": (b"a: " + b"{b: " * 40 + b"1" + b"}" * 40, "nested more than"),
    "alias bomb": (BOMB.encode(), "YAML nodes"),
    "a list as a key (found by the fuzzer)": (b"? [a, b]\n: 1\n", "a key must be a plain value"),
    "10,000 concepts": (
        b"concepts:\n"
        + b"".join(f"  - {{name: c{i}, probes: [p]}}\n".encode() for i in range(10_000)),
        "at most 1000",
    ),
    "24,000 probes": (
        b"concepts:\n"
        + b"".join(
            b"  - {name: c%d, probes: [%s]}\n" % (i, b",".join([b"p"] * 8000)) for i in range(3)
        ),
        "at most 20,000 are read",
    ),
}


@pytest.mark.parametrize("case", SPECS)
def test_a_bad_spec_is_refused_before_the_teacher_loads(case, tmp_path: Path, capsys) -> None:
    data, message = SPECS[case]
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(data)
    assert message in refused(capsys, _extract(spec, tmp_path / "p.m2kt"))


@pytest.mark.parametrize("spec", ["", ".", "/dev/zero"])
def test_a_spec_that_is_no_file(spec: str, tmp_path: Path, capsys) -> None:
    refused(capsys, _extract(spec, tmp_path / "p.m2kt"))


def test_extract_into_a_directory_is_refused_first(tmp_path: Path, capsys) -> None:
    assert "is a directory" in refused(capsys, _extract("topics", tmp_path))


@pytest.mark.parametrize("command", ["extract", "ingest"])
@pytest.mark.parametrize(("auditor", "message"), [("nosuch", "unknown model"), ("", "config.json")])
def test_an_auditor_that_is_no_model_is_refused_before_any_model_loads(
    command: str, auditor: str, message: str, tmp_path: Path, capsys
) -> None:
    """`--auditor` is checked as `--teacher` and `--student` are, not after they have loaded."""
    auditor = auditor or str(tmp_path)  # a directory, but not a model's
    argv = (
        _extract("topics", tmp_path / "p.m2kt")
        if command == "extract"
        else ["ingest", "--student", "e2", "--packet", "p.m2kt", "--out", str(tmp_path / "a")]
    )
    assert message in refused(capsys, [*argv, "--auditor", auditor])


def test_evaluate_without_a_student_says_what_to_pass_with_an_example(capsys) -> None:
    """argparse alone says only which arguments are missing; the hint names each one's value
    and a command line of the command's own examples that passes them."""
    line = refused(capsys, ["evaluate", "--adapter", "adapters/bbc", "--task", "bbc"])
    assert "the following arguments are required: --student" in line
    assert "(hint: pass --student MODEL (the model the adapter was ingested into), e.g. " in line
    assert "`m2kt evaluate --student e2 --adapter adapters/bbc --task bbc`)" in line
    line = refused(capsys, ["evaluate", "--student", "e2", "--adapter", "adapters/bbc"])
    assert "(hint: pass --task TASK (bbc, tweets or a CSV file) or --text TEXT" in line
    line = refused(capsys, ["patch", "apply", "--model", "e1"])  # no examples: its help
    assert line.endswith("(hint: pass PATCH; see `m2kt patch apply --help`)")


def test_signing_key_is_checked_first(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.key").write_text("not a key")
    for key in ("bad.key", "missing.key", "."):
        argv = [*_extract("topics", tmp_path / "p.m2kt"), "--sign", str(tmp_path / key)]
        refused(capsys, argv)


def test_keygen_into_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("")
    assert "is a file" in refused(capsys, ["keygen", "--out", str(tmp_path / "file")])
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert "already exists" in refused(capsys, ["keygen", "--out", str(tmp_path)])


CSVS = {
    "one class": ("text,label\n" + "".join(f"t{i},sport\n" for i in range(40)), "two or more"),
    "no rows": ("text,label\n", "no rows"),
    "no header": ("a,b\nc,d\n", "header"),
    "short row": ("text,label\nonly text\n", "both text and label"),
    "empty label": ("text,label\nx, \n", "empty text or label"),
    "a class too small": (
        "text,label\n" + "".join(f"t{i},a\n" for i in range(40)) + "u,b\n",
        "no example",
    ),
}


@pytest.mark.parametrize("case", CSVS)
def test_a_bad_task_csv_is_refused_before_training(case, tmp_path: Path, capsys) -> None:
    text, message = CSVS[case]
    (tmp_path / "task.csv").write_text(text)
    argv = ["patch", "train", "--weak", "e2", "--task", str(tmp_path / "task.csv")]
    assert message in refused(capsys, [*argv, "--out", str(tmp_path / "p.m2kt")])


def test_a_task_csv_that_is_not_utf8(tmp_path: Path, capsys) -> None:
    (tmp_path / "task.csv").write_bytes(b"text,label\n\xff\xfe,a\n")
    argv = ["patch", "train", "--weak", "e2", "--task", str(tmp_path / "task.csv")]
    assert "utf-8" in refused(capsys, [*argv, "--out", str(tmp_path / "p.m2kt")])


@pytest.mark.parametrize("length", ["-5", "2"])
def test_a_bench_fit_length_too_short_is_refused_first(length: str, tmp_path: Path, capsys) -> None:
    argv = ["bench", "patch", "--fit-length", length, "--out", str(tmp_path)]
    assert f"fit length {length} is too short" in refused(capsys, argv)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ("bbc:e1", "not task:teacher:student"),
        ("news:e1:e2", "a task of bbc, tweets"),
        ("tweets:e1:zz9", "unknown model 'zz9'"),
    ],
)
def test_bench_pairs_that_name_no_setting_are_refused_first(
    pairs: str, message: str, tmp_path: Path, capsys
) -> None:
    argv = ["bench", "efficiency", "--regime", "latent", "--pairs", pairs, "--out", str(tmp_path)]
    assert message in refused(capsys, argv)


def test_bench_pairs_read_as_latent_settings() -> None:
    from m2kt.cli.bench import _pairs

    assert _pairs("tweets:e1:e2,bbc:e2:e1") == (("tweets", "e1", "e2"), ("bbc", "e2", "e1"))


def test_a_signature_mismatch_names_the_member_not_bytes(keys, tmp_path: Path) -> None:
    signed = knowledge_packet().signed(keys[0])
    members = parse_container(signed.to_bytes(), DEFAULT_LIMITS)
    members[MANIFEST] = members[MANIFEST].replace(b"concept c0", b"concept x0")
    (tmp_path / "p.m2kt").write_bytes(write_container(members))
    with pytest.raises(VerificationError) as caught:
        verify_packet(tmp_path / "p.m2kt", [keys[1]])
    assert "manifest.json changed since it was signed" in caught.value.message
    assert "b'" not in caught.value.message and "\\x" not in caught.value.message


def test_a_refused_upload_does_not_name_the_staging_file(keys, tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store", "alice", [keys[1]])
    with pytest.raises(RefusedPacketError) as caught:
        store.publish(knowledge_packet().save(tmp_path / "unsigned.m2kt"))
    assert caught.value.message == "upload refused: the upload is not signed"
