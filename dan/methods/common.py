"""Pieces the comparison methods share: their config sections, the student network, teachers."""

from __future__ import annotations

import copy
import dataclasses
import os
import typing

import torch
import torch.nn as nn
import torch.fx as fx

from dan.adjoint import extract_small, to_adjoint
from dan.errors import UserError


def method_config(cfg, name: str, cls):
    """``cfg.methods[name]`` (a dict in the YAML file) as the dataclass ``cls``; unknown keys are
    errors that name the key."""
    raw = dict(cfg.methods.get(name) or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"unknown config key 'methods.{name}.{unknown[0]}' (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in raw.items():
        want = hints[k]
        base = typing.get_args(want)[0] if typing.get_origin(want) is typing.Union else want
        if base is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if v is not None and base in (int, float, str, bool) and not isinstance(v, base):
            raise UserError(f"config key 'methods.{name}.{k}' must be {base.__name__}, got {v!r}")
        out[k] = v
    return cls(**out)


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


def load_teacher(path: str, device: torch.device) -> nn.Module:
    """The big network of a finished run: ``path`` is its run folder or a checkpoint file."""
    from dan.checkpoint import load_checkpoint
    from dan.config import Config
    from dan.data import dataset_info
    from dan.methods import get_method

    ckpt = os.path.join(path, "checkpoints", "last.pt") if os.path.isdir(path) else path
    state = load_checkpoint(ckpt, map_location=device)
    tcfg = Config.from_dict(state["config"])
    info = dataset_info(tcfg.data)
    m = get_method(tcfg.train.method)(tcfg, info, device)
    m.build()
    m.model.load_state_dict(state["model"])
    m.load_extra_state(state.get("method", {}))
    nets = m.networks()
    if "big" not in nets:
        raise UserError(f"{ckpt} holds no big network to teach with (method {tcfg.train.method})")
    teacher = nets["big"].to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, info


def train_teacher(method, data, monitor, epochs: int) -> nn.Module:
    """Train the base network the standard way first, in ``<run>/teacher`` (reused when finished)."""
    from dan.engine import Trainer
    from dan.loop import start_managed

    cfg = copy.deepcopy(method.cfg)
    cfg.train.method = "standard"
    cfg.model.arch = None
    cfg.train.epochs = epochs
    cfg.out = os.path.join(method.cfg.run_dir, "teacher")
    cfg.methods = {}
    done = os.path.join(cfg.out, "summary.json")
    if not os.path.isfile(done):
        from dan.monitor import Monitor

        mon = Monitor(cfg.out, console=monitor.console, tensorboard=monitor.tensorboard)
        start_managed(cfg, lambda: Trainer(cfg, mon, data=data)).fit()
    teacher, _ = load_teacher(cfg.out, method.device)
    return teacher


def traced(net: nn.Module) -> fx.GraphModule:
    return net if isinstance(net, fx.GraphModule) else fx.symbolic_trace(net)
