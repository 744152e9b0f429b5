"""``tessera``: the command line.

This module parses the command line and dispatches to a subcommand; each subcommand is one
module, ``cli_<name>.py``, with ``add_parser(subparsers)``, which declares its arguments and
sets ``run`` (``args -> exit status``) as the parser's default. A new subcommand is a new
module and one line in ``SUBCOMMANDS``.

Errors from bad input (a Tessera error) are one line on stderr and exit status 1; usage errors
exit with 2; anything else is an internal error, one line too unless ``TESSERA_DEBUG`` asks for
the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

from . import cli_bench, cli_cache, cli_compile, cli_generate, knobs
from .errors import TesseraError

PROG = "tessera"
# The subcommands' modules, in the order `tessera --help` lists them.
SUBCOMMANDS: tuple[ModuleType, ...] = (cli_compile, cli_generate, cli_bench, cli_cache)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> ArgumentParser:
    import tessera

    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Compile Gemma-class models with Tessera, generate text with them, time them, and "
            "manage the compile cache."
        ),
        epilog="TESSERA_LOG=info (or debug) logs every compile stage to stderr.",
    )
    parser.add_argument("--version", action="version", version=f"tessera {tessera.__version__}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        # Set up here, inside the handler, so that a bad TESSERA_LOG is an error like any other.
        from . import log  # noqa: F401

        return run(args)
    except TesseraError as problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as problem:
        if knobs.debug():
            traceback.print_exc()
        print(
            f"{PROG}: internal error: {type(problem).__name__}: {problem} "
            "(set TESSERA_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
