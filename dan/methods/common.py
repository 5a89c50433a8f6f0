"""Pieces the methods share: their config sections, the student network, fx tracing, the
per-batch top-1 every method logs."""

from __future__ import annotations

import dataclasses
import typing

import torch
import torch.nn as nn
import torch.fx as fx

from dan.adjoint import extract_small, to_adjoint
from dan.config import int_range
from dan.errors import UserError


def method_config(cfg, name: str, cls):
    """``cfg.methods[name]`` (a dict in the YAML file) as the dataclass ``cls``; unknown keys are
    errors that name the key."""
    return read_section(name, cfg.methods.get(name), cls)


def read_section(name: str, section, cls):
    """The options of ``methods.<name>`` (a mapping or None) as the dataclass ``cls``: unknown keys,
    wrong types and, through ``cls.check()`` when it has one, values out of range are
    :class:`UserError` lines that name the key."""
    raw = dict(section or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"unknown config key 'methods.{name}.{unknown[0]}' (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in raw.items():
        want = hints[k]
        optional = typing.get_origin(want) is typing.Union and type(None) in typing.get_args(want)
        base = typing.get_args(want)[0] if typing.get_origin(want) is typing.Union else want
        if base is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        # None only where the field takes it: --set methods.kd.temperature=null reached kd's range
        # check as a TypeError (the fuzz audit, seed 5011)
        if (v is not None or not optional) and base in (int, float, str, bool) and not isinstance(v, base):
            raise UserError(f"config key 'methods.{name}.{k}' must be {base.__name__}, got {v!r}")
        out[k] = v
    config = cls(**out)
    if hasattr(config, "check"):
        config.check()
    return config


def check_teacher_epochs(name: str, epochs) -> None:
    """``methods.<name>.teacher_epochs``: unset (the teacher trains ``train.epochs``) or 1 or more.
    0 meant ``train.epochs`` before commit 68b923c refused it; an upgrade audit's old config was
    told only "must be an integer in [1, 100000], got 0", so the line says what 0 was and the fix."""
    key = f"methods.{name}.teacher_epochs"
    if epochs == 0 and not isinstance(epochs, bool):
        raise UserError(f"config key '{key}' 0 meant train.epochs in older DANs and is refused now: drop the key "
                        f"(unset, the teacher trains train.epochs epochs) or give 1 or more")
    if epochs is not None:
        int_range(key, epochs, 1, 100_000)


def reinit(net: nn.Module) -> nn.Module:
    """A fresh initialisation for a network's own widths (convs: He, fan-out)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
    return net


def student_network(method) -> nn.Module:
    """The compact network a comparison method trains: the arch.json's small network when
    ``model.arch`` is set, else the small network AN extracts from the base network at the same
    α (``adjoint.alpha``, ``adjoint.stem``...), freshly initialised."""
    cfg = method.cfg
    if cfg.model.arch:
        return method.base_network()
    a = cfg.adjoint
    anet = to_adjoint(method.base_network(), alpha=a.alpha, beta=0.0, stem=a.stem,
                      unmasked=tuple(a.unmasked), input_shape=method.input_shape, copy_model=False)
    return reinit(extract_small(anet).train())


def traced(net: nn.Module) -> fx.GraphModule:
    """``net`` as an fx graph module (itself when it already is one)."""
    return net if isinstance(net, fx.GraphModule) else fx.symbolic_trace(net)


def top1_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch whose arg-max logit is the label (a 0-d tensor, for training logs).

    >>> top1_accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), torch.tensor([0, 1, 1]))
    tensor(0.6667)
    """
    return (logits.argmax(1) == y).float().mean()
