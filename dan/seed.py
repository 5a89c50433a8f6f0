"""Seeds in one place.

Every random stream of a run is derived from the one ``--seed``: :func:`seed_everything` seeds
Python, NumPy and torch; :func:`derive` makes independent sub-seeds (per epoch, per purpose), so
that an epoch's randomness depends on (seed, epoch) only and a resumed run replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

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
