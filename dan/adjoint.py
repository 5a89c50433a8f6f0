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
import numbers
import warnings
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn

from dan.errors import UserError
from dan.graph import GraphAnalysis, Segments, WidthGroup, analyze
from dan.layers import (AdjointBatchNorm2d, AdjointConv2d, AdjointGroupNorm, AdjointLayerNorm, AdjointLinear,
                        ChannelMean, ChannelRange, ChannelSlice, cut_bounds)

_ADJOINT_LAYERS = (AdjointConv2d, AdjointBatchNorm2d, AdjointLinear, AdjointLayerNorm, AdjointGroupNorm)


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
        self.attrs: dict = analysis.attrs
        self.ranges: dict = analysis.ranges
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

    # torch.save(anet) failed ("cannot pickle 'module' object": the two path graphs, pickled with the
    # GraphModule that owns them). They travel as node lists and are rebuilt node for node, names
    # included (``ranges`` and the extraction look nodes up by name); the views are made again.
    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("_big", "_small")}
        state["_big_graph"], state["_small_graph"] = _graph_nodes(self._big_graph), _graph_nodes(self._small_graph)
        return state

    def __setstate__(self, state):
        state = dict(state)
        big, small = _graph_from_nodes(state.pop("_big_graph")), _graph_from_nodes(state.pop("_small_graph"))
        super().__setstate__(state)
        self.__dict__.update(_big_graph=big, _small_graph=small, _big=fx.GraphModule(self.body, big),
                             _small=fx.GraphModule(self.body, small))

    @property
    def big(self) -> nn.Module:
        return self.__dict__["_big"]

    @property
    def small(self) -> nn.Module:
        return self.__dict__["_small"]

    def channels(self, names):
        """The channels a layer side names (as in ``layer_groups``)."""
        return _channels(names, {g.name: g for g in self.groups})

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


class _NodeRef(str):
    """A node named in another node's arguments, in :func:`_graph_nodes`' list."""


def _graph_nodes(graph: fx.Graph) -> list:
    """``graph`` as a picklable list: (name, op, target, args, kwargs) per node, nodes in arguments
    as :class:`_NodeRef`. The nodes' ``meta`` (shapes recorded while converting; torch's
    TensorMetadata does not pickle) is left out: nothing reads it after the conversion."""
    ref = (lambda n: _NodeRef(n.name))
    return [(n.name, n.op, n.target, fx.node.map_arg(n.args, ref), fx.node.map_arg(n.kwargs, ref))
            for n in graph.nodes]


