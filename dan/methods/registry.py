"""The table of training methods by name: ``@register_method("kd")`` on a :class:`Method`
subclass adds it, :func:`get_method` looks it up (``tools/train.py --method NAME``).

This module imports no method, so a method module can import it while ``dan.methods`` is still
being initialised (the package imports this table first, then every method module).
"""

from __future__ import annotations

from dan.errors import UserError

_METHODS: dict[str, type] = {}


def register_method(name: str):
    """Class decorator: register a :class:`~dan.methods.base.Method` subclass under ``name``
    (also set as its ``name`` attribute)."""

    def wrap(cls):
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> type:
    """The method class registered under ``name``; an unknown name is a :class:`UserError` that
    lists the known ones."""
    if name not in _METHODS:
        raise UserError(f"unknown method '{name}': choose one of {', '.join(list_methods())}")
    return _METHODS[name]
