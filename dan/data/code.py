"""Your own dataset: ``data.dataset: package.module:function``, or Dataset objects from Python.

``data.dataset: mypkg.data:splits`` (in your config, ``--dataset mypkg.data:splits`` or ``--set
data.dataset=...``; ``data.args`` are its keyword arguments) names a function that returns
``(train, test)``: two map-style ``torch.utils.data.Dataset`` s (``len(ds)`` and ``ds[i]``). From
Python, ``dan.search(model, (train, test))`` takes the two objects themselves.

An item is ``(image, label)``, or a dict holding both (Hugging Face datasets): ``data.item_keys``
names the image's and the label's keys; unset, the image is whichever one of ``image``, ``img`` and
``pixel_values`` the item has and the label ``label`` or ``labels``:

* ``image``: a tensor ``C x H x W`` (or ``H x W``), float as the network should see it (your
  transform normalizes and augments; DAN adds nothing) or uint8 (scaled to [0, 1]); or a PIL image
  or an ``H x W x C`` array (converted as ``torchvision.transforms.ToTensor`` does). Every image of
  both splits has the first training image's size, or, with ``data.image_size``, is resized to that
  square (non-square images need it). The network's channels come from :data:`SAMPLED_ITEMS`
  training images spread over the split: colour if any of them is (grey images are repeated), else
  theirs; a colour image met later by a network sized grey is refused, naming ``data.channels``.
  ``data.channels: 3`` repeats grey images, ``data.channels: 1`` makes colour ones grey (luma,
  :data:`dan.data.augment.GREY`).
* ``label``: an integer in ``[0, num_classes)``. The class count is ``data.num_classes``, else the
  length of the training set's ``classes`` (torchvision's datasets have one), else its label
  feature's ``num_classes`` (a Hugging Face ``ClassLabel``), else the largest of its ``targets``
  plus one; a dataset with none of them needs ``data.num_classes``.

Items are checked as they are read; a wrong one stops the run with one line naming the split, the
index and the fix. Every item (of every split: the held-out part comes from the training Dataset,
random transform and all) is read under a torch generator seeded per (seed, epoch, split,
position), so transforms that draw from torch's generator (torchvision's do) give the same run for
the same seed whatever ``data.workers``. ``data.augment`` does not apply (the transforms
are yours); ``train_subset`` and ``holdout`` do, and ``data.data`` and ``data.download`` are refused
(pass a folder in ``data.args``).

**Trust.** The function is imported only if you named it (on the command line or in your own
config: :func:`dan.models.trust`); a name read from an ``arch.json`` is not trusted by being there.
"""

from __future__ import annotations

import inspect
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F

from dan.config import DataConfig
from dan.data.augment import to_grey
from dan.data.info import DatasetInfo, DatasetSpec, register_resolver
from dan.data.splits import IndexedSplit, seeded
from dan.errors import UserError, add_note, setting
from dan.seed import kept_host_random

_CODE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_OBJECT = re.compile(r"<object [\w.]+>")
IMAGE_KEYS = ("image", "img", "pixel_values")  # a dict item's image and label, unless data.item_keys
LABEL_KEYS = ("label", "labels")                # names them (Hugging Face datasets' names)


@dataclass
class DatasetSplits:
    """Your own dataset: its ``train`` and ``test`` map-style Datasets, and the name it goes by
    (``data.dataset``)."""

    train: Any
    test: Any
    name: str
    # splits_info's answers by the settings it reads: a search described the same dataset up to
    # three times (dataset_info in the search, its data and its retrain), reading its 8 sampled
    # items each time, which a slow remote dataset felt
    described: dict = field(default_factory=dict, repr=False, compare=False)


def object_name(train) -> str:
    """What ``data.dataset`` records for a dataset passed to :func:`dan.search` as objects."""
    return f"<object {type(train).__name__}>"


