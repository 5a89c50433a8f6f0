"""Building the base network of a config: a search space by name, or a torchvision model.

``model.space`` is a name of the ``search_spaces`` registry (``resnet18_small``, ``resnet50``...)
or ``torchvision.<name>`` for any torchvision classification model (``torchvision.resnet50``);
``model.args`` are passed on (for torchvision, e.g. ``weights: IMAGENET1K_V2``).
"""

from __future__ import annotations

import torch.nn as nn

import search_spaces
from dan.config import ModelConfig
from dan.data import DatasetInfo
from dan.errors import UserError


def build_model(cfg: ModelConfig, info: DatasetInfo) -> nn.Module:
    args = dict(cfg.args)
    if cfg.space.startswith("torchvision."):
        import torchvision

        name = cfg.space.split(".", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise UserError(f"unknown torchvision model '{name}': see torchvision.models.list_models()")
        if info.in_channels != 3:
            raise UserError(f"torchvision.{name} takes 3 input channels, the data has {info.in_channels}: "
                            f"use a search space (e.g. resnet18_small) that takes in_channels")
        if args.get("weights") is None:
            args.setdefault("num_classes", info.num_classes)
        try:
            return torchvision.models.get_model(name, **args)
        except (TypeError, ValueError, KeyError) as e:
            what = f"unknown weights {e}" if isinstance(e, KeyError) else str(e)
            raise UserError(f"torchvision.{name}: {what} (see torchvision.models.get_model_weights"
                            f"('{name}'))") from e
    return search_spaces.create(cfg.space, num_classes=info.num_classes, in_channels=info.in_channels,
                                **args)


def input_shape(info: DatasetInfo) -> tuple:
    """The shape of one input image (batch 1), for cost tables and export."""
    return (1, info.in_channels, info.image_size, info.image_size)
