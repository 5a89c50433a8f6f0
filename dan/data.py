"""Datasets by name, fast loaders and the paper's augmentations (appendix B).

``build_data(cfg.data, seed=..., device=...)`` returns a :class:`Data` with a shuffled, augmented
``train`` loader, an unshuffled ``test`` loader and, when ``cfg.holdout > 0``, a held-out part of the
*training* split (``holdout`` for architecture steps, ``holdout_eval`` for monitoring).
``dataset_info(cfg)`` gives the shapes and class count without loading images.

Two kinds of loader, one interface (iterable over ``(x, y)``, ``len``, ``num_samples``,
``batch_size``, ``set_epoch``):

* :class:`TensorLoader` (``fashion_mnist``, ``cifar10/100``, ``synthetic``): the whole split is a
  uint8 NCHW tensor on the device. A batch is an index gather plus, when augmenting, ONE batched
  ``F.grid_sample``: flip, rotation, zoom/translation and perspective warp are composed into one
  3x3 homography per image; contrast and brightness are a per-image affine map of the values. No
  per-image Python, no worker processes (~100k augmented Fashion-MNIST images/s on 2 CPU cores).
* :class:`FolderLoader` (``imagefolder``): a ``torch.utils.data.DataLoader`` with torchvision
  transforms (RandomResizedCrop + flip; Resize + CenterCrop for evaluation). Batches are moved to
  the device by the loader, so both kinds deliver device tensors.

Determinism: the order and the augmentation of an epoch are a pure function of (seed, epoch,
split) through a private ``torch.Generator``; the global RNG is never used for data (folder
transforms run under a forked RNG seeded per image, so results do not depend on ``workers``).
Like ``DistributedSampler``, call ``set_epoch(epoch)`` before each epoch; iterating twice without
it repeats the same epoch. A train split with at least two batches drops its last partial batch.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
import dataclasses
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Union

import numpy as np
import torch
import torch.nn.functional as F

from dan.config import DataConfig
from dan.errors import UserError

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_SPLITS = {"train": 0, "test": 1, "holdout": 2, "holdout_eval": 3, "subset": 4, "split": 5}


@dataclass(frozen=True)
class AugmentRecipe:
    """The in-memory augmentation of appendix B; each ``p_*`` is the chance per image.

    Rotation by d ~ U(-max_rotate, max_rotate) degrees. Lighting: contrast factor
    U(1 - max_contrast, 1 + max_contrast) around the image mean, then a brightness shift
    U(-max_brightness, max_brightness) of the value range, clamped to the range. Warp/zoom: zoom
    U(1, max_zoom) towards a random point that keeps the view inside the image, and a perspective
    tilt whose bottom-row coefficients are U(-max_warp, max_warp) in [-1, 1] image coordinates.
    """
    p_flip: float = 0.5
    p_rotate: float = 0.75
    max_rotate: float = 25.0
    p_lighting: float = 0.75
    max_contrast: float = 0.2
    max_brightness: float = 0.1
    p_warp: float = 0.75
    max_zoom: float = 1.2
    max_warp: float = 0.2
    padding: str = "reflection"  # grid_sample padding_mode outside the image


CIFAR_RECIPE = AugmentRecipe()  # max_rotate 25 as in the paper
# Fashion-MNIST: max_rotate 10 (the paper's value for its smaller-image set); black background, so
# zero padding; milder zoom/warp because 28x28 garments fill the frame.
FASHION_MNIST_RECIPE = AugmentRecipe(max_rotate=10.0, max_zoom=1.1, max_warp=0.1, padding="zeros")
SYNTHETIC_RECIPE = AugmentRecipe(max_rotate=10.0, max_zoom=1.1, max_warp=0.1)


@dataclass
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple


class Loader(Protocol):
    batch_size: int
    num_samples: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class Data:
    info: DatasetInfo
    train: Loader
    test: Loader
    holdout: Optional[Loader] = None
    holdout_eval: Optional[Loader] = None

    def shard(self, rank: int, world: int) -> "Data":
        """Give this process its share of every split (distributed training)."""
        for loader in (self.train, self.test, self.holdout, self.holdout_eval):
            if loader is not None:
                loader.shard(rank, world)
        return self


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (``np.random.SeedSequence`` hashing)."""
    words = [w for p in parts for w in (int(p) & 0xFFFFFFFF, (int(p) >> 32) & 0xFFFFFFFF)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _drop_last(n: int, batch_size: int) -> bool:
    return math.ceil(n / batch_size) >= 2  # never drop the only batch of a small split


# --------------------------------------------------------------------------- in-memory path

def _identity_like(b: int) -> torch.Tensor:
    return torch.eye(3).expand(b, 3, 3).clone()


def random_homographies(b: int, recipe: AugmentRecipe, g: torch.Generator) -> torch.Tensor:
    """(b, 3, 3) maps from output to input coordinates in [-1, 1]: translate . zoom . rotate . flip
    . perspective. Always draws the same amount of randomness per image."""
    u = torch.rand(b, 8, generator=g)
    on = torch.rand(b, 3, generator=g) < torch.tensor([recipe.p_flip, recipe.p_rotate, recipe.p_warp])
    flip = torch.where(on[:, 0], -1.0, 1.0)
    ang = torch.where(on[:, 1], (2 * u[:, 0] - 1) * math.radians(recipe.max_rotate), 0.0)
    zoom = torch.where(on[:, 2], 1 + u[:, 1] * (recipe.max_zoom - 1), 1.0)
    room = 1 - 1 / zoom  # translation that keeps the zoomed view inside the image
    tx, ty = (2 * u[:, 2] - 1) * room, (2 * u[:, 3] - 1) * room
    px = torch.where(on[:, 2], (2 * u[:, 4] - 1) * recipe.max_warp, 0.0)
    py = torch.where(on[:, 2], (2 * u[:, 5] - 1) * recipe.max_warp, 0.0)
    c, s = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    k = _identity_like(b)
    k[:, 0, 0], k[:, 0, 1], k[:, 0, 2] = c * flip, -s, tx
    k[:, 1, 0], k[:, 1, 1], k[:, 1, 2] = s * flip, c, ty
    p = _identity_like(b)
    p[:, 2, 0], p[:, 2, 1] = px, py
    return k @ p


def random_lighting(b: int, recipe: AugmentRecipe, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image contrast factors and brightness shifts (fraction of the range), shape (b,)."""
    u = torch.rand(b, 3, generator=g)
    on = u[:, 0] < recipe.p_lighting
    contrast = torch.where(on, 1 + (2 * u[:, 1] - 1) * recipe.max_contrast, 1.0)
    bright = torch.where(on, (2 * u[:, 2] - 1) * recipe.max_brightness, 0.0)
    return contrast, bright


def _base_grid(h: int, w: int, device) -> torch.Tensor:
    """Homogeneous pixel-centre coordinates (h*w, 3) for ``align_corners=False``."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)


def augment_batch(x: torch.Tensor, recipe: AugmentRecipe, g: torch.Generator,
                  base_grid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """uint8/float (B, C, H, W) in [0, 255] -> augmented float32 in [0, 255], on x's device."""
    b, _, h, w = x.shape
    m = random_homographies(b, recipe, g).to(x.device)
    contrast, bright = (t.to(x.device).view(b, 1, 1, 1) for t in random_lighting(b, recipe, g))
    if base_grid is None:
        base_grid = _base_grid(h, w, x.device)
    pts = base_grid @ m.transpose(1, 2)  # (B, HW, 3)
    grid = (pts[..., :2] / pts[..., 2:]).view(b, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=recipe.padding, align_corners=False)
    mean = out.mean((1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + bright * 255.0).clamp_(0.0, 255.0)


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
        order = torch.randperm(self.total, generator=_generator(self.seed, self.epoch, self.split)) \
            if self.shuffle else torch.arange(self.total)
        return order[self.rank::self.world][: self.num_samples] if self.world > 1 else order


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
        self.seed, self.split, self.epoch = seed, _SPLITS[split], 0
        dev = images.device
        # (x/255 - mean)/std as x * scale + shift
        self._scale = (1 / (255 * torch.tensor(std, device=dev))).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(mean, device=dev) / torch.tensor(std, device=dev)).view(1, -1, 1, 1)
        self._grid = _base_grid(images.shape[2], images.shape[3], dev) if recipe else None
        self.total = len(labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()  # the same order on every rank, then this rank's share
        if order is not None:
            order = order.to(self.images.device)
        g = _generator(self.seed, self.epoch, self.split, 1000 + self.rank)  # this rank's augmentations
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
                x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                    align_corners=False, antialias=self.size < x.shape[2])
            yield x, y


# --------------------------------------------------------------------------- file formats

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str) -> np.ndarray:
    """Read a gzip-compressed IDX file (the MNIST format) into a uint8 array; corrupt -> UserError."""
    def bad(why: str) -> UserError:
        return UserError(f"{path} is corrupt ({why}): delete it and reinstall the dataset "
                         "(`apt-get install --reinstall dataset-fashion-mnist`) or pass another --data DIR")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise bad(f"cannot decompress: {e}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise bad("bad magic number")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise bad("truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    start, n = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) - start != n:
        raise bad(f"header says {n} values for shape {dims}, file holds {len(raw) - start}")
    return np.frombuffer(raw, _IDX_DTYPES[raw[2]], n, start).reshape(dims)


_FMNIST_CACHE: dict = {}


def load_fashion_mnist(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x (60000, 28, 28), train_y, test_x, test_y) as uint8; cached per folder and mtime."""
    paths = [os.path.join(folder, f) for f in FASHION_MNIST_FILES]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"Fashion-MNIST not found in {folder} (no {os.path.basename(missing[0])}): install it "
                        f"with `apt-get install dataset-fashion-mnist` or pass --data DIR holding "
                        f"{', '.join(FASHION_MNIST_FILES)}")
    key = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)
    if key not in _FMNIST_CACHE:
        arrays = [read_idx(p) for p in paths]
        for (x, y), p in ((arrays[0:2], paths[0]), (arrays[2:4], paths[2])):
            if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
                raise UserError(f"{p} does not hold 28x28 images matching its labels file: "
                                "reinstall dataset-fashion-mnist or pass another --data DIR")
            if y.size and y.max() > 9:
                raise UserError(f"labels next to {p} go up to {y.max()} (Fashion-MNIST has 10 classes): "
                                "reinstall dataset-fashion-mnist or pass another --data DIR")
        _FMNIST_CACHE.clear()
        _FMNIST_CACHE[key] = arrays
    return tuple(_FMNIST_CACHE[key])


def load_cifar(name: str, root: str, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x NHWC uint8, train_y, test_x, test_y) through torchvision's CIFAR classes."""
    import torchvision
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        tr, te = (cls(root=root, train=t, download=download) for t in (True, False))
    except RuntimeError as e:
        raise UserError(f"{name} not found or corrupt in {root} ({e.args[0].split('.')[0]}): pass --download "
                        f"(needs the network) or --data DIR holding torchvision's extracted {name} batches")
    except OSError as e:  # network errors while downloading
        raise UserError(f"downloading {name} into {root} failed ({e}): check the network or pass --data DIR")
    return tr.data, np.asarray(tr.targets), te.data, np.asarray(te.targets)


def synthetic_arrays(n_train: int, n_test: int, num_classes: int, size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Learnable images: a smooth random template per class plus pixel noise, balanced labels.

    Everything comes from a seed fixed by the dataset definition (not the run seed), so train and
    test share templates and every run sees the same data.
    """
    g = _generator(0x5E7, num_classes, size)
    low = torch.rand(num_classes, 3, 4, 4, generator=g) * 0.6 + 0.2
    templates = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)

    def split(n: int, tag: int):
        y = torch.arange(n) % num_classes
        gen = _generator(0x5E7, num_classes, size, tag)
        x = templates[y] + 0.15 * torch.randn(n, 3, size, size, generator=gen)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), y.numpy()
    return (*split(n_train, 1), *split(n_test, 2))


# --------------------------------------------------------------------------- dataset info

_STATIC = {  # name -> (classes, channels, size, mean, std); CIFAR uses ImageNet stats, as the paper
    "fashion_mnist": (10, 1, 28, (0.2860,), (0.3530,)),
    "cifar10": (10, 3, 32, IMAGENET_MEAN, IMAGENET_STD),
    "cifar100": (100, 3, 32, IMAGENET_MEAN, IMAGENET_STD),
}


def _folder_classes(cfg: DataConfig) -> tuple[str, list[str]]:
    root = cfg.data
    if not root:
        raise UserError("dataset imagefolder needs --data DIR holding train/ and val/ class folders")
    for sub in ("train", "val"):
        if not os.path.isdir(os.path.join(root, sub)):
            raise UserError(f"image folder {os.path.join(root, sub)} does not exist: pass --data DIR "
                            "holding train/<class>/*.jpg and val/<class>/*.jpg")
    classes = sorted(e.name for e in os.scandir(os.path.join(root, "train")) if e.is_dir())
    if not classes:
        raise UserError(f"{os.path.join(root, 'train')} holds no class folders: expected train/<class>/*.jpg")
    return root, classes


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Shapes, class count and normalization of ``cfg.dataset`` without loading any image."""
    name = cfg.dataset
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    if name == "synthetic":
        size, k = cfg.image_size or 32, cfg.num_classes or 10
        if size < 4 or k < 2:
            raise UserError(f"synthetic data needs image_size >= 4 and num_classes >= 2 (got {size}, {k})")
        return DatasetInfo(name, k, 3, size, (0.5,) * 3, (0.2,) * 3)
    if name == "imagefolder":
        k, size = len(_folder_classes(cfg)[1]), cfg.image_size or 224
        if k < 2:  # one class trains to a meaningless "100 %"
            raise UserError(f"{_folder_classes(cfg)[0]}/train holds {k} class folder: a classifier needs at "
                            f"least 2 (train/<class>/*.jpg for each class)")
        info = DatasetInfo(name, k, 3, size, IMAGENET_MEAN, IMAGENET_STD)
    else:
        info = DatasetInfo(name, *_STATIC[name])
        if cfg.image_size is not None:  # resized batches (e.g. 32x32 Fashion-MNIST for ConvNeXt)
            info = dataclasses.replace(info, image_size=cfg.image_size)
    if cfg.num_classes not in (None, info.num_classes):
        raise UserError(f"{name} has {info.num_classes} classes but num_classes is {cfg.num_classes}: "
                        "drop num_classes (it is for synthetic data)")
    if cfg.channels not in (None, info.in_channels):
        if cfg.channels != 3 or info.in_channels != 1 or name == "imagefolder":
            raise UserError(f"data.channels {cfg.channels}: only grey images can be given 3 channels "
                            f"(repeated), and {name} has {info.in_channels}; drop data.channels")
        info = dataclasses.replace(info, in_channels=3, mean=info.mean * 3, std=info.std * 3)
    return info


# --------------------------------------------------------------------------- splits and building

def _split_indices(n: int, cfg: DataConfig, seed: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Sorted (train, holdout) indices into the n training images after train_subset/holdout."""
    if not 0.0 <= cfg.holdout < 1.0:
        raise UserError(f"holdout must be a fraction in [0, 1), got {cfg.holdout}")
    idx = torch.arange(n)
    if cfg.train_subset is not None:
        if not 0 < cfg.train_subset <= n:
            raise UserError(f"train_subset must be in 1..{n} (the training images), got {cfg.train_subset}")
        idx = torch.randperm(n, generator=_generator(seed, _SPLITS["subset"]))[:cfg.train_subset]
    if cfg.holdout == 0:
        return idx.sort().values, None
    n_hold = round(cfg.holdout * len(idx))
    if not 0 < n_hold < len(idx):
        raise UserError(f"holdout {cfg.holdout} of {len(idx)} training images leaves an empty split: "
                        "change holdout or use more training images")
    perm = idx[torch.randperm(len(idx), generator=_generator(seed, _SPLITS["split"]))]
    return perm[n_hold:].sort().values, perm[:n_hold].sort().values


def build_data(cfg: DataConfig, *, seed: int, device: Union[torch.device, str] = "cpu") -> Data:
    """Load ``cfg.dataset`` and wrap its splits in loaders (see the module docstring).

    Args:
        cfg: the data section of the run's config.
        seed: the run seed; subset, holdout split, shuffling and augmentation derive from it.
        device: where batches are delivered (in-memory sets live there entirely).
    Returns:
        :class:`Data` with ``train``, ``test`` and, when ``cfg.holdout > 0``, ``holdout`` and
        ``holdout_eval`` loaders.
    """
    info = dataset_info(cfg)
    if cfg.batch_size < 1 or (cfg.eval_batch_size is not None and cfg.eval_batch_size < 1) or cfg.workers < 0:
        raise UserError("batch_size and eval_batch_size must be positive and workers >= 0: fix the data config")
    device = torch.device(device)
    if cfg.dataset == "imagefolder":
        return _build_folder(cfg, info, seed, device)
    if cfg.dataset == "fashion_mnist":
        xtr, ytr, xte, yte = load_fashion_mnist(cfg.data or FASHION_MNIST_DIR)
        xtr, xte, recipe = xtr[:, None], xte[:, None], FASHION_MNIST_RECIPE
    elif cfg.dataset == "synthetic":
        if cfg.synthetic_size < 2:
            raise UserError(f"synthetic_size must be at least 2, got {cfg.synthetic_size}")
        xtr, ytr, xte, yte = synthetic_arrays(cfg.synthetic_size, max(1, cfg.synthetic_size // 4),
                                              info.num_classes, info.image_size)
        recipe = SYNTHETIC_RECIPE
    else:
        xtr, ytr, xte, yte = load_cifar(cfg.dataset, cfg.data or os.path.join("data", cfg.dataset), cfg.download)
        xtr, xte, recipe = xtr.transpose(0, 3, 1, 2), xte.transpose(0, 3, 1, 2), CIFAR_RECIPE

    def tensors(x, y, idx=None):  # writable C-contiguous copies (the cached arrays are read-only)
        x, y = (x[idx.numpy()], y[idx.numpy()]) if idx is not None else (x, y)
        x, y = np.array(x, order="C"), np.array(y, np.int64)
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    aug = recipe if cfg.augment else None

    def loader(x, y, split, train):
        bs = _batch_size(cfg, split, eval_bs)
        return TensorLoader(x, y, bs, mean=info.mean, std=info.std, seed=seed, split=split, shuffle=train,
                            recipe=aug if train else None, drop_last=train and _drop_last(len(y), bs),
                            size=info.image_size)

    tr_idx, ho_idx = _split_indices(len(ytr), cfg, seed)
    data = Data(info, loader(*tensors(xtr, ytr, tr_idx), "train", True),
                loader(*tensors(xte, yte), "test", False))
    if ho_idx is not None:
        hx, hy = tensors(xtr, ytr, ho_idx)
        data.holdout, data.holdout_eval = loader(hx, hy, "holdout", True), loader(hx, hy, "holdout_eval", False)
    return data


def _batch_size(cfg: DataConfig, split: str, eval_bs: int) -> int:
    if split == "holdout" and cfg.holdout_batch_size:
        return cfg.holdout_batch_size
    return cfg.batch_size if split in ("train", "holdout") else eval_bs


# --------------------------------------------------------------------------- image folders

class _FolderSplit(torch.utils.data.Dataset):
    """Images ``indices`` of an ImageFolder; random transforms run under an RNG seeded per
    (epoch seed, position), so an epoch is reproducible whatever the number of workers."""

    def __init__(self, folder, indices: Optional[torch.Tensor], transform, random: bool):
        self.folder, self.transform, self.random, self.epoch_seed = folder, transform, random, 0
        self.indices = indices.tolist() if indices is not None else list(range(len(folder)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        path, y = self.folder.samples[self.indices[i]]
        try:
            img = self.folder.loader(path)
        except Exception as e:  # truncated, corrupt or unreadable: name the file (one line)
            raise UserError(f"cannot read image {path} ({type(e).__name__}: {' '.join(str(e).split())[:120]}): "
                            f"delete or replace it") from None
        if not self.random:
            return self.transform(img), y
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(self.epoch_seed, i))
            return self.transform(img), y


class FolderLoader(_Sharded):
    """A DataLoader over an image folder; batches are moved to ``device`` by the loader."""

    def __init__(self, ds: _FolderSplit, batch_size: int, *, seed: int, split: str, shuffle: bool,
                 drop_last: bool, workers: int, device: torch.device):
        self.ds, self.batch_size, self.num_samples = ds, batch_size, len(ds)
        self.seed, self.split, self.epoch = seed, _SPLITS[split], 0
        self.shuffle, self.drop_last, self.workers, self.device = shuffle, drop_last, workers, device
        self.total = len(ds)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.ds.epoch_seed = _seed(self.seed, self.epoch, self.split)
        cuda = self.device.type == "cuda"
        if self.world > 1:
            dl = torch.utils.data.DataLoader(
                self.ds, self.batch_size, sampler=self._order().tolist(),
                num_workers=self.workers, pin_memory=cuda, drop_last=self.drop_last)
        else:
            dl = torch.utils.data.DataLoader(
                self.ds, self.batch_size, shuffle=self.shuffle, num_workers=self.workers, pin_memory=cuda,
                drop_last=self.drop_last, generator=_generator(self.seed, self.epoch, self.split))
        try:
            for x, y in dl:
                yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)
        except UserError as e:  # from a worker process its text carries the worker's traceback
            raise UserError(next((l.split("UserError: ", 1)[1] for l in str(e).splitlines()
                                  if "UserError: " in l), str(e).splitlines()[0])) from None


def _build_folder(cfg: DataConfig, info: DatasetInfo, seed: int, device: torch.device) -> Data:
    from torchvision import datasets, transforms as T
    root, classes = _folder_classes(cfg)
    val_classes = sorted(e.name for e in os.scandir(os.path.join(root, "val")) if e.is_dir())
    if val_classes != classes:
        raise UserError(f"{root}/train and {root}/val hold different class folders "
                        f"({len(classes)} vs {len(val_classes)}): make them the same")
    size, norm = info.image_size, T.Normalize(info.mean, info.std)
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
                          T.RandomHorizontalFlip(), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor(), norm])
    if not cfg.augment:
        train_tf = eval_tf
    try:
        train_folder = datasets.ImageFolder(os.path.join(root, "train"))
        val_folder = datasets.ImageFolder(os.path.join(root, "val"))
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"cannot read image folder {root} ({str(e).splitlines()[0]}): fix its layout")
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size

    def loader(folder, idx, split, train):
        ds = _FolderSplit(folder, idx, train_tf if train else eval_tf, random=train and cfg.augment)
        bs = _batch_size(cfg, split, eval_bs)
        return FolderLoader(ds, bs, seed=seed, split=split, shuffle=train, workers=cfg.workers,
                            drop_last=train and _drop_last(len(ds), bs), device=device)

    tr_idx, ho_idx = _split_indices(len(train_folder), cfg, seed)
    data = Data(info, loader(train_folder, tr_idx, "train", True), loader(val_folder, None, "test", False))
    if ho_idx is not None:
        data.holdout = loader(train_folder, ho_idx, "holdout", True)
        data.holdout_eval = loader(train_folder, ho_idx, "holdout_eval", False)
    return data