def as_splits(out, name: str) -> DatasetSplits:
    """``(train, test)`` checked: two non-empty map-style Datasets."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise UserError(f"dataset '{name}' gave a {type(out).__name__}: give (train, test), two torch Datasets")
    for split, ds in zip(("train", "test"), out):
        stream = isinstance(ds, torch.utils.data.IterableDataset)
        if stream or not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
            raise UserError(f"dataset '{name}': its {split} split is a {type(ds).__name__}, not a map-style "
                            f"Dataset (len(ds) and ds[i]; an IterableDataset cannot be split or shuffled by seed)")
        try:
            n = len(ds)
        except (TypeError, ValueError, OverflowError) as e:  # __len__ gave no size
            raise UserError(f"dataset '{name}': len() of its {split} split fails ({e}): return the number "
                            f"of items") from None
        if n < (2 if split == "train" else 1):
            raise UserError(f"dataset '{name}': its {split} split has {n} items: give it "
                            f"{'at least two' if split == 'train' else 'at least one'}")
    return DatasetSplits(out[0], out[1], name)


_LAST: dict = {}  # the last function's splits by (name, args): describing and loading call it once


def call_splits(cfg: DataConfig) -> DatasetSplits:
    """Call the function ``cfg.dataset`` names with ``cfg.args`` (once per process for the same
    name and arguments) and check what it returns."""
    from dan.models import user_function

    key = (cfg.dataset, repr(cfg.args))
    if key not in _LAST:
        fn = user_function(cfg.dataset, "dataset", "--dataset")
        args = dict(cfg.args or {})
        try:
            inspect.signature(fn).bind(**args)
        except TypeError as e:
            raise UserError(f"dataset '{cfg.dataset}' cannot take data.args {args} ({e}): fix data.args") from None
        except ValueError:  # no signature to read (a builtin): let the call say
            pass
        splits = as_splits(fn(**args), cfg.dataset)
        _LAST.clear()
        _LAST[key] = splits
    return _LAST[key]


def to_image(x, where: str) -> torch.Tensor:
    """An item's image as a float ``C x H x W`` tensor (see the module docstring)."""
    if not isinstance(x, torch.Tensor):
        try:
            from torchvision.transforms.functional import to_tensor

            x = to_tensor(x)
        except (TypeError, ValueError) as e:  # neither an image nor an array of one
            why = f" of shape {x.shape}" if hasattr(x, "shape") else ""
            raise UserError(f"{where}: its image is a {type(x).__name__}{why} ({str(e).splitlines()[0][:80]}): "
                            f"give a tensor C x H x W (e.g. with torchvision.transforms.ToTensor()), a PIL image "
                            f"or an H x W x C array") from None
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3 or min(x.shape) < 1:
        raise UserError(f"{where}: its image has shape {tuple(x.shape)}: give C x H x W")
    if x.shape[-1] in (1, 3, 4) and min(x.shape[:2]) > 4:  # e.g. Hugging Face's with_format("torch")
        raise UserError(f"{where}: its image tensor is {'x'.join(map(str, x.shape))}, channels last: give C x H "
                        f"x W (x.permute(2, 0, 1)), or the PIL image or array itself (converted as ToTensor does)")
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    if not x.is_floating_point():
        raise UserError(f"{where}: its image is {x.dtype}: give float (as the network sees it) or uint8 pixels")
    return x.float()


def to_label(y, num_classes: int, where: str) -> int:
    """An item's label as an int in ``[0, num_classes)``."""
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not (y.is_floating_point() or y.is_complex()
                                                               or y.dtype == torch.bool):
        y = int(y)
    elif isinstance(y, numbers.Integral) and not isinstance(y, bool):
        y = int(y)
    else:
        raise UserError(f"{where}: its label {y!r:.60} is not an integer class index: give an int")
    if not 0 <= y < num_classes:
        raise UserError(f"{where}: its label {y} is outside 0..{num_classes - 1} ({num_classes} classes): fix "
                        f"the labels, or set data.num_classes")
    return y


