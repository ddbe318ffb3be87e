"""The ``taskpgm`` command line.

Each subcommand lives in a module of this package that exposes
``register(subparsers)``; the module adds its parser and sets ``handler`` to a
function ``(args) -> int``. This file only dispatches and is the boundary where
library errors become one clean message on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from taskpgm import __version__
from taskpgm.errors import TaskPGMError

# Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES: list[str] = [
    "taskpgm.cli.demo",
    "taskpgm.cli.run",
    "taskpgm.cli.tasks",
]


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default appended to its help, unless the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, [], argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The same, with the description kept as written."""


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser below it."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += all_parsers(sub)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskpgm",
        description="Choose how much of each task dataset goes into a fine-tuning mixture.",
    )
    parser.add_argument("--version", action="version", version=f"taskpgm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for p in all_parsers(parser):
        fmt = p.formatter_class
        raw = isinstance(fmt, type) and issubclass(fmt, argparse.RawDescriptionHelpFormatter)
        p.formatter_class = RawHelpFormatter if raw else HelpFormatter
    return parser


class Terminated(BaseException):
    """SIGTERM (a scheduler's preemption, ``kill``) arrived: stop like Ctrl-C does."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes included) shown as ``\\xNN``;
    newlines and tabs stay. File names and values in messages come from users' files."""
    return "".join(c if c in "\n\t" or (c.isprintable() and c != "\x7f")
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (also used by the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    resume = "finished work is kept; run the same command to resume"
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(handler(args))
    except TaskPGMError as err:
        print(f"error: {printable(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {resume}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"terminated (SIGTERM): {resume}", file=sys.stderr)
        return 143
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
