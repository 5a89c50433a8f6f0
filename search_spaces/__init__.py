"""Registry of base networks (search spaces) and their candidate widths.

Each entry is a builder function registered under a name, timm-style:

>>> import search_spaces
>>> net = search_spaces.create("resnet18_small", num_classes=10, in_channels=1, width=16)
>>> sorted(search_spaces.list_spaces())[:3]
['resnet18', 'resnet18_small', 'resnet34']

A space also carries the candidate width fractions that DAN search offers every width group
(``space_fractions(name)``): the small network's width of a group is one of
``f * full_width`` (rounded; ``dan.supernet.candidate_widths``) for f in the fractions. Configs may override them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from dan.errors import UserError

# The paper's own DAN code used {1/4, 1/2, 1}; finer steps let the search meet a budget closely.
DEFAULT_FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


@dataclass(frozen=True)
class SpaceSpec:
    name: str
    builder: Callable[..., nn.Module]
    fractions: tuple
    doc: str


_REGISTRY: dict[str, SpaceSpec] = {}


def register_space(name: str | None = None, fractions: tuple = DEFAULT_FRACTIONS):
    """Decorator: register ``fn(**kwargs) -> nn.Module`` as a search space."""

    def wrap(fn):
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"search space {key} registered twice")
        _REGISTRY[key] = SpaceSpec(key, fn, tuple(fractions), (fn.__doc__ or "").strip())
        return fn

    return wrap


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str) -> SpaceSpec:
    if name not in _REGISTRY:
        raise UserError(f"unknown search space '{name}': choose one of {', '.join(list_spaces())}")
    return _REGISTRY[name]


def space_fractions(name: str) -> tuple:
    """The candidate width fractions of a registered space; the default ones for any other model
    (``torchvision.<name>``, ``timm.<name>``, a user's builder)."""
    if name not in _REGISTRY:
        return DEFAULT_FRACTIONS
    return get_space(name).fractions


def create(name: str, **kwargs) -> nn.Module:
    """Build a registered network; ``None`` keyword values are dropped so the space's own defaults
    apply (a CLI default never overrides a model's own), unknown keywords are a UserError."""
    spec = get_space(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    params = inspect.signature(spec.builder).parameters
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        raise UserError(f"search space '{name}' has no argument '{unknown[0]}' "
                        f"(it takes: {', '.join(params)})")
    return spec.builder(**kwargs)


from search_spaces import resnet  # noqa: E402,F401  (registers the ResNets)