def _count_classes(ds, name: str, keys: Optional[list] = None) -> int:
    """The training set's class count: ``classes``, else a Hugging Face dataset's label feature
    (``features[label key].num_classes``), else ``targets``; looks through wrappers with a
    ``dataset`` attribute (``torch.utils.data.Subset``)."""
    seen = 0
    while ds is not None and seen < 8:
        classes, targets = getattr(ds, "classes", None), getattr(ds, "targets", None)
        if isinstance(classes, (list, tuple)) and classes:
            return len(classes)
        n = _feature_classes(getattr(ds, "features", None), keys)
        if n:
            return n
        if targets is not None:
            return _count_targets(targets, name)
        ds, seen = getattr(ds, "dataset", None), seen + 1
    raise UserError(f"dataset '{name}': its training set has no `classes` or `targets` to count the classes "
                    f"from: set data.num_classes")


def class_names(ds, keys: Optional[list] = None) -> Optional[list]:
    """A split's class names in label order, where it has them: ``classes`` (torchvision's
    datasets), else a Hugging Face label feature's ``names``; looks through wrappers with a
    ``dataset`` attribute (``torch.utils.data.Subset``). None when it has neither."""
    seen = 0
    while ds is not None and seen < 8:
        classes = getattr(ds, "classes", None)
        if isinstance(classes, (list, tuple)) and classes:
            return list(classes)
        features = getattr(ds, "features", None)
        if isinstance(features, Mapping):
            for key in [keys[1]] if keys else [k for k in LABEL_KEYS if k in features]:
                names = getattr(features.get(key), "names", None)
                if isinstance(names, (list, tuple)) and names:
                    return list(names)
        ds, seen = getattr(ds, "dataset", None), seen + 1
    return None


def split_class_names(splits: DatasetSplits, keys: Optional[list]) -> Optional[list]:
    """The training split's class names, after checking that the test split, when it names its
    classes too, names the same ones in the same order: an audit's torchvision ImageFolders whose
    val/ spelt a class ``Dog`` sorted it first, and the test labels of cat and dog were swapped
    without a word (the built-in imagefolder refuses such a pair)."""
    train, test = class_names(splits.train, keys), class_names(splits.test, keys)
    if train is not None and test is not None and train != test:
        diff = [f"train {a!r} vs test {b!r}" for a, b in zip(train, test) if a != b][:2] or \
            [f"{len(train)} vs {len(test)} classes"]
        raise UserError(f"dataset '{splits.name}': its train and test splits name different classes for the same "
                        f"labels ({'; '.join(diff)}): a label would mean one class in training and another in "
                        f"testing; give both splits the same classes (for ImageFolder: the same class folders)")
    return train


def _feature_classes(features, keys: Optional[list]) -> Optional[int]:
    """The class count of a Hugging Face ``ClassLabel`` feature under the label key, if there is one."""
    if not isinstance(features, Mapping):
        return None
    for key in [keys[1]] if keys else [k for k in LABEL_KEYS if k in features]:
        n = getattr(features.get(key), "num_classes", None)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return None


def _count_targets(targets, name: str) -> int:
    """The largest of ``targets`` (integer class indices) plus one."""
    try:
        t = torch.as_tensor(targets)
        ok = t.ndim == 1 and t.numel() > 0 and not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        ok = False
    if not ok or int(t.min()) < 0:
        raise UserError(f"dataset '{name}': its training set's `targets` are not a list of class indices (ints "
                        f">= 0) to count the classes from: fix them or set data.num_classes")
    return int(t.max()) + 1


# Training items read to decide the input channels. An audit's dataset whose item 0 was grey and
# the rest colour got a 1-channel network and every colour image silently made grey.
SAMPLED_ITEMS = 8


def sampled_positions(n: int, k: int = SAMPLED_ITEMS) -> list[int]:
    """Up to ``k`` positions spread evenly over ``n`` items, the first and the last among them."""
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if n > 1 else [0]


