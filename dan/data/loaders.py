"""Loaders over a dataset's splits, and :func:`build_data`, which makes them.

``build_data(cfg.data, seed=..., device=...)`` returns a :class:`Data` with a shuffled, augmented
``train`` loader, an unshuffled ``test`` loader and, when ``cfg.holdout > 0``, a held-out part of
the *training* split (``holdout`` for architecture steps, ``holdout_eval`` for monitoring).

Two kinds of loader, one interface (:class:`Loader`: iterable over ``(x, y)``, ``len``,
``num_samples``, ``batch_size``, ``set_epoch``, ``shard``):

* :class:`TensorLoader` (in-memory sets): the whole split is a uint8 NCHW tensor on the device. A
  batch is an index gather plus, when augmenting, one batched ``augment_batch``; no worker processes.
* :class:`FolderLoader` (``imagefolder``, and your own Datasets: :mod:`dan.data.code`): a
  ``torch.utils.data.DataLoader`` with ``workers`` processes and torchvision transforms (or yours).
  Batches are moved to the device by the loader, so both kinds deliver device tensors.

Determinism: the order and the augmentation of an epoch are a pure function of (seed, epoch,
split) through a private ``torch.Generator`` (:func:`dan.data.splits.generator`); folder transforms
run under a forked RNG seeded per image, so results do not depend on ``workers``. Like
``DistributedSampler``, call ``set_epoch(epoch)`` before each epoch; iterating twice without it
repeats the same epoch. A train split with at least two batches drops its last partial batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol, Union

import numpy as np
import torch
import torch.nn.functional as F

from dan.config import DataConfig
from dan.data.augment import AugmentRecipe, augment_batch, folder_transforms, pixel_grid, to_grey
from dan.data.code import DatasetSplits, UserSplit, split_class_names, splits_info
from dan.data.datasets import ArraySplits, FolderSplits, pillow_limit_off
from dan.data.info import DatasetInfo, data_info_dict, dataset_info, get_dataset
from dan.data.splits import SPLIT_IDS, IndexedSplit, generator, mixed_seed, seeded, split_indices
from dan.errors import UserError, out_of_memory, spelt
from dan.seed import kept_host_random


class Loader(Protocol):
    batch_size: int
    num_samples: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def shard(self, rank: int, world: int) -> None: ...


@dataclass
class Data:
    info: DatasetInfo
    train: Loader
    test: Loader
    holdout: Optional[Loader] = None
    holdout_eval: Optional[Loader] = None
    class_names: Optional[list] = None  # in label order, where the dataset names its classes

    def shard(self, rank: int, world: int) -> "Data":
        """Give this process its share of every split (distributed training)."""
        for loader in (self.train, self.test, self.holdout, self.holdout_eval):
            if loader is not None:
                loader.shard(rank, world)
        return self

    def record(self) -> dict:
        """What a checkpoint keeps of the data (``"data_info"``): :func:`dan.data.data_info_dict`
        of its info and class names, and ``"sizes"``: the images of the training split (its
        held-out part included) and of the test split, which a resume compares
        (:func:`dan.loop.check_same_data`)."""
        d = data_info_dict(self.info, self.class_names)
        sizes = [getattr(loader, "total", None) for loader in (self.train, self.holdout, self.test)]
        if sizes[0] is not None and sizes[2] is not None:
            d["sizes"] = {"train": sizes[0] + (sizes[1] or 0), "test": sizes[2]}
        return d


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _drop_last(n: int, batch_size: int) -> bool:
    return math.ceil(n / batch_size) >= 2  # never drop the only batch of a small split


def _batch_size(cfg: DataConfig, split: str, eval_bs: int) -> int:
    if split == "holdout" and cfg.holdout_batch_size:
        return cfg.holdout_batch_size
    return cfg.batch_size if split in ("train", "holdout") else eval_bs


class _Sharded:
    """What both loaders share: epochs, length, and the per-rank share of a split."""

    total: int
    rank: int = 0
    world: int = 1

    def shard(self, rank: int, world: int) -> None:
        """Distributed training: this process sees every world-th image of each epoch's order.
        Shuffled (training) shards are cut to equal sizes, so every rank runs as many steps."""
        self.rank, self.world = rank, world
        self.num_samples = self.total // world if self.shuffle else len(range(rank, self.total, world))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return _num_batches(self.num_samples, self.batch_size, self.drop_last)

    def _order(self) -> Optional[torch.Tensor]:
        """This rank's indices of the epoch (None: all, in order, single process)."""
        if self.world == 1 and not self.shuffle:
            return None
        order = torch.randperm(self.total, generator=generator(self.seed, self.epoch, self.split)) \
            if self.shuffle else torch.arange(self.total)
        return order[self.rank::self.world][: self.num_samples] if self.world > 1 else order


