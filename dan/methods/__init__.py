"""Training methods, one file each, selected by name (``tools/train.py --method NAME``).

Every method runs through the same engine (:mod:`dan.engine`): same data, optimizer, schedule,
logging, checkpoints and cost model. A method says how to build the trained module, what one
training step computes, which outputs to evaluate, and which network is deployed at the end.
"""

from __future__ import annotations

from dan.errors import UserError
from dan.methods.base import Method

_METHODS: dict[str, type] = {}


def register_method(name: str):
    def wrap(cls):
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type:
    if name not in _METHODS:
        raise UserError(f"unknown method '{name}': choose one of {', '.join(list_methods())}")
    return _METHODS[name]


from dan.methods import adjoint, dropout, expandnet, kd, ksanc, lowrank, standard  # noqa: E402,F401

__all__ = ["Method", "get_method", "list_methods", "register_method"]