def _input_channels(seen: dict, cfg: DataConfig, name: str) -> int:
    """The network's input channels from ``seen`` (training position -> image channels): colour
    when any sampled image is (grey ones are then repeated), else what they all have; or
    ``cfg.channels`` when it can be made from them."""
    counts = sorted(set(seen.values()))
    if len(counts) > 1 and counts != [1, 3]:
        first = {c: j for j, c in reversed(list(seen.items()))}  # the first item of each count
        at = ", ".join(f"item {first[c]}: {c}" for c in counts)
        raise UserError(f"dataset '{name}': its training images have different channel counts ({at}): give "
                        f"every image the same, e.g. image.convert('RGB') in your transform")
    c = counts[-1]
    if cfg.channels not in (None, c) and (cfg.channels, c) not in ((3, 1), (1, 3)):
        raise UserError(f"data.channels {cfg.channels}: grey images can be given 3 channels (repeated) and colour "
                        f"ones 1 (made grey), and {name}'s have {c}; drop data.channels")
    return cfg.channels or c


def splits_info(splits: DatasetSplits, cfg: DataConfig) -> DatasetInfo:
    """Shapes and class count of your dataset: the side from its first training image, the
    channels from :data:`SAMPLED_ITEMS` training images spread over the split (and ``cfg``); read
    once per splits and settings."""
    # (with the split's length: a Dataset changed in place between two runs of a notebook is read again)
    key = (cfg.num_classes, cfg.channels, cfg.image_size, repr(cfg.item_keys), len(splits.train))
    if key not in splits.described:
        splits.described[key] = _describe(splits, cfg)
    return splits.described[key]


def _describe(splits: DatasetSplits, cfg: DataConfig) -> DatasetInfo:
    name, seen = splits.name, {}
    for j in sampled_positions(len(splits.train)):
        where = f"dataset '{name}', train item {j}"
        # a random transform draws here without moving the run's own generators
        with seeded(0, j), kept_host_random():
            x = to_image(_item(splits.train, j, where, cfg.item_keys)[0], where)
        seen[j] = x.shape[0]
        if j == 0:
            h, w = x.shape[1:]
    if h != w and cfg.image_size is None:
        raise UserError(f"dataset '{name}': its images are {h}x{w}, the networks take square ones: set "
                        f"data.image_size (every image is resized to it) or crop in your transform")
    k = cfg.num_classes or _count_classes(splits.train, name, cfg.item_keys)
    if not 2 <= k <= 1_000_000:
        raise UserError(f"dataset '{name}' has {k} classes (counted from its training set): a classifier needs "
                        f"2 to 1,000,000; fix the labels or set data.num_classes")
    c = _input_channels(seen, cfg, name)
    split_class_names(splits, cfg.item_keys)
    return DatasetInfo(name, k, c, cfg.image_size or h, (0.0,) * c, (1.0,) * c)


def _item(ds, j: int, where: str, keys: Optional[list] = None):
    """Item ``j`` of ``ds`` as ``(image, label)``: a tuple's first two, or a dict's by ``keys``
    (``data.item_keys``), else by the one of :data:`IMAGE_KEYS` and of :data:`LABEL_KEYS` it has."""
    try:
        item = ds[j]
    except Exception as e:
        # the error is in the dataset's own code, and its traceback is what finds it; the note says
        # which item of which split it was reading
        add_note(e, f"(raised while reading {where}: the lines above are your dataset's code; a run's "
                    f"finished epochs, if any, are kept)")
        raise
    if isinstance(item, Mapping):  # Hugging Face datasets give {"image": ..., "label": ...}
        return _from_dict(item, keys, where)
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise UserError(f"{where} is a {type(item).__name__}: give (image, label)")
    return item


