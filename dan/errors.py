"""Errors a user can cause.

Everything a user can get wrong (a bad flag, missing data, an infeasible budget, a malformed
``arch.json``, a corrupt checkpoint) raises :class:`UserError`. The command-line tools turn it into
one line on stderr and exit status 2; library callers get an ordinary exception with the same text.
Internal bugs raise whatever they raise, with a traceback.
"""

import contextlib
import contextvars


class UserError(Exception):
    """A mistake the user can fix; the message says what was wrong and how to fix it."""


class UnsupportedModelError(UserError):
    """The model holds a module or an operation that the adjoint conversion cannot handle."""


class DivergedError(UserError, FloatingPointError):
    """Training diverged (a non-finite loss or weights); the last finite checkpoint is kept."""


_COMMAND_LINE = contextvars.ContextVar("dan_command_line", default=False)


def spelt(flag: str, keyword: str) -> str:
    """How a message names an option: as the command-line tools take it (``--resume``) inside one
    (:func:`command_line`), else as a Python caller passes it (``resume=True``). An audit's notebook
    was told "pass --resume to continue it, or choose another --out" by ``dan.search``, whose
    options are ``resume=`` and ``out=``."""
    return flag if _COMMAND_LINE.get() else keyword


def setting(assignment: str) -> str:
    """A config setting as the caller gives it: ``--set data.channels=3`` in a tool, the key and
    value (``data.channels=3``: a ``cfg``/``data`` dict's entry) from Python (:func:`spelt`)."""
    return spelt(f"--set {assignment}", assignment)


@contextlib.contextmanager
def command_line():
    """Within the block, messages name options as the command-line tools take them (:func:`spelt`);
    :func:`dan.cli.common.run_tool` runs a tool's ``main`` inside it."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, PyTorch's OutOfMemoryError (CUDA), or the
    CPU allocator's RuntimeError ("DefaultCPUAllocator: can't allocate memory"). Code that turns
    exceptions into other messages lets these through, to the tools' one line about memory."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or \
        "can't allocate memory" in str(e) or "out of memory" in str(e).lower()


def raised_in_dan(e: BaseException) -> bool:
    """Whether ``e`` was raised by this package's own code (its innermost frame under dan/): an
    assert of ours is a bug, a model's own (a ViT's "Wrong image height!") the user's input."""
    import os
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    home = os.path.dirname(os.path.abspath(__file__))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(home + os.sep)


def add_note(e: BaseException, note: str) -> None:
    """``e.add_note(note)``, on Python 3.10 too: there the note is kept in ``e.__notes__`` as 3.11 keeps
    it, and the tools print it after the traceback (:func:`dan.cli.common.print_exception_with_notes`),
    which 3.10's own printer does not."""
    if hasattr(e, "add_note"):
        e.add_note(note)
    else:
        notes = getattr(e, "__notes__", None)
        try:
            e.__notes__ = (notes if isinstance(notes, list) else []) + [note]
        except AttributeError:  # (an exception type that takes no attributes: the traceback alone)
            pass


def first_line(e: BaseException, limit: int = 300) -> str:
    """What an exception says, in one line for a message of ours: its first line (its type's name
    when it says nothing), without PyTorch's "Please feel free to request support..." tail, at most
    ``limit`` characters."""
    text = str(e).strip()
    line = text.splitlines()[0].split(" Please feel free")[0] if text else type(e).__name__
    return line if len(line) <= limit else line[:limit - 1] + "…"


@contextlib.contextmanager
def quiet_fx_errors():
    """For the block, torch.fx does not print its own traceback to stderr when a traced module's
    generated forward raises (``torch.fx.graph_module._WrappedCall`` prints "Call using an
    FX-traced Module, line ..." and then raises). Where DAN runs a traced network to probe the
    input it takes, that exception becomes the one line of a user error, and the print came
    before it; elsewhere the print stays (it locates the line of a real bug). The exception itself
    is raised as before."""
    import builtins
    import sys

    import torch.fx.graph_module as fx_module

    def print_but_not_to_stderr(*args, file=None, **kwargs):
        if file is not sys.stderr:  # print_readable() and the like, as before
            builtins.print(*args, file=file, **kwargs)

    before = fx_module.__dict__.get("print")
    fx_module.print = print_but_not_to_stderr  # the module's global shadows the builtin it calls
    try:
        yield
    finally:
        if before is None:
            del fx_module.print
        else:
            fx_module.print = before
