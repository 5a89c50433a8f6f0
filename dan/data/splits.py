"""Train/held-out splits and the random streams of the data.

Every random choice of the data (the ``train_subset``, the held-out split, each epoch's order and
augmentation) comes from a private ``torch.Generator`` seeded by :func:`generator` from (run seed,
purpose, ...); the global RNG is never used for data. The purposes are numbered in
:data:`SPLIT_IDS`, so the streams of two splits never coincide.
"""

from __future__ import annotations

import contextlib
import random
from typing import Optional

import numpy as np
import torch

from dan.config import DataConfig
from dan.errors import UserError

SPLIT_IDS = {"train": 0, "test": 1, "holdout": 2, "holdout_eval": 3, "subset": 4, "split": 5}


def mixed_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (``np.random.SeedSequence`` hashing)."""
    words = [w for p in parts for w in (int(p) & 0xFFFFFFFF, (int(p) >> 32) & 0xFFFFFFFF)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def seeded(*parts: int):
    """Inside, torch's CPU generator, NumPy's global generator and Python's ``random`` are seeded with
    :func:`mixed_seed` of ``parts``; after, torch's is as it was. What ``torch.random.fork_rng(devices=[])``
    plus ``manual_seed`` do, for one image's random transform, at 2 µs instead of 75 (that cost was
    half the per-image overhead of a user's Dataset: 60k images a Fashion-MNIST epoch).

    NumPy's and Python's: transforms that draw from them (albumentations, a user's ``np.random``)
    read other images under ``--workers 2`` than under ``--workers 0`` (an audit: 102 of 122 weight
    tensors apart), since each worker process seeded them its own way. Saving and restoring NumPy's
    state costs about 70 µs, more than reading a small image, so they are seeded here and given back
    once per batch by the reader in the run's own process (:func:`dan.seed.kept_host_random`), not per image."""
    s = mixed_seed(*parts)
    g = torch.default_generator
    state = g.get_state()
    g.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
    try:
        yield
    finally:
        g.set_state(state)


def generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`mixed_seed` of ``parts``."""
    return torch.Generator().manual_seed(mixed_seed(*parts))


def split_indices(n: int, cfg: DataConfig, seed: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Sorted (train, holdout) indices into the n training images after train_subset/holdout.

    ``cfg.train_subset`` images are drawn first (seeded), then ``round(cfg.holdout * count)`` of
    them are held out; the holdout indices are None when ``cfg.holdout`` is 0.
    """
    if not 0.0 <= cfg.holdout < 1.0:
        raise UserError(f"holdout must be a fraction in [0, 1), got {cfg.holdout}")
    idx = torch.arange(n)
    if cfg.train_subset is not None:
        if not 0 < cfg.train_subset <= n:
            raise UserError(f"train_subset must be in 1..{n} (the training images), got {cfg.train_subset}")
        idx = torch.randperm(n, generator=generator(seed, SPLIT_IDS["subset"]))[:cfg.train_subset]
    if cfg.holdout == 0:
        return idx.sort().values, None
    n_hold = round(cfg.holdout * len(idx))
    if not 0 < n_hold < len(idx):
        raise UserError(f"holdout {cfg.holdout} of {len(idx)} training images leaves an empty split: "
                        "change holdout or use more training images")
    perm = idx[torch.randperm(len(idx), generator=generator(seed, SPLIT_IDS["split"]))]
    return perm[n_hold:].sort().values, perm[:n_hold].sort().values


class IndexedSplit(torch.utils.data.Dataset):
    """Items ``indices`` (all ``n`` when None) of a split's source, read by a
    :class:`~dan.data.loaders.FolderLoader`, which sets ``epoch_seed`` before each epoch: random
    draws of the item at position ``i`` run under :func:`seeded` ``(epoch_seed, i)``, so an epoch is
    the same whatever the number of worker processes. Image folders and your own Datasets subclass it."""

    def __init__(self, indices: Optional[torch.Tensor], n: int):
        self.indices = indices.tolist() if indices is not None else list(range(n))
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.indices)
