"""The ``dan`` console script and ``python -m dan``: ``dan <command> [args]`` runs one command
module of :mod:`dan.cli` (``dan train …`` is ``python tools/train.py …``), ``dan --help`` lists them.
"""

from __future__ import annotations

import importlib
from typing import Optional, Sequence

from dan.cli.common import interrupted_line, run_tool
from dan.errors import UserError

# The commands, in the order ``dan --help`` lists them; each is the module dan.cli.<name> and the
# wrapper tools/<name>.py. ``latency-compare`` is accepted for ``latency_compare``.
COMMANDS = ("train", "search", "retrain", "tune", "count", "baseline", "coverage", "latency", "latency_compare",
            "bench", "reproduce", "fuzz")


def command_module(name: str):
    """The module of a command (its ``get_args_parser(prog)`` and ``main(argv, prog)``)."""
    return importlib.import_module(f"dan.cli.{name}")


def summary(name: str) -> str:
    """A command's one-line description: the first line of its usage text."""
    return (command_module(name).__doc__ or "").strip().splitlines()[0]


def help_text(prog: str = "dan") -> str:
    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {summary(name)}" for name in COMMANDS]
    return "\n".join([f"usage: {prog} <command> [args]", "",
                      "DAN: adjoined-network training and width search.",
                      f"'{prog} <command> --help' shows a command's flags; each command is also a script in "
                      "tools/", f"('{prog} train ...' runs as 'python tools/train.py ...').",
                      "", "commands:", *rows, "", "options:", "  -h, --help  show this list and exit",
                      "  --version   show the version and exit"])


def dispatch(argv: Sequence[str], prog: str = "dan") -> int:
    """Run the command ``argv[0]`` with the rest of ``argv``; returns its exit status."""
    if not argv:
        raise UserError(f"give a command: {prog} <command> [args], one of {', '.join(COMMANDS)} "
                        f"(see {prog} --help)")
    first = argv[0]
    if first in ("-h", "--help"):
        print(help_text(prog))
        return 0
    if first == "--version":
        from dan import __version__

        print(f"dan {__version__}")
        return 0
    name = first.replace("-", "_")
    if name not in COMMANDS:
        raise UserError(f"unknown command {first!r}: choose from {', '.join(COMMANDS)} (see {prog} --help)")
    module = command_module(name)
    try:
        return module.main(list(argv[1:]), prog=f"{prog} {first}")
    except KeyboardInterrupt as e:
        if e.args:
            raise
        raise KeyboardInterrupt(interrupted_line(module)) from None


def main(argv: Optional[Sequence[str]] = None, prog: str = "dan") -> None:
    """The console script's entry point: runs :func:`dispatch` and exits (2 with one line for a
    user error, as every tool)."""
    run_tool(lambda args: dispatch(args, prog), argv)
