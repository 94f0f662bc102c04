"""The CLI as a whole: every subcommand, every argument missing, empty, of the wrong type, or a
directory where a file belongs (and the reverse), ends in one `error:` line, exit 2, no traceback.

Cases come from the parser itself: each required argument is dropped in turn, each int, float
or choice argument gets a word, and each argument that names a file, directory, model or store
(listed in `KINDS`) gets the values its kind must refuse. The rest of the command line is valid,
so the error is the one under test, and it must come before any model loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from m2kt.cli import build_parser, main
from m2kt.packet import generate_keypair

from conftest import knowledge_packet

# A valid command line for each command (placeholders in capitals are made by `world`).
BASE = {
    "extract": ["--teacher", "e1", "--concepts", "SPEC", "--out", "NEW", "--sign", "KEY"],
    "ingest": ["--student", "e2", "--packet", "PACKET", "--out", "NEWDIR", "--key", "PUB"],
    "evaluate": ["--student", "e2", "--adapter", "DIR", "--text", "hello"],
    "patch train": ["--weak", "e2", "--task", "CSV", "--out", "NEW", "--sign", "KEY"],
    "patch transfer": ["PACKET", "--to", "e1", "--task", "CSV", "--out", "NEW", "--key", "PUB"],
    "patch apply": ["PACKET", "--model", "e1", "--key", "PUB", "--text", "hello"],
    "inspect": ["PACKET", "--key", "PUB"],
    "sign": ["PACKET", "--sign", "KEY", "--out", "NEW"],
    "verify": ["PACKET", "--key", "PUB"],
    "keygen": ["--out", "NEWDIR", "--name", "k"],
    "publish": ["PACKET", "--store", "STORE", "--key", "PUB"],
    "search": ["--store", "STORE", "--limit", "5"],
    "pull": ["DIGEST", "--store", "STORE", "--out", "NEW", "--key", "PUB"],
    "unpublish": ["DIGEST", "--store", "STORE"],
    "serve": ["--store", "STORE", "--tokens", "TOKENS", "--port", "1"],
    "merge": ["PACKET", "PACKET", "--out", "NEW", "--key", "PUB"],
    "bench": ["patch", "--out", "NEWDIR"],
    "report": ["DIR", "--out", "NEWDIR"],
    "demo": ["--out", "NEWDIR"],
}

# What each path-like argument must refuse: "" always, then per kind.
KINDS = {
    "file": ["DIR", "MISSING", "JUNK"],  # an input file: a directory, nothing, or garbage
    "dir": ["JUNK", "MISSING"],  # an input directory
    "out": ["DIR", "UNDER_FILE"],  # a file to write
    "outdir": ["JUNK", "UNDER_FILE"],  # a directory to write
    "model": ["DIR", "MISSING", "JUNK"],
    "store": ["JUNK"],
}
ARGS = {
    "--concepts": "file",
    "--sign": "file",
    "--key": "file",
    "PACKET": "file",
    "PATCH": "file",
    "--packet": "file",
    "--task": "file",
    "--tokens": "file",
    "--certfile": "file",
    "--keyfile": "file",
    "--held-in": "file",
    "--adapter": "dir",
    "RUN_DIR": "dir",
    "--out": "out",
    "--cache": "outdir",
    "--teacher": "model",
    "--student": "model",
    "--weak": "model",
    "--to": "model",
    "--model": "model",
    "--from": "model",
    "--spec": "file",
    "--store": "store",
    "--index": "out",
}
OUT_DIRS = {"ingest", "keygen", "bench", "report", "demo", "serve"}
# `verify` answers "is this file the genuine signed packet?": any file that is not is a no (1).
EXIT = {"verify PACKET JUNK": 1}
# Arguments that the base line leaves out but that take a path (tested on their own).
EXTRA = {
    "ingest": ["--held-in"],
    "patch train": ["--cache"],
    "bench": ["--cache"],
    "serve": ["--certfile", "--keyfile", "--index"],
}


def _commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        verbs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if verbs:
            yield from ((f"{name} {verb}", p) for verb, p in verbs[0].choices.items())
        else:
            yield name, parser


def _label(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.metavar or action.dest


def _positional(base: list[str]) -> int:
    return next(i for i, a in enumerate(base) if not a.startswith("-") and (a.isupper() or i == 0))


def _without(base: list[str], label: str) -> list[str]:
    if not label.startswith("-"):
        return base[: _positional(base)] + base[_positional(base) + 1 :]
    out, skip = [], False
    for arg in base:
        if skip:
            skip = False
        elif arg == label:
            skip = True
        else:
            out.append(arg)
    return out


def _with(base: list[str], label: str, value: str) -> list[str]:
    if label.startswith("-"):
        return [*_without(base, label), label, value]
    return [*base[: _positional(base)], value, *base[_positional(base) + 1 :]]


def _cases() -> Iterator[tuple[str, list[str], str]]:
    for command, parser in _commands():
        base = BASE[command]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.nargs == 0:
                continue
            label = _label(action)
            if action.required and (label in base or not label.startswith("-")):
                yield command, _without(base, label), f"{label} missing"
            if action.type in (int, float) or action.choices:
                yield command, _with(base, label, "wrong-type"), f"{label} wrong type"
            kind = ARGS.get(label)
            if label == "--out" and command in OUT_DIRS:
                kind = "outdir"
            if kind and (label in base or label in EXTRA.get(command, [])):
                for value in ["", *KINDS[kind]]:
                    yield command, _with(base, label, value), f"{label} {value or 'empty'}"


CASES = list(_cases())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("world")
    private, public = generate_keypair(root, "me")
    packet = knowledge_packet().signed(private).save(root / "p.m2kt")
    (root / "spec.yaml").write_text("concepts:\n  - {name: cats, probes: [A cat purrs.]}\n")
    (root / "task.csv").write_text("text,label\n" + "a,x\nb,y\n" * 20)
    (root / "junk").write_text("hello, not what you expected\n")
    (root / "dir").mkdir()
    (root / "tokens.json").write_text('{"publishers": {}}')
    return {
        "SPEC": str(root / "spec.yaml"),
        "CSV": str(root / "task.csv"),
        "KEY": str(private),
        "PUB": str(public),
        "PACKET": str(packet),
        "DIGEST": knowledge_packet().digest,
        "TOKENS": str(root / "tokens.json"),
        "STORE": str(root / "store"),
        "DIR": str(root / "dir"),
        "JUNK": str(root / "junk"),
        "MISSING": str(root / "missing"),
        "UNDER_FILE": str(root / "junk" / "below"),
        "NEW": str(root / "new" / "out.m2kt"),
        "NEWDIR": str(root / "new" / "outdir"),
    }


def test_every_command_has_a_base_line() -> None:
    assert sorted(BASE) == sorted(name for name, _ in _commands())
    assert len(CASES) > 150


@pytest.mark.parametrize(("command", "argv", "case"), CASES, ids=[f"{c} {k}" for c, _, k in CASES])
def test_bad_argument_is_one_line_exit_2(command, argv, case, world, capsys) -> None:
    args = [*command.split(), *(world.get(a, a) for a in argv)]
    assert main(args) == EXIT.get(f"{command} {case}", 2), capsys.readouterr()
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "(hint: " in lines[0] and "Traceback" not in out.err
    assert "loading" not in out.err
    message, _, hint = lines[0].partition(" (hint: ")
    if "arguments are required: " in message or message.endswith(" is required"):
        # argparse found it missing: the hint says what to pass
        assert hint.startswith("pass ") and case.split()[0] in hint, lines[0]


def test_serve_help_says_what_the_upload_screen_does_not_catch(capsys) -> None:
    """Issue 17: the broker screens words; its help must say what that misses."""
    from m2kt.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "does not catch" in text and "trojan" in text and "harm the list does not name" in text