def _graph_from_nodes(nodes: list) -> fx.Graph:
    """The graph :func:`_graph_nodes` listed, with the same node names."""
    graph, made = fx.Graph(), {}

    def node(a):
        if isinstance(a, _NodeRef):
            return made[str(a)]
        if isinstance(a, (tuple, list)):
            return type(a)(node(x) for x in a) if not hasattr(a, "_fields") else type(a)(*map(node, a))
        if isinstance(a, dict):
            return {k: node(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(node(a.start), node(a.stop), node(a.step))
        return a

    for name, op, target, args, kwargs in nodes:
        made[name] = graph.create_node(op, target, node(args), node(kwargs), name=name)
    return graph


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
            paper's ResNet-50 left ``layer1`` unmasked); a single string is one prefix. A prefix
            that names no conv or linear layer is refused (a typo).
        input_shape: an input shape used to trace shapes (default ``(1, C, 224, 224)``); only
            flatten sizes depend on it.
        mask_seed: seed of the r_β masks.
        copy_model: work on a deep copy (default) instead of converting ``model`` in place.

    Returns:
        An :class:`AdjointNet`; ``anet(x)`` returns ``(big_logits, small_logits)``.
    """
    unmasked = (unmasked,) if isinstance(unmasked, str) else tuple(unmasked)  # one prefix: not its letters
    if isinstance(stem, bool) or not isinstance(stem, int) or stem < 0:
        raise UserError(f"stem must be a whole number >= 0 (the leading convs both networks share), got {stem!r}")
    model, input_shape, example = _prepare(model, alpha, beta, input_shape, copy_model)
    an = analyze(model, example, stem=stem, unmasked=unmasked)
    _check_options(an, model, stem, unmasked)
    _set_widths(an.groups, alpha, widths, max_widths)
    _warn_full_width(an, alpha, widths)
    _make_layers_adjoint(an, beta, mask_seed)
    slices = _add_channel_cuts(an)
    graph = an.gm.graph
    body_graph, small_graph = _two_path_graphs(graph, an, slices)
    body = fx.GraphModule(an.gm, body_graph)
    options = dict(alpha=alpha, beta=beta, stem=stem, unmasked=list(unmasked),
                   input_shape=list(input_shape), mask_seed=mask_seed)
    return AdjointNet(an, body, copy.deepcopy(graph), small_graph, options)


def _check_options(an: GraphAnalysis, model: nn.Module, stem: int, unmasked: tuple) -> None:
    """Refuse what would convert silently into something the user did not ask for (an audit's
    ``unmasked=('layerX',)``, a typo, left every width searched; ``stem=100`` shared every conv,
    so the small network was the big one)."""
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for p in unmasked:
        if not isinstance(p, str) or not any(n == p or n.startswith(p + ".") for n in layers):
            tops = sorted({n.split(".")[0] for n in layers}, key=[n.split(".")[0] for n in layers].index)
            raise UserError(f"unmasked {p!r} names no conv or linear layer of {type(model).__name__} (nor a module "
                            f"holding one): give module-name prefixes such as {', '.join(tops[:6])}")
    if not an.adjoint or all(g.fixed for g in an.groups):
        why = sorted({g.fixed for g in an.groups if g.fixed not in ("input", "output")})
        raise UserError(f"every width group of {type(model).__name__} stays at full width ({', '.join(why)}): the small "
                        f"network would be the big one; lower stem (now {stem}) or unmask fewer layers")


def check_network(model, does: str = "to_adjoint converts") -> None:
    """Refuse, in one line that says what to pass, a ``model`` that is not a network the conversion
    can take (``does``: the call's own words, "dan.search searches"): no module at all (None, a
    name, the builder function or class itself), or an adjoint network already. An audit's notebook
    met ``dan.search(None, data)`` as "this network was searched as a Python object (NoneType):
    rebuild it with dan.build_adjoint(...)", a name or ``torchvision.models.resnet18`` (not called)
    as an AttributeError, and an AdjointNet as "torch.fx cannot trace AdjointNet"."""
    if model is None:
        raise UserError(f"{does} a model (a torch.nn.Module), got None: build it first, e.g. "
                        f"torchvision.models.resnet18(num_classes=10)")
    if isinstance(model, str):
        raise UserError(f"{does} a torch.nn.Module, got a str ({model!r}): build the model first (e.g. "
                        f"torchvision.models.resnet18()); the tools take a model by name (--model)")
    if callable(model) and not isinstance(model, nn.Module):  # the builder itself, not what it builds
        kind = "class" if isinstance(model, type) else "function"
        name = getattr(model, "__name__", type(model).__name__)
        raise UserError(f"{does} a torch.nn.Module, got the {kind} {name} itself: call it to build the model, "
                        f"e.g. {name}(num_classes=10)")
    if not isinstance(model, nn.Module):
        raise UserError(f"{does} a torch.nn.Module, got a {type(model).__name__}: build the model first (e.g. "
                        f"torchvision.models.resnet18())")
    if isinstance(model, AdjointNet):
        raise UserError(f"{does} a network, and this one is already an adjoint network ({type(model).__name__}, "
                        f"dan.to_adjoint's output): pass the original model (to convert it again, e.g. with another "
                        f"alpha), or use this one as it is")
    if any(isinstance(m, _ADJOINT_LAYERS) for m in model.modules()):  # anet.big, anet.small, a wrapper of anet
        raise UserError(f"{does} a network, and this {type(model).__name__} holds an adjoint network's layers "
                        f"(anet.big, anet.small or a module around an AdjointNet): pass the original model, or "
                        f"convert the plain network dan.extract_big(anet) or dan.extract_small(anet) cuts out")


def _prepare(model: nn.Module, alpha: float, beta: float, input_shape: Optional[tuple],
             copy_model: bool) -> tuple:
    """Check the options; the model to convert (a copy unless ``copy_model`` is False, in-place
    ops turned off), the input shape and a zero example input on the model's device."""
    check_network(model)
    wrapped = {"DataParallel": "module", "DistributedDataParallel": "module", "OptimizedModule": "_orig_mod"}
    if type(model).__name__ in wrapped and isinstance(getattr(model, wrapped[type(model).__name__], None), nn.Module):
        what = "torch.compile" if type(model).__name__ == "OptimizedModule" else type(model).__name__
        raise UserError(f"to_adjoint converts the network itself, not a {what} wrapper of it: pass "
                        f"model.{wrapped[type(model).__name__]} (and wrap or compile the adjoint network after)")
    for name, value, what, e_g in (("alpha", alpha, ">= 1 (the small network keeps 1/alpha of a width)", "4"),
                                   ("beta", beta, "in [0, 1) (the fraction of weights r_beta zeroes)", "0.5")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # alpha="4" was a TypeError of ">="
            raise UserError(f"{name} must be a number {what}, got a {type(value).__name__} ({value!r}): pass "
                            f"a number, e.g. {name}={e_g}")
    if not alpha >= 1:  # NaN too (it reached ceil() and a ValueError)
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
    first_param = next(model.parameters())
    # in the model's own floating type: a float64 model was refused "on an input of shape ..."
    dtype = first_param.dtype if first_param.is_floating_point() else torch.float32
    return model, input_shape, torch.zeros(tuple(input_shape), device=first_param.device, dtype=dtype)


def _make_layers_adjoint(an: GraphAnalysis, beta: float, mask_seed: int) -> None:
    """Replace, in ``an.gm``, every layer with a small path by its adjoint version."""
    gm = an.gm
    by_name = {g.name: g for g in an.groups}
    nodes_by_target = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            nodes_by_target.setdefault(n.target, []).append(n)
    modules = dict(gm.named_modules())
    for name in sorted(an.adjoint):
        m = modules[name]
        in_name, out_name, mult = an.layer_groups[name]
        gi, go = _channels(in_name, by_name), _channels(out_name, by_name)
        if isinstance(m, nn.Conv2d):
            users = [u for n in nodes_by_target[name] for u in n.users]
            bn_next = len(users) == 1 and users[0].op == "call_module" and \
                isinstance(modules[users[0].target], nn.BatchNorm2d)
            new = AdjointConv2d.from_conv(m, gi, go, beta=beta, seed=mask_seed, name=name,
                                          apply_mask=not bn_next)
        elif isinstance(m, nn.BatchNorm2d):
            new = AdjointBatchNorm2d.from_bn(m, go, apply_mask=True)
        elif isinstance(m, nn.LayerNorm):
            new = AdjointLayerNorm.from_ln(m, go, channels_first=type(m).__name__ == "LayerNorm2d")
        elif isinstance(m, nn.GroupNorm):
            new = AdjointGroupNorm.from_gn(m, go)
        else:
            new = AdjointLinear.from_linear(m, gi, go, mult, beta=beta, seed=mask_seed, name=name,
                                            apply_mask=True)
        _set_submodule(gm, name, new)


def _add_channel_cuts(an: GraphAnalysis) -> dict:
    """Add to ``an.gm`` the modules that cut the small path's channels; returns the name of each
    (by attribute target or node name)."""
    gm = an.gm
    by_name = {g.name: g for g in an.groups}
    slices = {}
    # per-channel attributes (layer scale): the small path reads them through a ChannelSlice
    for k, (target, (names, dim)) in enumerate(sorted(an.attrs.items())):
        slices[target] = f"dan_slice_{k}"
        gm.add_submodule(slices[target], ChannelSlice(_channels(names, by_name), dim, target in an.additive))
    # splits and channel slices with sizes in the graph: the small path cuts at the same fractions
    # and means over the channels: over the small tensor's own (ChannelMean, for soft masks)
    for k, (node, (kind, cuts, dim, names, by_parts)) in enumerate(sorted(an.ranges.items())):
        slices[node] = f"dan_range_{k}"
        if kind == "mean":
            gm.add_submodule(slices[node], ChannelMean(_channels(names, by_name), dim))
            continue
        # one part cut at fractions: its group (and coefficient) weights the pieces under soft masks
        source, coef = (by_name[names[0][0]], names[0][1]) if not by_parts and len(names) == 1 else (None, 1)
        gm.add_submodule(slices[node], ChannelRange(cuts, dim, kind == "split",
                                                    _channels(names, by_name) if by_parts else None, source, coef))
    return slices


def _warn_full_width(an: GraphAnalysis, alpha: float, widths: Optional[dict]) -> None:
    """Warn of a group that ``alpha`` would narrow but that stays at full width because its widths
    must be multiples of its full width (``torch.split(x, [5, 27], 1)``: a narrower tensor cannot be
    cut at the same fractions). It was left at 32/32 without a word."""
    for g in an.groups:
        if g.fixed or g.name in (widths or {}) or g.width < g.full or alpha_width(g.full, alpha) == g.full:
            continue
        cuts = []
        for node, (kind, fractions, _, names, by_parts) in sorted(an.ranges.items()):
            if kind != "mean" and not by_parts and names[0][0] == g.name:
                total = names[0][1] * g.full
                cuts.append(f"node {node} cuts it into {' + '.join(str(int((b - a) * total)) for a, b in fractions)}")
        why = (f" ({', '.join(cuts)} channels, which no narrower width can be cut into in the same proportions); "
               f"split it into pieces that scale (torch.chunk, or sizes with a common factor)") if cuts else ""
        warnings.warn(f"width group '{g.name}' stays at its full {g.full} channels at alpha={alpha:g}: its widths must "
                      f"be multiples of {g.quantum}{why}", stacklevel=3)


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


def _channels(names, by_name: dict):
    """A group (a name), or :class:`Segments` of several (``((name, coef), ...)``)."""
    if isinstance(names, tuple):
        return Segments([(by_name[k], c) for k, c in names])
    return by_name[names]


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _two_path_graphs(graph: fx.Graph, an: GraphAnalysis, slices: dict):
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
        if n.name in an.ranges:  # cut the small tensor at fractions of its own width
            env_small[n] = body.call_module(slices[n.name], (env_small[n.args[0]],))
            env_only[n] = small.call_module(slices[n.name], (env_only[n.args[0]],))
            continue
        s = body.node_copy(n, lambda a: env_small[a])
        o = small.node_copy(n, lambda a: env_only[a])
        if n.op == "call_module" and n.target in an.adjoint:
            for node in (s, o):
                node.kwargs = {**node.kwargs, "small": True}
        if n.op == "get_attr" and n.target in slices:
            s = body.call_module(slices[n.target], (s,))
            o = small.call_module(slices[n.target], (o,))
        env_small[n], env_only[n] = s, o
    body.lint()
    small.lint()
    return body, small


def _conv_like(m: AdjointConv2d, cin: int, cout: int, groups: int, **kw) -> nn.Conv2d:
    """A conv of the converted one's own class with these sizes: nn.Conv2d, timm's Conv2dSame (its
    padding computed from the input as it runs), or a weight-standardized conv (timm's StdConv2d,
    ScaledStdConv2d and their "Same" variants, which derive their padding from "SAME" again)."""
    bias = m.bias is not None
    if m.standardize:
        name = m.original_class.__name__
        padding = "SAME" if name.endswith("Same") else m.padding
        extra = {"gamma": m.gamma} if m.standardize == "scaled" else {}
        return m.original_class(cin, cout, m.kernel_size, m.stride, padding, m.dilation, groups, bias,
                                eps=m.eps, **extra, **kw)
    if m.same_padding:
        return m.original_class(cin, cout, m.kernel_size, m.stride, 0, m.dilation, groups, bias, **kw)
    return nn.Conv2d(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups, bias, m.padding_mode, **kw)


def _plain_conv(m: AdjointConv2d) -> nn.Conv2d:
    w = m.small_raw_weight().detach()  # a standardized conv standardizes it again as it runs
    conv = _conv_like(m, w.shape[1] * m.small_groups(), w.shape[0], m.small_groups(), device=w.device, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(w)
        if m.bias is not None:
            conv.bias.copy_(m.bias[m.out_index()])
        if m.standardize == "scaled":
            conv.gain.copy_(m.gain[m.out_index()])
            conv.scale = m.small_scale(w)  # the very expression the small path uses
    return conv


def _bn_like(m: AdjointBatchNorm2d, n: int, tensors: dict) -> nn.BatchNorm2d:
    """An instance of the converted BatchNorm's own class (nn.BatchNorm2d, timm's BatchNormAct2d
    ...) with ``n`` channels holding ``tensors``, and its activation / dropout modules."""
    bn = copy.deepcopy(m.template)
    bn.num_features = n
    for k, v in tensors.items():
        v = v.detach().clone()
        if k in bn._parameters:
            bn._parameters[k] = nn.Parameter(v)
        else:
            bn._buffers[k] = v
    for k in m.post:
        setattr(bn, k, copy.deepcopy(getattr(m, k)))
    return bn.train(m.training)


def _plain_bn(m: AdjointBatchNorm2d) -> nn.BatchNorm2d:
    s, n = m.small, m.group.width
    device = next(iter(list(s.parameters()) + list(s.buffers())), torch.empty(0)).device  # none: nothing to cut
    w = m.group.index(device, layout="max")
    tensors = {}
    if s.affine:
        tensors.update(weight=s.weight[w], bias=s.bias[w])
    if s.track_running_stats:
        tensors.update(running_mean=s.running_mean[w], running_var=s.running_var[w],
                       num_batches_tracked=s.num_batches_tracked)
    return _bn_like(m, n, tensors).eval()


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
    if isinstance(m, AdjointBatchNorm2d):
        state = {k: v for k, v in m.state_dict().items() if "." not in k}  # not small.*, act.*
        return _bn_like(m, m.num_features, state)
    if isinstance(m, AdjointGroupNorm):
        return _gn_like(m, m.num_channels, {k: v for k, v in m.state_dict().items() if "." not in k})
    if isinstance(m, AdjointLayerNorm):
        new = m.original_class(m.normalized_shape, m.eps, m.elementwise_affine, bias=m.bias is not None,
                               device="meta")
    elif isinstance(m, AdjointConv2d):
        new = _conv_like(m, m.in_channels, m.out_channels, m.groups, device="meta")
    else:
        new = nn.Linear(m.in_features, m.out_features, m.bias is not None, device="meta")
    state = {k: v.detach().clone() for k, v in m.state_dict().items()
             if not k.startswith("small.") and k != "rbeta"}
    new.load_state_dict(state, assign=True)
    if isinstance(m, AdjointConv2d) and m.standardize == "scaled":
        new.scale = m.scale  # the original's, not one derived again from gamma
    return new.train(m.training)


def _check_adjoint(anet, what: str) -> None:
    """A wrapped adjoint network or a plain model is the caller's to fix (they raised TypeError and
    AttributeError from inside)."""
    if isinstance(anet, AdjointNet):
        return
    inner = getattr(anet, "module", None) or getattr(anet, "_orig_mod", None)
    hint = (f"pass the adjoint network it wraps ({'model.module' if hasattr(anet, 'module') else 'model._orig_mod'})"
            if isinstance(inner, AdjointNet) else "convert the model first: dan.to_adjoint(model)")
    raise UserError(f"{what} takes an adjoint network (dan.to_adjoint, dan.build_adjoint), got a "
                    f"{type(anet).__name__}: {hint}")


def extract_big(anet: AdjointNet) -> fx.GraphModule:
    """A plain ``torch.nn`` copy of the big network (no small BatchNorms, no masks), eval mode."""
    _check_adjoint(anet, "extract_big")
    root = copy.deepcopy(anet.body)
    for name, m in list(root.named_modules()):
        if isinstance(m, _ADJOINT_LAYERS):
            _set_submodule(root, name, _plain_big(m))
    _fixed_blur_pools(anet, root, big=True)
    _tie_again(anet.body, root)
    return fx.GraphModule(root, copy.deepcopy(anet.__dict__["_big_graph"])).eval()


def _tie_again(source: nn.Module, root: nn.Module) -> None:
    """Parameters one object in ``source`` (weight tying: ``b.weight = a.weight``) made one again in
    the extracted ``root`` wherever their copies are equal: each layer's copy made two, and the
    extracted network counted, stored and trained them twice."""
    owner: dict = {}
    for name, p in source.named_parameters(remove_duplicate=False):
        first = owner.setdefault(id(p), name)
        if first == name:
            continue
        try:
            kept, copied = root.get_parameter(first), root.get_parameter(name)
        except AttributeError:  # not in the extracted network
            continue
        if kept is not copied and kept.shape == copied.shape and torch.equal(kept, copied):
            parent, _, leaf = name.rpartition(".")
            setattr(root.get_submodule(parent) if parent else root, leaf, kept)


def _fixed_blur_pools(anet: AdjointNet, root: nn.Module, *, big: bool) -> None:
    """The converted network's blur pools expand one filter to their input's channels (see
    ``dan.graph._on_blur_pool``), a kernel whose shape the TorchScript ONNX exporter cannot know;
    an extracted network knows its widths, so each holds one copy per channel again, as timm's
    BlurPool2d(channels=c) does."""
    modules = dict(root.named_modules())  # (layer_groups also names "<root>.<name>": the model's own parameters)
    for name, (_, names, _) in anet.layer_groups.items():
        m = modules.get(name)
        if type(m).__name__ != "BlurPool2d" or getattr(m, "channels", 0) is not None:
            continue
        c = anet.channels(names).full if big else anet.channels(names).width
        new = copy.deepcopy(m)
        new.channels, new.filt = c, m.filt[:1].repeat(c, 1, 1, 1)
        _set_submodule(root, name, new)


def extract_small(anet: AdjointNet) -> fx.GraphModule:
    """Cut the small network out of an adjoint network.

    Returns a plain ``torch.nn`` model (an ``fx.GraphModule`` of standard Conv2d / BatchNorm2d /
    Linear modules, in eval mode) whose outputs equal ``anet``'s small-path outputs in eval mode.
    It holds only the small network's weights (sliced, r_β zeros included), so ``dan.count``
    shows the real reduction; no class of this package is needed to run it.
    """
    _check_adjoint(anet, "extract_small")
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
        elif isinstance(m, AdjointLayerNorm):
            _set_submodule(root, name, _plain_ln(m))
        elif isinstance(m, AdjointGroupNorm):
            i = m.group.index(m.weight.device if m.weight is not None else None)
            _set_submodule(root, name, _gn_like(m, m.group.width, {k: v[i] for k, v in m.state_dict().items()
                                                                  if "." not in k}))
    for target, (names, dim) in anet.attrs.items():  # per-channel attributes: their small entries
        owner, _, leaf = target.rpartition(".")
        holder = root.get_submodule(owner) if owner else root
        value = ChannelSlice(anet.channels(names), dim)(getattr(holder, leaf)).detach().clone()
        if isinstance(getattr(holder, leaf), nn.Parameter):
            value = nn.Parameter(value)
        delattr(holder, leaf)
        setattr(holder, leaf, value)
    _fixed_blur_pools(anet, root, big=False)
    _tie_again(anet.body, root)
    graph = copy.deepcopy(anet.__dict__["_big_graph"])
    for n in graph.nodes:  # splits and channel slices: the small network's sizes
        if n.name not in anet.ranges or anet.ranges[n.name][0] == "mean":  # a mean stays as traced
            continue
        kind, cuts, dim, names, by_parts = anet.ranges[n.name]
        channels = anet.channels(names)
        cuts = cut_bounds(cuts, channels.width, channels if by_parts else None)
        if kind == "split":  # a chunk too: the pieces are equal, written as sizes
            n.args, n.kwargs = (n.args[0], [b - a for a, b in cuts], dim), {}
            n.target = {"chunk": "split", torch.chunk: torch.split}.get(n.target, n.target)
        else:
            n.args = (n.args[0], (slice(None),) * dim + (slice(*cuts[0]),))
    return fx.GraphModule(root, graph).eval()


def _gn_like(m: AdjointGroupNorm, n: int, tensors: dict) -> nn.GroupNorm:
    """An instance of the converted GroupNorm's own class (nn.GroupNorm, timm's GroupNormAct) over
    ``n`` channels in groups of the original size, holding ``tensors``, with its dropout and
    activation."""
    gn = copy.deepcopy(m.template)
    gn.num_channels, gn.num_groups = n, n // m.group_size
    for k, v in tensors.items():
        gn._parameters[k] = nn.Parameter(v.detach().clone())
    for k in m.post:
        setattr(gn, k, copy.deepcopy(getattr(m, k)))
    return gn.train(m.training)


def _plain_ln(m: AdjointLayerNorm) -> nn.LayerNorm:
    w = m.group.width
    ln = m.original_class((w,), m.eps, m.elementwise_affine, bias=m.bias is not None)
    ln = ln.to(m.weight.device if m.weight is not None else "cpu")
    with torch.no_grad():
        i = m.index()
        if m.weight is not None:
            ln.weight.copy_(m.weight[i])
        if m.bias is not None:
            ln.bias.copy_(m.bias[i])
    return ln.train(m.training)