def _from_dict(item: Mapping, keys: Optional[list], where: str):
    have = ", ".join(map(str, list(item)[:8])) or "none"
    if keys:
        missing = [k for k in keys if k not in item]
        if missing:
            raise UserError(f"{where} is a dict without {', '.join(missing)} (data.item_keys; its keys: {have}): "
                            f"set data.item_keys to [image key, label key]")
        return item[keys[0]], item[keys[1]]
    image, label = ([k for k in names if k in item] for names in (IMAGE_KEYS, LABEL_KEYS))
    if len(image) != 1 or len(label) != 1:
        raise UserError(f"{where} is a dict with keys {have}: name its image and its label key, e.g. "
                        f"{setting('data.item_keys=[img,fine_label]')}")
    return item[image[0]], item[label[0]]


class UserSplit(IndexedSplit):
    """Items ``indices`` of your Dataset ``ds``, each read under the generator seeded per (epoch
    seed, position) (:class:`~dan.data.splits.IndexedSplit`), converted and checked (the module
    docstring). Every split is read so, the evaluated ones too: the held-out part comes from the
    training Dataset, whose transform is usually random, and an unseeded draw there would make the
    same seed score widths differently."""

    def __init__(self, ds, indices: Optional[torch.Tensor], info: DatasetInfo, split: str, resize: bool,
                 keys: Optional[list] = None, grey: bool = False):
        super().__init__(indices, len(ds))
        self.ds, self.info, self.split, self.resize, self.keys = ds, info, split, resize, keys
        self.grey = grey  # data.channels: 1, colour images are made grey (else a colour one is refused)

    def __getitem__(self, i: int):
        j, info = self.indices[i], self.info
        where = f"dataset '{info.name}', {self.split} item {j}"
        with seeded(self.epoch_seed, i):
            item = _item(self.ds, j, where, self.keys)
        x = to_image(item[0], where)
        s = info.image_size
        if self.resize and tuple(x.shape[1:]) != (s, s):
            x = F.interpolate(x[None], size=(s, s), mode="bilinear", antialias=True, align_corners=False)[0]
        return self._channels(x, where), to_label(item[1], info.num_classes, where)

    def _channels(self, x: torch.Tensor, where: str) -> torch.Tensor:
        """``x`` with the network's channels and checked against its input shape."""
        c, s = self.info.in_channels, self.info.image_size
        if x.shape[0] == 1 and c == 3:
            x = x.expand(3, -1, -1)
        elif x.shape[0] == 3 and c == 1:
            if not self.grey:  # made grey in silence, the colour a class differs by was lost
                raise UserError(f"{where}: its image is colour, and the training images read to size the network "
                                f"were grey (1 channel): set data.channels=3 (grey images repeated) or "
                                f"data.channels=1 (colour ones made grey)")
            x = to_grey(x)
        if x.shape[0] != c:
            raise UserError(f"{where}: its image has {x.shape[0]} channels, the network takes {c} (from the training "
                            f"images): give every image the same, e.g. image.convert('RGB') in your transform")
        if tuple(x.shape[1:]) != (s, s):
            raise UserError(f"{where}: its image is {'x'.join(map(str, x.shape))}, the first training image "
                            f"{c}x{s}x{s}: give every image one size (or set data.image_size: each is resized to it)")
        return x.contiguous()


def _spec(name: str) -> Optional[DatasetSpec]:
    """The :class:`DatasetSpec` of a ``package.module:function`` name; None for other names."""
    if _OBJECT.fullmatch(name):
        raise UserError(f"this run's data was given to dan.search as Python objects ({name[8:-1]}): continue "
                        f"or retrain it from Python with the same objects, or name a function returning them "
                        f"(--dataset package.module:function)")
    if ":" not in name:
        return None
    if not _CODE.fullmatch(name):
        raise UserError(f"dataset '{name}': write your dataset as package.module:function")
    return DatasetSpec(name, lambda cfg: splits_info(call_splits(cfg), cfg),
                       lambda cfg, info: call_splits(cfg), "your own dataset (dan.data.code)")


register_resolver(_spec)
