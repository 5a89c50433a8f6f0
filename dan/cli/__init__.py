"""The command line: ``dan <command> [args]`` (or ``python -m dan <command>``), one module per command.

This package owns the entry points: it alone parses ``argv``, prints and exits; the rest of ``dan``
is a silent library. Each command module holds its parser (``get_args_parser(prog)``) and
``main(argv, prog) -> exit status``; :mod:`dan.cli.main` dispatches to them, and ``tools/<name>.py``
are the documented wrappers that call the same ``main``. The shared pieces (common flags, config
resolution, the error boundary :func:`run_tool`) live in :mod:`dan.cli.common` and are importable
from here.
"""

from dan.cli.common import (FLOPS_NOTE, Parser, common_parser, nonnegative_int, number, one_line, open_monitor,
                            positive_int, resolve_config, run_tool, tensorboard_hint)

__all__ = ["FLOPS_NOTE", "Parser", "common_parser", "nonnegative_int", "number", "one_line", "open_monitor",
           "positive_int", "resolve_config", "run_tool", "tensorboard_hint"]
