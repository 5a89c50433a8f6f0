"""``dropout``: the base network trained alone with dropout (the paper's regularization baseline,
§5.3): ``rate`` on the classifier's input and, optionally, channel dropout (``Dropout2d``,
``channel_rate``) after every BatchNorm but the stem's that feeds an activation directly (in a
ResNet: inside each residual branch, never on the residual stream).

Config (``methods.dropout``): ``rate`` (default 0.2), ``channel_rate`` (default 0.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

from dan.errors import UserError
from dan.methods.common import method_config, traced
from dan.methods.registry import register_method
from dan.methods.standard import Standard

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish)


@dataclass
class DropoutConfig:
    rate: float = 0.2
    channel_rate: float = 0.0

    def check(self):
        if not (0 <= self.rate < 1 and 0 <= self.channel_rate < 1):
            raise UserError("methods.dropout.rate and channel_rate must be in [0, 1)")


def add_dropout(net: nn.Module, rate: float, channel_rate: float) -> fx.GraphModule:
    """A copy of ``net`` with dropout before its last linear layer and, when ``channel_rate`` > 0,
    ``Dropout2d`` after each BatchNorm whose output goes straight into an activation."""
    gm = traced(net)
    modules = dict(gm.named_modules())
    linears = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Linear)]
    if linears and rate > 0:
        last = linears[-1]
        gm.add_submodule("classifier_dropout", nn.Dropout(rate))
        with gm.graph.inserting_before(last):
            d = gm.graph.call_module("classifier_dropout", (last.args[0],))
        last.args = (d,) + tuple(last.args[1:])
    if channel_rate > 0:
        k = 0
        bns = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules.get(n.target), nn.BatchNorm2d)]
        for n in bns[1:]:  # not the stem's: its output is the residual stream
            users = list(n.users)
            if len(users) == 1 and users[0].op == "call_module" and \
                    isinstance(modules.get(users[0].target), _ACTIVATIONS):
                name = f"channel_dropout_{k}"
                k += 1
                gm.add_submodule(name, nn.Dropout2d(channel_rate))
                with gm.graph.inserting_after(n):
                    d = gm.graph.call_module(name, (n,))
                users[0].replace_input_with(n, d)
    gm.graph.lint()
    gm.recompile()
    return gm


@register_method("dropout")
class Dropout(Standard):
    config = DropoutConfig

    def build(self):
        c = method_config(self.cfg, "dropout", DropoutConfig)
        if self.cfg.model.arch:
            self.outputs, self.deployed = ("small",), "small"
        self.model = add_dropout(self.base_network(), c.rate, c.channel_rate).to(self.device)
        return self.model
