"""Width groups: which channels must keep the same width in the small network.

The model is traced with ``torch.fx`` and every tensor of the graph gets the width group of its
channel dimension (dim 1). A conv or linear layer starts a new group for its output channels;
BatchNorm, activations and pooling keep the group of their input; ``a + b`` and ``a * b`` merge
the groups of their inputs (channels that meet at a residual add must be equally wide); a depthwise
or grouped conv with as many outputs as inputs ties its output to its input group. ``flatten``
turns channels into features: the tensor keeps its group with a multiplier (features per channel),
because flattening NCHW is channel-major and the leading ``w·H·W`` features are exactly the leading
``w`` channels.

Groups that touch the network input or output, or the output of the stem convs (which the paper
leaves shared and unmasked, §5), are *fixed*: their small width is their full width.

Anything outside the table of supported operations raises :class:`UnsupportedModelError` naming
the module or the operation, instead of silently producing a wrong small network.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from dan.errors import UnsupportedModelError


@dataclass(eq=False)
class WidthGroup:
    """Channels that share one width in the small network.

    ``width`` is what the small path computes now (tensors are sliced to it); ``mask`` is an
    optional soft channel mask of length ``width`` (used by DAN search); ``max_width`` sizes the
    small network's own BatchNorm.
    """

    name: str
    full: int
    width: int = 0
    max_width: int = 0
    quantum: int = 1  # widths are multiples of this (grouped convs keep their group size)
    fixed: str = ""  # non-empty: why the width must stay full (input, output, stem, unmasked)
    producers: list = field(default_factory=list)  # convs / linears writing these channels
    mask: Optional[torch.Tensor] = None

    def __repr__(self) -> str:
        tag = f", fixed={self.fixed}" if self.fixed else ""
        return f"WidthGroup({self.name!r}, {self.width}/{self.full}{tag})"


@dataclass
class TensorInfo:
    gid: int  # union-find id of the channel group
    mult: int = 1  # features per channel (1 for feature maps, H·W after flatten)


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, torch.relu, F.silu, F.gelu, F.hardswish, F.hardsigmoid, torch.sigmoid,
    F.sigmoid, torch.tanh, F.leaky_relu, F.elu, F.dropout, F.dropout2d, F.max_pool2d,
    F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.nn.functional.mish,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_BINARY = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.truediv,
           torch.add, torch.mul, torch.sub}
_BINARY_METHODS = {"add", "mul", "sub", "add_", "mul_"}
_FLATTEN_FUNCTIONS = {torch.flatten}
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_SHAPE_OPS = {getattr, operator.getitem}
_SHAPE_METHODS = {"size", "dim"}


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []
        self.full: list[int] = []
        self.quantum: list[int] = []
        self.fixed: list[str] = []

    def new(self, full: int, fixed: str = "") -> int:
        self.parent.append(len(self.parent))
        self.full.append(full)
        self.quantum.append(1)
        self.fixed.append(fixed)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int, where: str) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.full[a] != self.full[b]:
            raise UnsupportedModelError(
                f"{where}: joins {self.full[a]} and {self.full[b]} channels; cannot give them one width")
        lo, hi = min(a, b), max(a, b)  # keep the older id as root: names follow graph order
        self.parent[hi] = lo
        self.quantum[lo] = math.lcm(self.quantum[lo], self.quantum[hi])
        self.fixed[lo] = self.fixed[lo] or self.fixed[hi]
        return lo

    def fix(self, i: int, why: str) -> None:
        r = self.find(i)
        self.fixed[r] = self.fixed[r] or why


@dataclass
class GraphAnalysis:
    """Result of :func:`analyze`: the traced module, its groups and how each layer uses them."""

    gm: fx.GraphModule
    groups: list[WidthGroup]
    layer_groups: dict  # module name -> (in_group_name, out_group_name, in_mult)
    adjoint: set  # module names of the convs/linears that get a small path of their own
    shared: set  # node names computed once for both networks (input and stem)
    stem: list  # module names of the stem convs
    node_shapes: dict  # node name -> output shape (from the example input)


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # tracing failures come as many exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(
            f"torch.fx cannot trace {type(model).__name__}: {first}. Make the forward free of "
            f"data-dependent Python control flow") from e


def analyze(model: nn.Module, example: torch.Tensor, *, stem: int = 1,
            unmasked: tuple = ()) -> GraphAnalysis:
    """Trace ``model`` and assign a width group to every conv, BatchNorm and linear layer."""
    gm = trace(model)
    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    gm.train(was_training)
    modules = dict(gm.named_modules())
    uf = _UnionFind()
    info: dict[fx.Node, Optional[TensorInfo]] = {}
    layer_io: dict[str, list] = {}
    producers: dict[int, list] = {}
    shapes: dict[str, tuple] = {}
    shared: set[str] = set()
    stem_convs: list[str] = []
    adjoint: set[str] = set()

    def shape(n):
        tm = n.meta.get("tensor_meta")
        return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None

    def tensor_args(n):
        return [a for a in n.all_input_nodes if info.get(a) is not None]

    def same_as_first(n):
        ins = tensor_args(n)
        return TensorInfo(info[ins[0]].gid, info[ins[0]].mult) if ins else None

    for n in gm.graph.nodes:
        shapes[n.name] = shape(n)
        where = f"node {n.name} ({n.op} {getattr(n.target, '__name__', n.target)})"
        if n.op == "placeholder":
            s = shape(n)
            if s is None or len(s) != 4:
                raise UnsupportedModelError(f"input {n.name}: expected one NCHW image tensor")
            info[n] = TensorInfo(uf.new(s[1], "input"))
            shared.add(n.name)
            continue
        if n.op == "output":
            out = n.args[0]
            if not isinstance(out, fx.Node) or info.get(out) is None:
                raise UnsupportedModelError("the model must return one tensor of logits")
            uf.fix(info[out].gid, "output")
            continue
        if n.op == "get_attr":
            raise UnsupportedModelError(f"{where}: tensors read from attributes are not supported")

        ins = tensor_args(n)
        all_shared = all(a.name in shared for a in n.all_input_nodes)
        if n.op == "call_module":
            m = modules[n.target]
            if isinstance(m, nn.Conv2d):
                x = info[ins[0]]
                if x.mult != 1:
                    raise UnsupportedModelError(f"conv {n.target} reads a flattened tensor")
                if m.padding_mode != "zeros":
                    raise UnsupportedModelError(f"conv {n.target}: padding_mode {m.padding_mode!r}")
                is_stem = len(stem_convs) < stem and all_shared
                if m.groups == 1:
                    gid = uf.new(m.out_channels, "stem" if is_stem else "")
                elif m.in_channels == m.out_channels:  # depthwise / ResNeXt: width tied to the input
                    gid = x.gid
                    r = uf.find(gid)
                    uf.quantum[r] = math.lcm(uf.quantum[r], m.in_channels // m.groups)
                    if is_stem:
                        uf.fix(gid, "stem")
                else:
                    raise UnsupportedModelError(
                        f"conv {n.target}: grouped conv with {m.in_channels} inputs and "
                        f"{m.out_channels} outputs (a channel multiplier) is not supported")
                prev = layer_io.get(n.target)
                if prev is not None:  # a conv called twice: both calls share its groups
                    uf.union(prev[0], x.gid, where)
                    gid = uf.union(prev[1], gid, where)
                layer_io[n.target] = [x.gid, gid, 1]
                producers.setdefault(gid, []).append(n.target)
                info[n] = TensorInfo(gid)
                if is_stem:
                    stem_convs.append(n.target)
                    shared.add(n.name)
                else:
                    adjoint.add(n.target)
                continue
            if isinstance(m, nn.BatchNorm2d):
                x = info[ins[0]]
                layer_io[n.target] = [x.gid, x.gid, 1]
                info[n] = TensorInfo(x.gid)
                if all_shared:
                    shared.add(n.name)
                else:
                    adjoint.add(n.target)
                continue
            if isinstance(m, nn.Linear):
                x = info[ins[0]]
                s = shapes[ins[0].name]
                if s is None or len(s) != 2:
                    raise UnsupportedModelError(f"linear {n.target} must read a (N, features) tensor")
                gid = uf.new(m.out_features)
                layer_io[n.target] = [x.gid, gid, x.mult]
                producers.setdefault(gid, []).append(n.target)
                info[n] = TensorInfo(gid)
                adjoint.add(n.target)
                continue
            if isinstance(m, nn.Flatten):
                info[n] = _flatten(info[ins[0]], shapes[ins[0].name], m.start_dim, m.end_dim, where)
            elif isinstance(m, _ELEMENTWISE_MODULES):
                info[n] = same_as_first(n)
            else:
                raise UnsupportedModelError(
                    f"module {n.target} ({type(m).__name__}) is not supported by the adjoint "
                    f"conversion (supported: Conv2d, BatchNorm2d, Linear, activations, pooling, "
                    f"dropout, flatten, add/mul)")
        elif n.op == "call_function":
            f = n.target
            if f in _ELEMENTWISE_FUNCTIONS:
                info[n] = same_as_first(n)
            elif f in _BINARY:
                info[n] = _binary(n, ins, info, shapes, uf, where)
            elif f in _FLATTEN_FUNCTIONS:
                start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
                end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
                info[n] = _flatten(info[ins[0]], shapes[ins[0].name], start, end, where)
            elif f in _SHAPE_OPS:
                info[n] = None
                if shape(n) is not None:
                    raise UnsupportedModelError(f"{where}: indexing a tensor is not supported")
            else:
                raise UnsupportedModelError(
                    f"{where}: the operation {getattr(f, '__name__', f)} is not supported by the "
                    f"adjoint conversion")
        elif n.op == "call_method":
            mname = n.target
            if mname in _ELEMENTWISE_METHODS:
                info[n] = same_as_first(n)
            elif mname in _BINARY_METHODS:
                info[n] = _binary(n, ins, info, shapes, uf, where)
            elif mname in _RESHAPE_METHODS:
                src = shapes[ins[0].name]
                dst = shape(n)
                if src is None or dst is None or len(dst) != 2 or dst[0] != src[0]:
                    raise UnsupportedModelError(f"{where}: only (N, -1) reshapes are supported")
                info[n] = _flatten(info[ins[0]], src, 1, -1, where)
            elif mname == "mean":
                dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
                dims = [dims] if isinstance(dims, int) else list(dims or [])
                if not dims or any(d % len(shapes[ins[0].name]) < 2 for d in dims):
                    raise UnsupportedModelError(f"{where}: mean over the channel or batch dimension")
                info[n] = same_as_first(n)
            elif mname in _SHAPE_METHODS:
                info[n] = None
            else:
                raise UnsupportedModelError(f"{where}: the method .{mname}() is not supported")
        else:
            raise UnsupportedModelError(f"{where}: unsupported graph node")
        if all_shared:  # computed from the input and the stem only: one copy serves both networks
            shared.add(n.name)

    # unmasked layers: the groups they write stay at full width
    for name, (gi, go, _) in layer_io.items():
        if any(name == p or name.startswith(p + ".") for p in unmasked):
            uf.fix(go, "unmasked")

    # one WidthGroup per union-find root, named after its first producer (or its role)
    roots: dict[int, WidthGroup] = {}
    order: list[int] = []
    for gid in range(len(uf.parent)):
        r = uf.find(gid)
        if r not in roots:
            roots[r] = WidthGroup(name="", full=uf.full[r], quantum=uf.quantum[r], fixed=uf.fixed[r])
            order.append(r)
        roots[r].producers.extend(producers.get(gid, []))
    for r in order:
        g = roots[r]
        g.name = g.producers[0] if g.producers else g.fixed or f"group{r}"
        g.width = g.max_width = g.full
    layer_groups = {name: (roots[uf.find(gi)].name, roots[uf.find(go)].name, mult)
                    for name, (gi, go, mult) in layer_io.items()}
    groups = [roots[r] for r in order]
    names = [g.name for g in groups]
    assert len(set(names)) == len(names), names
    return GraphAnalysis(gm, groups, layer_groups, adjoint, shared, stem_convs, shapes)


def _flatten(x: TensorInfo, s, start, end, where) -> TensorInfo:
    if s is None or start != 1 or end not in (-1, len(s) - 1):
        raise UnsupportedModelError(f"{where}: only flatten(x, 1) is supported")
    return TensorInfo(x.gid, x.mult * math.prod(s[2:]))


def _binary(n, ins, info, shapes, uf, where) -> TensorInfo:
    chan = []
    for a in ins:
        s = shapes[a.name]
        if s is not None and len(s) >= 2 and s[1] == 1 and s != shapes[n.name]:
            continue  # broadcast along channels: carries no channel group
        chan.append(a)
    if not chan:
        return TensorInfo(info[ins[0]].gid, info[ins[0]].mult)
    gid, mult = info[chan[0]].gid, info[chan[0]].mult
    for a in chan[1:]:
        if info[a].mult != mult:
            raise UnsupportedModelError(f"{where}: combines tensors of different layouts")
        gid = uf.union(gid, info[a].gid, where)
    return TensorInfo(gid, mult)