# --------------------------------------------------------------------------- in-memory sets

class TensorLoader(_Sharded):
    """Batches of an in-memory uint8 (N, C, H, W) split, normalized (and augmented) on its device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, mean: tuple,
                 std: tuple, seed: int, split: str, shuffle: bool, recipe: Optional[AugmentRecipe],
                 drop_last: bool, size: Optional[int] = None):
        self.images, self.labels = images, labels
        # a side other than the images': batches are resized (bilinear) after augmentation
        self.size = size if size is not None and (size, size) != tuple(images.shape[2:]) else None
        self.batch_size, self.num_samples = batch_size, len(labels)
        self.shuffle, self.recipe, self.drop_last = shuffle, recipe, drop_last
        self.seed, self.split, self.epoch = seed, SPLIT_IDS[split], 0
        dev = images.device
        # (x/255 - mean)/std as x * scale + shift
        self._scale = (1 / (255 * torch.tensor(std, device=dev))).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(mean, device=dev) / torch.tensor(std, device=dev)).view(1, -1, 1, 1)
        self._grid = pixel_grid(images.shape[2], images.shape[3], dev) if recipe else None
        self.total = len(labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()  # the same order on every rank, then this rank's share
        if order is not None:
            order = order.to(self.images.device)
        g = generator(self.seed, self.epoch, self.split, 1000 + self.rank)  # this rank's augmentations
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is None:
                x, y = self.images[sl], self.labels[sl]
            else:
                idx = order[sl]
                x, y = self.images[idx], self.labels[idx]
            x = augment_batch(x, self.recipe, g, self._grid) if self.recipe else x.float()
            x = x * self._scale + self._shift  # grey images with 3-channel statistics become 3 channels
            if self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=self.size < x.shape[2])
            yield x, y


def _tensor_data(arrays: ArraySplits, cfg: DataConfig, info: DatasetInfo, seed: int,
                 device: torch.device) -> Data:
    """Put an in-memory dataset on ``device`` and wrap its splits in :class:`TensorLoader` s."""

    def tensors(x, y, idx=None):  # writable C-contiguous copies (the cached arrays are read-only)
        x, y = (x[idx.numpy()], y[idx.numpy()]) if idx is not None else (x, y)
        x, y = np.array(x, order="C"), np.array(y, np.int64)
        x = torch.from_numpy(x)
        if info.in_channels == 1 and x.shape[1] == 3:  # data.channels: 1, colour made grey once, as 8 bits
            x = torch.cat([to_grey(c.float()).round_().to(torch.uint8) for c in x.split(4096)])
        return x.to(device), torch.from_numpy(y).to(device)

    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    aug = arrays.recipe if cfg.augment else None

    def loader(x, y, split, train):
        bs = _batch_size(cfg, split, eval_bs)
        return TensorLoader(x, y, bs, mean=info.mean, std=info.std, seed=seed, split=split, shuffle=train,
                            recipe=aug if train else None, drop_last=train and _drop_last(len(y), bs),
                            size=info.image_size)

    xtr, ytr = arrays.train_x, arrays.train_y
    tr_idx, ho_idx = split_indices(len(ytr), cfg, seed)
    data = Data(info, loader(*tensors(xtr, ytr, tr_idx), "train", True),
                loader(*tensors(arrays.test_x, arrays.test_y), "test", False))
    if ho_idx is not None:
        hx, hy = tensors(xtr, ytr, ho_idx)
        data.holdout, data.holdout_eval = loader(hx, hy, "holdout", True), loader(hx, hy, "holdout_eval", False)
    return data


# --------------------------------------------------------------------------- image folders

class _FolderSplit(IndexedSplit):
    """Images ``indices`` of an image folder; random transforms run under the generator seeded per
    (epoch seed, position) (:class:`~dan.data.splits.IndexedSplit`)."""

    def __init__(self, folder, indices: Optional[torch.Tensor], transform, random: bool):
        super().__init__(indices, len(folder))
        self.folder, self.transform, self.random = folder, transform, random

    def __getitem__(self, i: int):
        with pillow_limit_off():  # a random crop of a large image is checked too (data.max_image_pixels decides)
            return self._read(i)

    def _read(self, i: int):
        path, y = self.folder.samples[self.indices[i]]
        try:
            img = self.folder.loader(path)
        except UserError:  # a readable image the loader refuses says why itself
            raise
        except Exception as e:  # truncated, corrupt or unreadable: name the file (one line)
            if out_of_memory(e):  # a good image the memory left cannot hold is not to be deleted
                raise
            raise UserError(f"cannot read image {path} ({type(e).__name__}: {' '.join(str(e).split())[:120]}): "
                            f"delete or replace it") from None
        if not self.random:
            return self.transform(img), y
        with seeded(self.epoch_seed, i):
            return self.transform(img), y


class FolderLoader(_Sharded):
    """A DataLoader over an image folder or your own Dataset (``ds``: an
    :class:`~dan.data.splits.IndexedSplit`); batches are moved to ``device`` by the loader."""

    def __init__(self, ds: IndexedSplit, batch_size: int, *, seed: int, split: str, shuffle: bool,
                 drop_last: bool, workers: int, device: torch.device):
        self.ds, self.batch_size, self.num_samples = ds, batch_size, len(ds)
        self.seed, self.split, self.epoch = seed, SPLIT_IDS[split], 0
        self.shuffle, self.drop_last, self.workers, self.device = shuffle, drop_last, workers, device
        self.total = len(ds)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.ds.epoch_seed = mixed_seed(self.seed, self.epoch, self.split)
        cuda = self.device.type == "cuda"
        # the epoch's order is the in-memory loader's (_order): the same images in the same order as
        # TensorLoader gives them (a shuffling DataLoader would first draw its workers' base seed from
        # the generator, and then another order); the generator only seeds the workers
        order = self._order()
        dl = torch.utils.data.DataLoader(
            self.ds, self.batch_size, sampler=None if order is None else order.tolist(), num_workers=self.workers,
            pin_memory=cuda, drop_last=self.drop_last, generator=generator(self.seed, self.epoch, self.split))
        batches = iter(dl)
        # read here (no worker processes): the images' seeding moves NumPy's and Python's generators
        keep = kept_host_random if self.workers == 0 else contextlib.nullcontext
        try:
            while True:
                with keep():
                    batch = next(batches, None)
                if batch is None:
                    break
                x, y = batch
                yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)
        except UserError as e:  # from a worker process its text carries the worker's traceback
            raise UserError(next((l.split("UserError: ", 1)[1] for l in str(e).splitlines()
                                  if "UserError: " in l), str(e).splitlines()[0])) from None
        finally:
            # the worker processes end with the loop, however it ends: an exception raised while
            # waiting for a batch (Ctrl-C) holds the DataLoader's iterator in its traceback's frames,
            # and its workers lived as long as a notebook kept the exception (an audit's)
            stop = getattr(batches, "_shutdown_workers", None)  # (PyTorch's own, which its __del__ calls)
            if stop is not None:
                stop()


def _folder_data(folders: FolderSplits, cfg: DataConfig, info: DatasetInfo, seed: int,
                 device: torch.device) -> Data:
    """Wrap an image folder's splits in :class:`FolderLoader` s (``val/`` is the test split)."""
    train_tf, eval_tf = folder_transforms(info.image_size, info.mean, info.std, cfg.augment)

    def split(folder, idx, name, train):
        return _FolderSplit(folder, idx, train_tf if train else eval_tf, random=train and cfg.augment)

    data = _worker_data(folders.train, folders.test, split, cfg, info, seed, device)
    data.class_names = list(folders.train.classes)
    return data


