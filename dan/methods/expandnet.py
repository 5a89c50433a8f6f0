"""``expandnet``: ExpandNets (Guo, Alvarez, Salzmann, NeurIPS 2020).

A compact network (the small network AN extracts at the same α, or ``model.arch``'s network) is
trained in an *expanded*, purely linear over-parameterised form and contracted back exactly at the
end; the contracted network is what is evaluated at the end, counted, timed and saved.

* CL: a k×k conv m→n becomes 1×1 (m→r·m), k×k (r·m→r·n), 1×1 (r·n→n). The network's first conv
  keeps its input channels (no leading 1×1).
* CK (k > 3, odd): (k−1)/2 stacked 3×3 convs m → r·m → … → r·n → n.
* FC: Linear m→n becomes m→r·m, r·m→r·n, r·n→n.
* No nonlinearity inside a unit; BN and activations stay after the whole unit. All of the original
  padding goes on the unit's first conv, the stride on the k×k conv (CL) or the last 3×3 (CK): then
  contraction is exact, biases included.

Contraction of A then B: ``W = conv_transpose2d(W_B, W_A)`` (kernel k_A + k_B − 1),
``b = W_B.sum((2, 3)) @ b_A + b_B``; FC: ``W = W3 W2 W1``, ``b = W3 (W2 b1 + b2) + b3``.

Config (``methods.expandnet``): ``ratio`` r (default 4), ``mode``: ``cl``, ``ck`` or ``cl+fc`` /
``ck+fc`` (default ``cl+fc``). Grouped/depthwise and 1×1 convs stay as they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dan.errors import UserError
from dan.methods.common import method_config, student_network, traced
from dan.methods.registry import register_method
from dan.methods.standard import Standard


@dataclass
class ExpandNetConfig:
    ratio: int = 4
    mode: str = "cl+fc"

    def check(self):
        if self.ratio < 1:
            raise UserError("methods.expandnet.ratio must be >= 1")
        check_mode(self.mode)


def merge_convs(a: nn.Conv2d, b: nn.Conv2d) -> nn.Conv2d:
    """One conv equal to ``b(a(x))``: b unpadded, and a unstrided unless b is a 1×1 stride-1 conv."""
    b_pointwise = b.kernel_size == (1, 1) and b.stride == (1, 1)
    assert (a.stride == (1, 1) or b_pointwise) and b.padding == (0, 0) and a.groups == b.groups == 1
    stride = a.stride if b_pointwise else b.stride
    with torch.no_grad():
        w = F.conv_transpose2d(b.weight, a.weight)  # (n, m, kA + kB − 1, …)
        bias = None
        if a.bias is not None or b.bias is not None:
            bias = torch.zeros(b.out_channels, device=b.weight.device, dtype=b.weight.dtype)
            if a.bias is not None:
                bias += b.weight.sum((2, 3)) @ a.bias
            if b.bias is not None:
                bias += b.bias
    k = tuple(w.shape[2:])
    out = nn.Conv2d(a.in_channels, b.out_channels, k, stride=stride, padding=a.padding,
                    bias=bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if bias is not None:
            out.bias.copy_(bias)
    return out


class ExpandedConv(nn.Sequential):
    """A linear stack of convs standing for one conv; :meth:`contract` gives that conv."""

    def contract(self) -> nn.Conv2d:
        convs = list(self)
        merged = convs[0]
        for c in convs[1:]:
            merged = merge_convs(merged, c)
        return merged


class ExpandedLinear(nn.Sequential):
    def contract(self) -> nn.Linear:
        l1, l2, l3 = self
        with torch.no_grad():
            w = l3.weight @ l2.weight @ l1.weight
            b = l3.weight @ (l2.weight @ l1.bias + l2.bias) + l3.bias
        out = nn.Linear(l1.in_features, l3.out_features, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out.weight.copy_(w)
            out.bias.copy_(b)
        return out


def expand_cl(conv: nn.Conv2d, r: int, first: bool) -> ExpandedConv:
    m, n, k = conv.in_channels, conv.out_channels, conv.kernel_size
    bias = conv.bias is not None
    layers = []
    mid_in = m if first else r * m
    if not first:
        layers.append(nn.Conv2d(m, r * m, 1, padding=conv.padding, bias=bias))
    layers.append(nn.Conv2d(mid_in, r * n, k, stride=conv.stride, padding=conv.padding if first else 0, bias=bias))
    layers.append(nn.Conv2d(r * n, n, 1, bias=bias))
    return ExpandedConv(*layers)


def expand_ck(conv: nn.Conv2d, r: int) -> ExpandedConv:
    m, n, (k, _) = conv.in_channels, conv.out_channels, conv.kernel_size
    steps = (k - 1) // 2
    widths = [m, n] if steps == 1 else [m, r * m] + [r * n] * (steps - 2) + [n]
    layers = []
    for i in range(steps):
        last = i == steps - 1
        layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=conv.stride if last else 1,
                                padding=conv.padding if i == 0 else 0, bias=conv.bias is not None))
    return ExpandedConv(*layers)


def expand_linear(lin: nn.Linear, r: int) -> ExpandedLinear:
    m, n = lin.in_features, lin.out_features
    return ExpandedLinear(nn.Linear(m, r * m), nn.Linear(r * m, r * n), nn.Linear(r * n, n))


def check_mode(mode: str) -> set:
    """The kinds of layer ``mode`` expands (``cl``, ``ck``, ``fc``), or a :class:`UserError`."""
    kinds = set(mode.split("+"))
    if not kinds <= {"cl", "ck", "fc"} or ("cl" in kinds and "ck" in kinds):
        raise UserError(f"methods.expandnet.mode must be cl, ck, cl+fc, ck+fc or fc, got {mode!r}")
    return kinds


def expand(net: nn.Module, ratio: int = 4, mode: str = "cl+fc") -> nn.Module:
    """A copy of ``net`` with its k×k convs (k ≥ 3, groups 1, dilation 1) and linears expanded."""
    kinds = check_mode(mode)
    net = copy.deepcopy(traced(net))
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    first = convs[0][0] if convs else None
    expanded = 0
    for name, m in convs:
        if m.groups != 1 or m.dilation != (1, 1) or m.kernel_size[0] != m.kernel_size[1] or m.kernel_size[0] < 3:
            continue
        if m.padding_mode != "zeros" or m.kernel_size[0] % 2 == 0:
            continue
        if "cl" in kinds:
            new = expand_cl(m, ratio, name == first)
        elif "ck" in kinds and m.kernel_size[0] > 3:
            new = expand_ck(m, ratio)
        else:
            continue
        _replace(net, name, new.to(m.weight.device))
        expanded += 1
    if "ck" in kinds and not expanded:  # it trained the plain small network, and called it ExpandNet
        raise UserError(f"methods.expandnet.mode {mode} expands convs with kernels above 3x3, and this network has "
                        f"none: use cl or cl+fc")
    if "fc" in kinds:
        for name, m in [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]:
            _replace(net, name, expand_linear(m, ratio).to(m.weight.device))
    return net


def contract(net: nn.Module) -> nn.Module:
    """A copy of an expanded network with every expanded unit merged back into one layer."""
    net = copy.deepcopy(net)
    for name, m in [(n, m) for n, m in net.named_modules() if isinstance(m, (ExpandedConv, ExpandedLinear))]:
        _replace(net, name, m.contract())
    return net


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


@register_method("expandnet")
class ExpandNet(Standard):
    config = ExpandNetConfig
    outputs = ("small",)
    deployed = "small"
    final_eval = ("small",)  # the contracted network is evaluated again at the end

    def build(self):
        c = method_config(self.cfg, "expandnet", ExpandNetConfig)
        self.model = expand(student_network(self), c.ratio, c.mode).to(self.device)
        return self.model

    def networks(self):
        return {"small": contract(self.model).eval()}
