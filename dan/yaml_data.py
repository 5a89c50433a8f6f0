"""YAML read as data: the loader of configs, tuning files and ``--set`` values.

``yaml.safe_load`` with what a config needs on top (each from an audit of users' own files):

* a size limit, and no anchors/aliases: an alias bomb expands to gigabytes when the config is
  copied or written out, and configs have no use for them;
* a nesting limit (:data:`MAX_YAML_DEPTH`): PyYAML composes nested lists and mappings
  recursively, and 5000 levels (``model: {args: {junk: [[[[...]]]]}}``) ended in a RecursionError
  and ~3000 lines of traceback (exit 1);
* duplicate keys refused: PyYAML keeps the last value, so a second ``data:`` section replaced the
  whole first one (a file naming ``dataset: synthetic`` above and ``batch_size: 16`` below trained
  on Fashion-MNIST) and a second ``lr:`` won in silence;
* YAML 1.2's floats: ``1e-3`` (no dot, or an unsigned exponent) is a float, not the string
  '1e-3' YAML 1.1 makes of it (``lr: 1e-3`` was refused as "must be float, got '1e-3'");
* the text the user wrote, where the caller says a string is expected (``text_at``): YAML 1.1
  turns plain ``off``, ``yes`` or ``2026-12-07`` into a bool or a date, and ``train.amp: off`` (a
  documented choice) or ``name: 2026-12-07`` was refused. Where a bool is expected the bool stays.

Errors are one-line :class:`~dan.errors.UserError` s that name the file (``where``) and the line.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from dan.errors import UserError

MAX_YAML_BYTES = 1 << 20
# Deeper nesting is refused (the shipped configs nest 3 levels; a model's own arguments a few more).
MAX_YAML_DEPTH = 64

_STR, _BOOL, _TIMESTAMP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"
_INT, _FLOAT, _MERGE = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:merge"
# YAML 1.2's floats that YAML 1.1 reads as strings: an exponent without a dot in the mantissa
# (1e-3, 5E4) or without a sign (1.5e3); the ones with both are 1.1's own resolver's.
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class _Refused(yaml.YAMLError):
    """YAML that parses but that a config does not accept: the message, said after ``where``."""


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tag runs code) that refuses aliases, deep nesting and duplicate
    keys, and reads ``1e-3`` as a float. Each scalar node records whether the user tagged it
    (``explicit``): ``!!bool off`` is a bool wherever it stands."""

    def __init__(self, stream):
        super().__init__(stream)
        self._path: list = []  # keys and indexes from the document's root to the node being composed

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted in configs",
                                              event.start_mark)
        if len(self._path) >= MAX_YAML_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise _Refused(f"lists or mappings nest more than {MAX_YAML_DEPTH} levels deep (line {line}): a config "
                           f"has no use for that; flatten it")
        step = index.value if isinstance(index, ScalarNode) else index if isinstance(index, int) else "?"
        self._path.append(step)
        try:
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def compose_scalar_node(self, anchor):
        explicit = self.peek_event().tag not in (None, "!")
        node = super().compose_scalar_node(anchor)
        node.explicit = explicit
        return node

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE:
                continue
            first = seen.setdefault((key.tag, key.value), key)
            if first is not key:
                a, b = first.start_mark, key.start_mark
                where = f"lines {a.line + 1} and {b.line + 1}" if a.line != b.line else \
                    f"line {a.line + 1}, columns {a.column + 1} and {b.column + 1}"
                name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in [*self._path[1:], key.value])
                name = name[1:] if name.startswith(".") else name
                raise _Refused(f"key {name!r} appears twice ({where}): merge them (YAML would keep the "
                               f"last one only)")
        return node


_NoAliasLoader.add_implicit_resolver(_FLOAT, _FLOAT_12, list("-+0123456789."))


def _take_text(node, text_at: Callable[[tuple], bool]) -> None:
    """Retag, as strings, the plain untagged bools and dates (and numbers) under ``node`` whose
    path (a tuple of keys and indexes from the root) ``text_at`` says takes a string: the value is
    then the user's own text, ``off`` and not False. A walk with a stack: nesting is bounded
    (:data:`MAX_YAML_DEPTH`) but need not cost recursion."""
    stack = [((), node)]
    while stack:
        path, n = stack.pop()
        if isinstance(n, MappingNode):
            stack.extend(((*path, k.value if isinstance(k, ScalarNode) else None), v) for k, v in n.value)
        elif isinstance(n, SequenceNode):
            stack.extend(((*path, i), v) for i, v in enumerate(n.value))
        elif n.style is None and not getattr(n, "explicit", False) and \
                n.tag in (_BOOL, _TIMESTAMP, _INT, _FLOAT) and text_at(path):
            n.tag = _STR


def load_yaml_text(text: str, where: str, text_at: Optional[Callable[[tuple], bool]] = None):
    """``yaml.safe_load`` of ``text`` as this module's docstring says; errors are one-line
    UserErrors that start with ``where`` ("config file configs/x.yaml").

    Args:
        text: the YAML document.
        where: what it is, for messages.
        text_at: whether the value at a path (a tuple of keys and indexes, ``()`` the document
            itself) takes a string; there a plain ``off`` or ``2026-12-07`` is that text.
    """
    if len(text) > MAX_YAML_BYTES:
        raise UserError(f"{where} is larger than {MAX_YAML_BYTES // 1024} KB: not a config")
    loader = None
    try:
        loader = _NoAliasLoader(text)  # its reader refuses control characters already
        node = loader.get_single_node()
        if node is None:
            return None
        if text_at is not None:
            _take_text(node, text_at)
        return loader.construct_document(node)
    except _Refused as e:
        raise UserError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:200]
        raise UserError(f"{where} is not valid YAML ({first}): fix it") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: str, what: str = "file", text_at: Optional[Callable[[tuple], bool]] = None):
    """Read ``path`` as UTF-8 YAML (see :func:`load_yaml_text`); errors name the file."""
    try:
        if os.path.getsize(path) > MAX_YAML_BYTES:
            raise UserError(f"{what} {path} is larger than {MAX_YAML_BYTES // 1024} KB: not a config")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read {what} {path} ({e.strerror}): check the path and its permissions")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}): save it as UTF-8")
    return load_yaml_text(text, f"{what} {path}", text_at)
