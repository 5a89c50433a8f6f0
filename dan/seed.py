"""Seeds in one place.

Every random stream of a run is derived from the one ``--seed``: :func:`seed_everything` seeds
Python, NumPy and torch; :func:`derive` makes independent sub-seeds (per epoch, per purpose), so
that an epoch's randomness depends on (seed, epoch) only and a resumed run replays exactly what an
uninterrupted one would have done. :func:`kept_rng_state` gives a caller's process its generators
back after a run has seeded them.
"""

from __future__ import annotations

import contextlib
import hashlib
import random

import numpy as np
import torch


def derive(seed: int, *parts) -> int:
    """A 63-bit seed that depends on ``seed`` and ``parts`` only (stable across runs/platforms)."""
    text = ":".join(str(p) for p in (seed,) + parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def kept_rng_state():
    """The global generators (Python's ``random``, NumPy's, torch's CPU generator and, when CUDA is
    initialized, every CUDA device's) as they were before the block, after it, however it ends. A run
    seeds them (:func:`seed_everything`, every epoch), and an audit's ``dan.search(...)`` from a
    notebook left them seeded: every model built afterwards without a seed of its own had the same
    initial weights. A CUDA not initialized before the block is not touched after it."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    with kept_host_random():
        try:
            yield
        finally:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def kept_host_random():
    """NumPy's global generator and Python's ``random`` as they were before the block, after it: part
    of :func:`kept_rng_state`, and alone around what reads images under :func:`dan.data.splits.seeded`
    in the run's own process (once per batch: keeping NumPy's state costs about 70 µs)."""
    kept = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(kept[0])
        random.setstate(kept[1])