def _user_data(splits: DatasetSplits, cfg: DataConfig, info: DatasetInfo, seed: int,
               device: torch.device) -> Data:
    """Wrap your own Datasets (:mod:`dan.data.code`) in :class:`FolderLoader` s."""

    def split(ds, idx, name, train):
        return UserSplit(ds, idx, info, "test" if name == "test" else "train", resize=cfg.image_size is not None,
                         keys=cfg.item_keys, grey=cfg.channels == 1)

    data = _worker_data(splits.train, splits.test, split, cfg, info, seed, device)
    names = split_class_names(splits, cfg.item_keys)  # small.json and the checkpoints record them, as
    # plain strings: numpy ones (list(np.unique(labels))) made checkpoints weights_only cannot read
    data.class_names = None if names is None else [str(n.item() if hasattr(n, "item") else n) for n in names]
    return data


def _worker_data(train, test, split, cfg: DataConfig, info: DatasetInfo, seed: int, device: torch.device) -> Data:
    """:class:`FolderLoader` s over ``split(source, indices, split name, shuffled)`` of the
    ``train`` and ``test`` sources: the training split less its held-out part, the test split, and
    (``cfg.holdout``) the held-out part, shuffled and in order."""
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size

    def loader(source, idx, name, train_):
        ds = split(source, idx, name, train_)
        bs = _batch_size(cfg, name, eval_bs)
        return FolderLoader(ds, bs, seed=seed, split=name, shuffle=train_, workers=cfg.workers,
                            drop_last=train_ and _drop_last(len(ds), bs), device=device)

    tr_idx, ho_idx = split_indices(len(train), cfg, seed)
    data = Data(info, loader(train, tr_idx, "train", True), loader(test, None, "test", False))
    if ho_idx is not None:
        data.holdout = loader(train, ho_idx, "holdout", True)
        data.holdout_eval = loader(train, ho_idx, "holdout_eval", False)
    return data


