"""What a dataset looks like to a model, and the registry of datasets by name.

:class:`DatasetInfo` holds the shapes, class count and normalization of a dataset;
``dataset_info(cfg)`` gives them for ``cfg.dataset`` without loading any image. The registry
(:func:`register_dataset`, :func:`get_dataset`, :func:`list_datasets`) maps a name to a
:class:`DatasetSpec`; the datasets themselves register in :mod:`dan.data.datasets`, and
:mod:`dan.data.code` resolves ``package.module:function`` names (your own datasets), both imported
by ``dan/data/__init__.py``, so every name is known once ``dan.data`` is imported:

>>> from dan.config import DataConfig
>>> from dan.data import dataset_info, list_datasets
>>> list_datasets()
['fashion_mnist', 'cifar10', 'cifar100', 'imagefolder', 'synthetic']
>>> dataset_info(DataConfig(dataset="cifar10"))
DatasetInfo(name='cifar10', num_classes=10, in_channels=3, image_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

This module imports neither torch nor the loaders, so that model code can use the type cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from dan.config import DataConfig
from dan.errors import UserError, setting

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DatasetInfo:
    """A dataset as a model sees it: ``num_classes`` outputs, ``in_channels`` x ``image_size`` x
    ``image_size`` inputs normalized with the per-channel ``mean`` and ``std`` (of values in [0, 1])."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: the ``data.dataset`` value that selects it.
        info: ``info(cfg) -> DatasetInfo`` without loading images; raises UserError on a config
            the dataset cannot serve.
        load: ``load(cfg, info)`` -> the loaded splits (:class:`dan.data.datasets.ArraySplits` or
            :class:`dan.data.datasets.FolderSplits`), which :func:`dan.data.build_data` wraps in loaders.
        doc: the loader's docstring.
        reads: which of :data:`OPTIONAL_KEYS` it reads; the others are refused when set.
    """

    name: str
    info: Callable[[DataConfig], DatasetInfo]
    load: Callable[[DataConfig, DatasetInfo], object]
    doc: str
    reads: tuple = ()


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, info: Callable[[DataConfig], DatasetInfo], reads: tuple = ()):
    """Decorator: register ``load(cfg, info)`` as the dataset ``name``, described by ``info(cfg)``,
    reading the ``reads`` of :data:`OPTIONAL_KEYS`."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"dataset {name} registered twice")
        _REGISTRY[name] = DatasetSpec(name, info, fn, (fn.__doc__ or "").strip(), tuple(reads))
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Registered dataset names, in the order they were registered (the order ``--help`` shows)."""
    return list(_REGISTRY)


# Functions from a name outside the registry to its spec (None: not theirs): ``dan.data.code`` adds
# the one for ``package.module:function`` names, your own datasets.
_RESOLVERS: list[Callable[[str], "DatasetSpec | None"]] = []


def register_resolver(resolve: Callable[[str], "DatasetSpec | None"]) -> None:
    """Let ``resolve(name)`` give the spec of names the registry does not hold."""
    _RESOLVERS.append(resolve)


def get_dataset(name: str) -> DatasetSpec:
    if not isinstance(name, str):
        raise UserError(f"data.dataset must be a name, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    for resolve in _RESOLVERS:
        spec = resolve(name)
        if spec is not None:
            return spec
    raise UserError(f"unknown dataset '{name}': choose one of {', '.join(list_datasets())}, or your own "
                    f"package.module:function returning (train, test) torch Datasets")


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Shapes, class count and normalization of ``cfg.dataset`` without loading any image (your own
    dataset, :mod:`dan.data.code`: from a few of its training items)."""
    spec = get_dataset(cfg.dataset)
    check_reads(spec, cfg)
    return spec.info(cfg)


# The data keys only some datasets read (DatasetSpec.reads), by the flag that sets each. Set for
# another dataset, they did nothing without a word: an audit's `--dataset synthetic --data /nope`
# and `--dataset imagefolder --download` ran as if not given (data.args are refused likewise).
OPTIONAL_KEYS = {"data": "--data", "download": "--download"}


def check_reads(spec: DatasetSpec, cfg: DataConfig) -> None:
    """Refuse a key of :data:`OPTIONAL_KEYS` set for a dataset that does not read it."""
    for key, flag in OPTIONAL_KEYS.items():
        if getattr(cfg, key) and key not in spec.reads:
            if ":" in spec.name:  # your own dataset (dan.data.code)
                why = (f"your own dataset takes its folder and options in data.args, e.g. "
                       f"{setting('data.args.root=DIR')}")
            else:
                why = f"only {', '.join(n for n, s in _REGISTRY.items() if key in s.reads)} read it"
            raise UserError(f"{flag} (data.{key}) does nothing for dataset {spec.name} ({why}): drop it")


def data_info_dict(info: DatasetInfo, class_names: list | None = None) -> dict:
    """``info`` as plain values, as a checkpoint keeps it (``"data_info"``): what a run's networks
    are built for, read back by :func:`checkpoint_info` without the data; with the class names in
    label order where the dataset has them (a resume or an inheritance whose classes were renamed
    or reordered is refused: :func:`dan.checkpoint.check_same_task`)."""
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(info).items()}
    if class_names is not None:
        d["class_names"] = list(class_names)
    return d


def checkpoint_info(state: dict, cfg: DataConfig) -> DatasetInfo:
    """What a checkpoint's networks were built for: its ``"data_info"`` (written since the
    forty-ninth session), else :func:`dataset_info` of its config (which may need the data)."""
    d = state.get("data_info")
    if isinstance(d, dict):
        try:
            fields = {f.name for f in dataclasses.fields(DatasetInfo)}  # (not its class names)
            return DatasetInfo(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields})
        except TypeError:  # another version's fields: read it from the config
            pass
    return dataset_info(cfg)


def apply_overrides(info: DatasetInfo, cfg: DataConfig) -> DatasetInfo:
    """Check ``cfg.num_classes`` against a dataset's own class count and apply ``cfg.channels``
    (3: grey images repeated to 3 channels, with the statistics repeated to match; 1: colour
    images made grey, the statistics weighted as the channels are)."""
    name = info.name
    if cfg.num_classes not in (None, info.num_classes):
        raise UserError(f"{name} has {info.num_classes} classes but num_classes is {cfg.num_classes}: "
                        "drop num_classes (it is for synthetic data)")
    if cfg.channels not in (None, info.in_channels):
        if cfg.channels == 3 and info.in_channels == 1 and name != "imagefolder":
            return dataclasses.replace(info, in_channels=3, mean=info.mean * 3, std=info.std * 3)
        if cfg.channels == 1 and info.in_channels == 3:  # colour made grey (luma, dan.data.augment.GREY)
            from dan.data.augment import GREY

            # the luma's mean is exact; its std is the weighted sum of the channels' (exact for
            # channels that move together, as a natural image's nearly do)
            mean, std = (sum(w * v for w, v in zip(GREY, t)) for t in (info.mean, info.std))
            return dataclasses.replace(info, in_channels=1, mean=(mean,), std=(std,))
        raise UserError(f"data.channels {cfg.channels}: grey images can be given 3 channels (repeated) and "
                        f"colour ones 1 (made grey), and {name} has {info.in_channels}; drop data.channels")
    return info
