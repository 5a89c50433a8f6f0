"""What a run would download, withheld during its dry run.

A dry run (:mod:`dan.dry_run`) promises that nothing is written, yet building a run's task as the
run does fetched a missing CIFAR (about 170 MB into ``data/``) under ``--download`` and a
torchvision model's pretrained weights into torch hub's cache. Inside :func:`withheld` the code
that would download asks :func:`would_download` first: when it answers with a list, nothing is
fetched, the dataset or model is stood in for by one of the same shape (the checks that follow
read shapes and sizes, never the values), and the note joins the list the dry run prints.
"""

from __future__ import annotations

import contextlib
import contextvars

_WITHHELD: contextvars.ContextVar[list | None] = contextvars.ContextVar("dan_withheld_downloads", default=None)


@contextlib.contextmanager
def withheld():
    """Inside: nothing is downloaded; yields the list of what would have been (one line each)."""
    notes: list[str] = []
    token = _WITHHELD.set(notes)
    try:
        yield notes
    finally:
        _WITHHELD.reset(token)


def withholding() -> bool:
    """Whether downloads are withheld here (inside :func:`withheld`): a cheap question to ask before
    an expensive check of what is already on disk."""
    return _WITHHELD.get() is not None


def would_download(what: str) -> bool:
    """True inside :func:`withheld` (``what``, e.g. "cifar10 into data/cifar10 (about 170 MB)", is
    noted): the caller stands in for it instead of downloading. False outside: download."""
    notes = _WITHHELD.get()
    if notes is None:
        return False
    if what not in notes:
        notes.append(what)
    return True