def build_user_data(splits: DatasetSplits, cfg: DataConfig, *, seed: int,
                    device: Union[torch.device, str] = "cpu") -> Data:
    """:func:`build_data` for your own Datasets given as objects (``dan.search(model, (train, test))``)."""
    _check_batches(cfg)
    return _user_data(splits, _workers_here(cfg, None), splits_info(splits, cfg), seed, torch.device(device))


def _check_batches(cfg: DataConfig) -> None:
    if cfg.batch_size < 1 or (cfg.eval_batch_size is not None and cfg.eval_batch_size < 1) or cfg.workers < 0:
        raise UserError("batch_size and eval_batch_size must be positive and workers >= 0: fix the data config")


# --------------------------------------------------------------------------- building

def build_data(cfg: DataConfig, *, seed: int, device: Union[torch.device, str] = "cpu",
               log: Optional[Callable[[str], None]] = None) -> Data:
    """Load ``cfg.dataset`` and wrap its splits in loaders (see the module docstring).

    Args:
        cfg: the data section of the run's config.
        seed: the run seed; subset, holdout split, shuffling and augmentation derive from it.
        device: where batches are delivered (in-memory sets live there entirely).
        log: given a line saying what was found (an image folder's image and class counts).
    Returns:
        :class:`Data` with ``train``, ``test`` and, when ``cfg.holdout > 0``, ``holdout`` and
        ``holdout_eval`` loaders.
    """
    info = dataset_info(cfg)
    _check_batches(cfg)
    device = torch.device(device)
    splits = get_dataset(cfg.dataset).load(cfg, info)
    if isinstance(splits, FolderSplits):
        if log is not None:
            log(splits.summary())
        data = _folder_data(splits, _workers_here(cfg, log), info, seed, device)
    elif isinstance(splits, DatasetSplits):
        data = _user_data(splits, _workers_here(cfg, log), info, seed, device)
    else:
        data = _tensor_data(splits, cfg, info, seed, device)
    _note_one_step(data, cfg, log)
    return data


def _note_one_step(data: Data, cfg: DataConfig, log: Optional[Callable[[str], None]]) -> None:
    """Say when the batch is larger than the training split: every epoch is then one step (an
    audit's ResNet-50 on a small image folder with the ImageNet config's batch took one optimizer
    step per epoch, without a word)."""
    n = getattr(data.train, "total", None)
    if log is not None and n is not None and 0 < n < cfg.batch_size:
        log(f"note: data.batch_size {cfg.batch_size} is more than the training split's {n} images: every epoch is "
            f"one step (lower {spelt('--batch-size', 'data.batch_size')} for more)")


def _workers_here(cfg: DataConfig, log: Optional[Callable[[str], None]]) -> DataConfig:
    """``cfg`` with at most as many loader workers as this process may use CPUs: the ImageNet
    config's 8 on a 2-core machine printed PyTorch's three-line warning twice an epoch (74 lines of
    stderr in 14 epochs), and more workers than cores only contend. The batches do not depend on
    the number of workers (the module docstring), so nothing else changes."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cfg.workers <= cpus:
        return cfg
    if log is not None:
        log(f"note: data.workers {cfg.workers} is more than the {cpus} CPUs this process may use: {cpus} used")
    return dataclasses.replace(cfg, workers=cpus)
