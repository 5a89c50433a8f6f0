"""Conversion of a CNN into an adjoint network, and extraction of the small network.

>>> import torchvision, torch, dan
>>> anet = dan.to_adjoint(torchvision.models.resnet18(num_classes=10), alpha=4)
>>> big, small = anet(torch.randn(2, 3, 64, 64))
>>> net = dan.extract_small(anet)          # a plain torch.nn model: the deployable small network

How it works: the model is traced with ``torch.fx`` (:mod:`dan.graph` finds the width groups),
every conv after the stem becomes an :class:`~dan.layers.AdjointConv2d` (BatchNorms after them get
a small twin, linears read leading features), and a new graph is generated that runs each layer
twice — once as the big network, once on the small network's sliced tensors — and returns both
logits. The stem (the first ``stem`` convs and what follows them up to the first adjoint layer) is
computed once and shared, as in the paper (§5), and its output width stays full.

The big network keeps the module names of the original model, so weights trained elsewhere
load into it before conversion, and ``anet.big`` is a module that runs the big network alone.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn

from dan.errors import UserError
from dan.graph import GraphAnalysis, WidthGroup, analyze
from dan.layers import AdjointBatchNorm2d, AdjointConv2d, AdjointLinear


def round_width(x: float, quantum: int = 1, full: Optional[int] = None) -> int:
    """Round a channel count to a positive multiple of ``quantum`` (at most ``full``)."""
    w = max(quantum, int(round(x / quantum)) * quantum)
    return min(w, full) if full is not None else w


def alpha_width(full: int, alpha: float, quantum: int = 1) -> int:
    """The paper's a_α keeps the first ``c_out/α`` filters (rounded up to the group quantum)."""
    w = -(-full // int(alpha)) if float(alpha).is_integer() else int(-(-full // alpha))
    w = -(-w // quantum) * quantum
    return max(quantum, min(full, w))


class AdjointNet(nn.Module):
    """An adjoint network: ``anet(x)`` returns ``(big_logits, small_logits)``.

    Attributes:
        body: the generated ``fx.GraphModule`` that computes both paths.
        groups: the :class:`~dan.graph.WidthGroup` list (name, full and small width).
        big: a module running only the big network (same parameters).
        small: a module running only the small path (same parameters).
    """

    def __init__(self, analysis: GraphAnalysis, body: fx.GraphModule, big_graph: fx.Graph,
                 small_graph: fx.Graph, options: dict):
        super().__init__()
        self.body = body
        self.groups: list[WidthGroup] = analysis.groups
        self.layer_groups: dict = analysis.layer_groups
        self.stem: list = analysis.stem
        self.node_shapes: dict = analysis.node_shapes
        self.options = dict(options)
        # Views on the same modules, not registered as submodules (no duplicate state-dict keys).
        self.__dict__["_big_graph"] = big_graph
        self.__dict__["_small_graph"] = small_graph
        self.__dict__["_big"] = fx.GraphModule(body, big_graph)
        self.__dict__["_small"] = fx.GraphModule(body, small_graph)

    def forward(self, x: torch.Tensor):
        return self.body(x)

    @property
    def big(self) -> nn.Module:
        return self.__dict__["_big"]

    @property
    def small(self) -> nn.Module:
        return self.__dict__["_small"]

    def group(self, name: str) -> WidthGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def widths(self) -> dict:
        """Width of every group in the small network (group name -> channels)."""
        return {g.name: g.width for g in self.groups}

    def searchable_groups(self) -> list[WidthGroup]:
        return [g for g in self.groups if not g.fixed]

    def adjoint_modules(self):
        for name, m in self.body.named_modules():
            if isinstance(m, (AdjointConv2d, AdjointBatchNorm2d, AdjointLinear)):
                yield name, m

    def describe(self) -> str:
        rows = [f"{'group':40s} {'full':>6s} {'small':>6s}  note"]
        for g in self.groups:
            rows.append(f"{g.name:40s} {g.full:6d} {g.width:6d}  {g.fixed}")
        return "\n".join(rows)


def to_adjoint(model: nn.Module, alpha: float = 4, beta: float = 0.0, *,
               widths: Optional[dict] = None, max_widths: Optional[dict] = None, stem: int = 1,
               unmasked: tuple = (), input_shape: Optional[tuple] = None, mask_seed: int = 0,
               copy_model: bool = True) -> AdjointNet:
    """Turn a CNN into an adjoint network.

    Args:
        model: a ``torch.fx``-traceable CNN built from Conv2d / BatchNorm2d / Linear, activations,
            pooling, flatten and add/mul (torchvision ResNets, WideResNets, ResNeXts,
            MobileNetV2, VGG, the networks of ``search_spaces``).
        alpha: every width group of the small network keeps ``ceil(full / alpha)`` channels.
        beta: fraction of the small network's remaining weights zeroed by the fixed random
            mask r_β (a seeded buffer, never learnt).
        widths: explicit small widths per group name (overrides ``alpha``; DAN's arch.json).
        max_widths: the widest each group may become later (sizes the small BatchNorms; DAN).
        stem: number of leading convs that stay shared by both networks (not adjoint). 0 makes
            every conv adjoint.
        unmasked: module-name prefixes whose output widths stay full in the small network (the
            paper's ResNet-50 left ``layer1`` unmasked).
        input_shape: an input shape used to trace shapes (default ``(1, C, 224, 224)``); only
            flatten sizes depend on it.
        mask_seed: seed of the r_β masks.
        copy_model: work on a deep copy (default) instead of converting ``model`` in place.

    Returns:
        An :class:`AdjointNet`; ``anet(x)`` returns ``(big_logits, small_logits)``.
    """
    if alpha < 1:
        raise UserError(f"alpha must be >= 1 (the small network keeps 1/alpha of a width), got {alpha}")
    if not 0.0 <= beta < 1.0:
        raise UserError(f"beta must be in [0, 1) (the fraction of weights r_beta zeroes), got {beta}")
    if copy_model:
        model = copy.deepcopy(model)
    for m in model.modules():  # in-place ops could write into a tensor both paths read
        if getattr(m, "inplace", False):
            m.inplace = False
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise UserError(f"{type(model).__name__} has no Conv2d: nothing to make adjoint")
    if input_shape is None:
        input_shape = (1, first.in_channels, 224, 224)
    device = next(model.parameters()).device
    example = torch.zeros(tuple(input_shape), device=device)
    an = analyze(model, example, stem=stem, unmasked=tuple(unmasked))
    _set_widths(an.groups, alpha, widths, max_widths)

    gm = an.gm
    by_name = {g.name: g for g in an.groups}
    graph = gm.graph
    nodes_by_target = {}
    for n in graph.nodes:
        if n.op == "call_module":
            nodes_by_target.setdefault(n.target, []).append(n)
    modules = dict(gm.named_modules())
    for name in sorted(an.adjoint):
        m = modules[name]
        in_name, out_name, mult = an.layer_groups[name]
        gi, go = by_name[in_name], by_name[out_name]
        if isinstance(m, nn.Conv2d):
            users = [u for n in nodes_by_target[name] for u in n.users]
            bn_next = len(users) == 1 and users[0].op == "call_module" and \
                isinstance(modules[users[0].target], nn.BatchNorm2d)
            new = AdjointConv2d.from_conv(m, gi, go, beta=beta, seed=mask_seed, name=name,
                                          apply_mask=not bn_next)
        elif isinstance(m, nn.BatchNorm2d):
            new = AdjointBatchNorm2d.from_bn(m, go, apply_mask=True)
        else:
            new = AdjointLinear.from_linear(m, gi, go, mult, beta=beta, seed=mask_seed, name=name,
                                            apply_mask=True)
        _set_submodule(gm, name, new)

    body_graph, small_graph = _two_path_graphs(graph, an)
    body = fx.GraphModule(gm, body_graph)
    options = dict(alpha=alpha, beta=beta, stem=stem, unmasked=list(unmasked),
                   input_shape=list(input_shape), mask_seed=mask_seed)
    return AdjointNet(an, body, copy.deepcopy(graph), small_graph, options)


def _set_widths(groups, alpha, widths, max_widths) -> None:
    widths = dict(widths or {})
    names = {g.name for g in groups}
    for key in list(widths) + list(max_widths or {}):
        if key not in names:
            some = ", ".join(g.name for g in groups if not g.fixed)
            raise UserError(f"unknown width group '{key}' (groups of this model: {some})")
    for g in groups:
        if g.fixed:
            if g.name in widths and widths[g.name] != g.full:
                raise UserError(f"width group '{g.name}' is fixed ({g.fixed}) at {g.full} channels, "
                                f"got {widths[g.name]}")
            g.width = g.max_width = g.full
            continue
        w = widths.get(g.name, alpha_width(g.full, alpha, g.quantum))
        if not isinstance(w, int) or not 1 <= w <= g.full or w % g.quantum:
            raise UserError(f"width of group '{g.name}' must be a multiple of {g.quantum} in "
                            f"[1, {g.full}], got {w!r}")
        g.width = w
        g.max_width = max(w, (max_widths or {}).get(g.name, w))
        if g.max_width > g.full or g.max_width % g.quantum:
            raise UserError(f"max width of group '{g.name}' must be a multiple of {g.quantum} "
                            f"<= {g.full}, got {g.max_width}")


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _two_path_graphs(graph: fx.Graph, an: GraphAnalysis):
    """Generate the adjoint graph (both paths, stem once) and the small-only graph."""
    body, small = fx.Graph(), fx.Graph()
    env_big, env_small, env_only = {}, {}, {}
    for n in graph.nodes:
        if n.op == "output":
            out = n.args[0]
            body.output((env_big[out], env_small[out]))
            small.output(env_only[out])
            continue
        if n.name in an.shared or n.op == "placeholder":
            env_big[n] = env_small[n] = body.node_copy(n, lambda a: env_big[a])
            env_only[n] = small.node_copy(n, lambda a: env_only[a])
            continue
        env_big[n] = body.node_copy(n, lambda a: env_big[a])
        s = body.node_copy(n, lambda a: env_small[a])
        o = small.node_copy(n, lambda a: env_only[a])
        if n.op == "call_module" and n.target in an.adjoint:
            for node in (s, o):
                node.kwargs = {**node.kwargs, "small": True}
        env_small[n], env_only[n] = s, o
    body.lint()
    small.lint()
    return body, small


def _plain_conv(m: AdjointConv2d) -> nn.Conv2d:
    w = m.small_weight().detach()
    conv = nn.Conv2d(w.shape[1] * m.small_groups(), w.shape[0], m.kernel_size, m.stride, m.padding,
                     m.dilation, m.small_groups(), m.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(w)
        if m.bias is not None:
            conv.bias.copy_(m.bias[: w.shape[0]])
    return conv


def _plain_bn(m: AdjointBatchNorm2d) -> nn.BatchNorm2d:
    s, w = m.small, m.group.width
    bn = nn.BatchNorm2d(w, s.eps, s.momentum, s.affine, s.track_running_stats)
    bn = bn.to(next(iter(list(s.parameters()) + list(s.buffers()))).device)
    with torch.no_grad():
        if s.affine:
            bn.weight.copy_(s.weight[:w])
            bn.bias.copy_(s.bias[:w])
        if s.track_running_stats:
            bn.running_mean.copy_(s.running_mean[:w])
            bn.running_var.copy_(s.running_var[:w])
            bn.num_batches_tracked.copy_(s.num_batches_tracked)
    return bn


def _plain_linear(m: AdjointLinear) -> nn.Linear:
    w = m.small_weight().detach()
    lin = nn.Linear(w.shape[1], w.shape[0], m.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
        if m.bias is not None:
            lin.bias.copy_(m.bias[: w.shape[0]])
    return lin


def _plain_big(m: nn.Module) -> nn.Module:
    """The big network's version of an adjoint layer as its plain torch.nn class."""
    if isinstance(m, AdjointConv2d):
        new = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                        m.groups, m.bias is not None, m.padding_mode, device="meta")
    elif isinstance(m, AdjointBatchNorm2d):
        new = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, device="meta")
    else:
        new = nn.Linear(m.in_features, m.out_features, m.bias is not None, device="meta")
    state = {k: v.detach().clone() for k, v in m.state_dict().items()
             if not k.startswith("small.") and k != "rbeta"}
    new.load_state_dict(state, assign=True)
    return new.train(m.training)


def extract_big(anet: AdjointNet) -> fx.GraphModule:
    """A plain ``torch.nn`` copy of the big network (no small BatchNorms, no masks), eval mode."""
    root = copy.deepcopy(anet.body)
    for name, m in list(root.named_modules()):
        if isinstance(m, (AdjointConv2d, AdjointBatchNorm2d, AdjointLinear)):
            _set_submodule(root, name, _plain_big(m))
    return fx.GraphModule(root, copy.deepcopy(anet.__dict__["_big_graph"])).eval()


def extract_small(anet: AdjointNet) -> fx.GraphModule:
    """Cut the small network out of an adjoint network.

    Returns a plain ``torch.nn`` model (an ``fx.GraphModule`` of standard Conv2d / BatchNorm2d /
    Linear modules, in eval mode) whose outputs equal ``anet``'s small-path outputs in eval mode.
    It holds only the small network's weights (sliced, r_β zeros included), so ``dan.count``
    shows the real reduction; no class of this package is needed to run it.
    """
    for g in anet.groups:
        if g.mask is not None:
            raise ValueError(f"group {g.name} carries a soft channel mask: fix the widths first")
    root = copy.deepcopy(anet.body)
    for name, m in list(root.named_modules()):
        if isinstance(m, AdjointConv2d):
            _set_submodule(root, name, _plain_conv(m))
        elif isinstance(m, AdjointBatchNorm2d):
            _set_submodule(root, name, _plain_bn(m))
        elif isinstance(m, AdjointLinear):
            _set_submodule(root, name, _plain_linear(m))
    return fx.GraphModule(root, copy.deepcopy(anet.__dict__["_big_graph"])).eval()
