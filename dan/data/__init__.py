"""Datasets by name, fast loaders and the paper's augmentations (appendix B).

``build_data(cfg.data, seed=..., device=...)`` returns a :class:`Data` with a shuffled, augmented
``train`` loader, an unshuffled ``test`` loader and, when ``cfg.holdout > 0``, a held-out part of the
*training* split (``holdout`` for architecture steps, ``holdout_eval`` for monitoring).
``dataset_info(cfg)`` gives the shapes and class count without loading images.

The package, one concept per module:

* :mod:`dan.data.info`: :class:`DatasetInfo`, ``dataset_info`` and the registry of datasets by name
  (imports no torch, for code that only needs the type).
* :mod:`dan.data.datasets`: file readers and one ``@register_dataset("name")`` loader per dataset.
* :mod:`dan.data.code`: your own dataset (``package.module:function`` returning torch Datasets, or
  the Datasets themselves from Python).
* :mod:`dan.data.augment`: the batched in-memory augmentation and the image-folder transforms.
* :mod:`dan.data.splits`: the seeded train/held-out split and the data's random streams.
* :mod:`dan.data.loaders`: :class:`TensorLoader`, :class:`FolderLoader` and ``build_data``.

Every name below is importable from ``dan.data`` directly.
"""

from dan.data.info import (IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, DatasetSpec, checkpoint_info, data_info_dict,
                           dataset_info, get_dataset, list_datasets, register_dataset)
from dan.data.augment import (CIFAR_RECIPE, FASHION_MNIST_RECIPE, SYNTHETIC_RECIPE, AugmentRecipe, augment_batch,
                              random_homographies, random_lighting)
from dan.data.splits import split_indices
from dan.data.datasets import (CLASS_NAMES, FASHION_MNIST_DIR, FASHION_MNIST_FILES, ArraySplits, FolderSplits,
                               deploy_preprocess, load_cifar, load_fashion_mnist, load_image, read_idx, synthetic_arrays)
from dan.data.code import DatasetSplits
from dan.data.loaders import Data, FolderLoader, Loader, TensorLoader, build_data, build_user_data

__all__ = [
    "ArraySplits", "AugmentRecipe", "CLASS_NAMES", "DatasetSplits", "CIFAR_RECIPE", "Data", "DatasetInfo", "DatasetSpec", "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES", "FASHION_MNIST_RECIPE", "FolderLoader", "FolderSplits", "IMAGENET_MEAN",
    "IMAGENET_STD", "Loader", "SYNTHETIC_RECIPE", "TensorLoader", "augment_batch", "build_data", "build_user_data",
    "checkpoint_info", "data_info_dict", "dataset_info", "deploy_preprocess",
    "get_dataset", "list_datasets", "load_cifar", "load_fashion_mnist", "load_image", "random_homographies",
    "random_lighting", "read_idx", "register_dataset", "split_indices", "synthetic_arrays",
]
