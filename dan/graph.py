"""Width groups: which channels must keep the same width in the small network.

The model is traced with ``torch.fx`` and every tensor of the graph gets the width group of its
channel dimension (dim 1). A conv or linear layer starts a new group for its output channels;
BatchNorm, activations and pooling keep the group of their input; ``a + b`` and ``a * b`` merge
the groups of their inputs (channels that meet at a residual add must be equally wide); a depthwise
or grouped conv with as many outputs as inputs ties its output to its input group. ``flatten``
turns channels into features: the tensor keeps its group with a multiplier (features per channel),
because flattening NCHW is channel-major and the leading ``w·H·W`` features are exactly the leading
``w`` channels. A grouped conv with k times as many outputs as inputs (FastViT) makes one part of k
times its input's group. Norms over the channels (LayerNorm, GroupNorm at its group size, GRN's
channel mean) are computed over the small network's own channels; a view that only adds or drops
dims of size 1 moves the channels to another dim (ECA's Conv1d along them).

Groups that touch the network input or output, or the output of the stem convs (which the paper
leaves shared and unmasked, §5), are *fixed*: their small width is their full width.

Anything outside the table of supported operations raises :class:`UnsupportedModelError` naming
the module or the operation, instead of silently producing a wrong small network.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import operator
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from dan.cost import ROOT
from dan.errors import UnsupportedModelError, out_of_memory, quiet_fx_errors


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

    def mask_to(self, width: int, device=None) -> None:
        """Full width with a 0/1 mask keeping the leading ``width`` channels: DAN search's
        relaxation at a vertex (and the paper code's zeroed small path), which computes what the
        small path at ``width`` computes."""
        self.width, self.mask = self.full, (torch.arange(self.full, device=device) < width).float()

    def index(self, device=None, *, mult: int = 1, layout: str = "full") -> slice:
        """Positions of the small channels: the leading ``width`` (times ``mult`` features each).
        The same call as :meth:`Segments.index`, so layers index either alike."""
        return slice(0, self.width * mult)

    def __repr__(self) -> str:
        tag = f", fixed={self.fixed}" if self.fixed else ""
        return f"WidthGroup({self.name!r}, {self.width}/{self.full}{tag})"


class Segments:
    """The channels of a tensor made of several width groups, or of a multiple of one.

    ``parts`` is a list of ``(group, coef)``: part ``k`` occupies ``coef_k · full_k`` channels of
    the big tensor and ``coef_k · width_k`` of the small one, parts side by side. ``coef`` is 1 for
    the parts of a concatenation (DenseNet, Inception); a channel shuffle or a chunk (ShuffleNet)
    leaves one part with a coefficient of 2 or 1/2: the small tensor is then the same operation
    applied to the small tensors, and a layer reading it uses its leading channels. It offers what
    a layer needs from a :class:`WidthGroup` (``width``, ``full``, ``max_width``, ``mask``) plus the
    positions that select the small tensor's channels out of the big one.
    """

    def __init__(self, parts: list):
        self.parts = [(g, Fraction(c)) for g, c in parts]
        self.groups = [g for g, _ in self.parts]
        self.name = "+".join(g.name if c == 1 else f"{c}*{g.name}" for g, c in self.parts)

    def _sum(self, key) -> int:
        return int(sum(c * key(g) for g, c in self.parts))

    @property
    def width(self) -> int:
        return self._sum(lambda g: g.width)

    @property
    def full(self) -> int:
        return self._sum(lambda g: g.full)

    @property
    def max_width(self) -> int:
        return self._sum(lambda g: g.max_width)

    @property
    def fixed(self) -> str:
        return "" if any(not g.fixed for g in self.groups) else "made of fixed groups"

    def index(self, device=None, *, mult: int = 1, layout: str = "full") -> torch.Tensor:
        """Positions of the small channels (times ``mult`` features each) within a tensor whose
        parts are ``full`` wide (the big network's) or ``max`` wide (a small BatchNorm's)."""
        idx, start = [], 0
        for g, c in self.parts:
            idx.append(torch.arange(start * mult, (start + int(c * g.width)) * mult, device=device))
            start += int(c * (g.full if layout == "full" else g.max_width))
        return torch.cat(idx)

    def max_index(self, device=None) -> torch.Tensor:
        """Positions, in the big tensor, of each part's leading ``max_width`` channels."""
        idx, start = [], 0
        for g, c in self.parts:
            idx.append(torch.arange(start, start + int(c * g.max_width), device=device))
            start += int(c * g.full)
        return torch.cat(idx)

    @property
    def mask(self) -> Optional[torch.Tensor]:
        """The parts' soft channel masks side by side, or None. A group's mask is the expected
        step ``m[j] = P(width > j)``; a part of coefficient ``c`` keeps the leading ``c · width``
        channels (what :meth:`index` cuts, for a multiplier conv's outputs as for a split piece), so
        its mask is ``P(c · width > j) = m[⌊j / c⌋]``: each channel repeated ``c`` times, or every
        ``1/c``-th one: at a 0/1 point, the small network's channels (a chunk of a shuffled tensor
        is cut per width by :class:`dan.layers.ChannelRange`, as the small network cuts it)."""
        if all(g.mask is None for g in self.groups):
            return None
        ref = next(g.mask for g in self.groups if g.mask is not None)
        out = []
        for g, c in self.parts:
            n = int(c * g.width)
            if g.mask is None:
                out.append(ref.new_ones(n))
            elif c == 1:
                out.append(g.mask)
            else:
                at = torch.arange(n, device=g.mask.device) * c.denominator // c.numerator
                out.append(g.mask[at])
        return torch.cat(out)

    def __repr__(self) -> str:
        return f"Segments({self.name!r}, {self.width}/{self.full})"


ONE = Fraction(1)


@dataclass
class TensorInfo:
    """The channel dimension (dim 1) of a tensor: ``parts``, ``((gid, coef), ...)`` side by side
    (one part ``(gid, 1)`` for the output of a conv; several for a concatenation)."""

    parts: tuple
    mult: int = 1  # features per channel (1 for feature maps, H·W after flatten)
    split: int = 0  # a 5-D view (N, split, C/split, H, W) of the channels: a channel shuffle
    transposed: bool = False  # ... whose two channel dimensions were swapped
    cdim: int = 1  # which dimension holds the channels (3 after ConvNeXt's permute(0, 2, 3, 1))

    @property
    def gid(self) -> int:
        return self.parts[0][0]

    @property
    def simple(self) -> bool:
        return len(self.parts) == 1 and self.parts[0][1] == 1

    def copy(self) -> "TensorInfo":
        return dataclasses.replace(self)


def _one(gid: int, mult: int = 1, cdim: int = 1) -> TensorInfo:
    return TensorInfo(((gid, ONE),), mult, cdim=cdim)


@dataclass
class _Attr:
    """A tensor read from an attribute (``get_attr``): a per-channel factor once it meets a feature
    map (ConvNeXt's layer scale, shape (C, 1, 1); timm's ``gamma.reshape(1, -1, 1, 1)``)."""

    target: str
    shape: tuple  # its shape where it meets the feature map
    origin: tuple = ()  # its shape as stored (when it was reshaped on the way)


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, torch.relu, F.silu, F.gelu, F.hardswish, F.hardsigmoid, torch.sigmoid,
    F.sigmoid, torch.tanh, F.leaky_relu, F.elu, F.dropout, F.dropout2d, F.max_pool2d,
    F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.nn.functional.mish, F.interpolate,
}
# Modules of other packages that act on their input elementwise, by class name: stochastic depth
# (torchvision) and drop path (timm) zero whole samples at random in training and are the identity
# in eval; in an adjoint network each path draws its own noise, as each would with dropout.
_ELEMENTWISE_FOREIGN_MODULES = {"StochasticDepth", "DropPath"}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
# elementwise arithmetic of feature maps and per-channel attributes (addcmul: a + b·c, timm's GRN)
_BINARY = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.truediv,
           torch.add, torch.mul, torch.sub, torch.addcmul}
_BINARY_METHODS = {"add", "mul", "sub", "add_", "mul_"}
_FLATTEN_FUNCTIONS = {torch.flatten}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
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
    # per-channel tensors read from attributes (ConvNeXt's layer scale): target -> (group, dim)
    attrs: dict = field(default_factory=dict)
    # channel ranges cut with sizes baked into the graph (split, x[:, a:b]): node name ->
    # (kind "split" | "slice", cuts, dim, channels read); cuts are [(start, end)] as fractions of
    # the channels, or as part indices ("parts": the cuts fall between parts of a concatenation);
    # kind "mean": a mean over the channels (no cuts), which the small path takes over its own
    ranges: dict = field(default_factory=dict)
    # per-channel attributes added to a feature map (GRN's bias), not multiplied: the search's soft
    # masks must reach them, or a masked channel would carry the term into the next layer
    additive: set = field(default_factory=set)


# Modules of other packages traced as one call (leaves), by class name: their forward is known and
# handled as a whole (a LayerNorm2d permutes, normalizes the channels and permutes back; stochastic
# depth and drop path read ``self.training`` when they run; timm's norm-and-activation layers run
# their norm, dropout and activation; its TensorFlow-style "same" conv and pools pad by an amount
# computed from the input's size in Python, which fx cannot trace: a conv with that padding is an
# ordinary conv here, see ``SAME_PADDING_CONVS``; its weight-standardized convs, see
# ``STANDARDIZED_CONVS``; BlurPool2d and SpaceToDepth, see their handlers).
_LEAF_CLASS_NAMES = {"LayerNorm2d", "StochasticDepth", "DropPath", "BatchNormAct2d", "GroupNormAct",
                     "Conv2dSame", "MaxPool2dSame", "AvgPool2dSame", "BlurPool2d", "SpaceToDepth", "StdConv2d",
                     "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame"}
# Conv2d subclasses (by class name) whose forward pads the input as TensorFlow's "SAME" does (the
# output size ceil(input / stride), the odd pixel on the bottom / right) and then convolves without
# padding; the adjoint conv pads so too (:func:`dan.layers.same_padding`) and extraction rebuilds
# the original class.
SAME_PADDING_CONVS = {"Conv2dSame"}
# Conv2d subclasses (by class name) that convolve with their weight standardized per output channel
# (timm's StdConv2d for BiT ResNets; ScaledStdConv2d, times gain · gamma / sqrt(fan-in), for
# NFNets); their "Same" variants pad as TensorFlow does when their ``same_pad`` is set. The adjoint
# conv standardizes its small weight over the small fan-in (:class:`dan.layers.AdjointConv2d`).
STANDARDIZED_CONVS = {"StdConv2d": "std", "StdConv2dSame": "std", "ScaledStdConv2d": "scaled",
                      "ScaledStdConv2dSame": "scaled"}
# ... and by qualified name: subclasses whose forward is their base class's (timm's Linear casts
# dtypes for TorchScript only)
_LEAF_QUALNAMES = {"timm.layers.linear.Linear"}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        cls = type(m)
        return cls.__name__ in _LEAF_CLASS_NAMES or f"{cls.__module__}.{cls.__qualname__}" in _LEAF_QUALNAMES \
            or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(model)
        return fx.GraphModule(model, graph, type(model).__name__)
    except Exception as e:  # tracing failures come as many exception types
        if out_of_memory(e):  # a forward that allocates while traced: the machine's memory, not the code
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(
            f"torch.fx cannot trace {type(model).__name__}: {first}. Make the forward free of "
            f"data-dependent Python control flow") from e


def _arg(n: fx.Node, pos: int, key: str, default):
    return n.args[pos] if len(n.args) > pos else n.kwargs.get(key, default)


def _dropout_module(n: fx.Node) -> Optional[nn.Module]:
    """The module equivalent of a functional dropout-like call, whose ``training`` flag tracing
    froze at its value during the trace (``F.dropout(x, p, training=self.training)`` becomes
    ``training=True`` in the graph: stochastic in eval, a silent error); ``None`` for other nodes."""
    if n.op != "call_function":
        return None
    f = n.target
    if f is F.dropout or f is F.dropout2d:
        return (nn.Dropout if f is F.dropout else nn.Dropout2d)(_arg(n, 1, "p", 0.5))
    where = (getattr(f, "__module__", None), getattr(f, "__name__", None))
    if where == ("torchvision.ops.stochastic_depth", "stochastic_depth"):
        from torchvision.ops import StochasticDepth
        return StochasticDepth(_arg(n, 1, "p", 0.0), _arg(n, 2, "mode", "row"))
    if where[1] == "drop_path" and str(where[0]).startswith("timm."):
        from timm.layers import DropPath
        return DropPath(_arg(n, 1, "drop_prob", 0.0), _arg(n, 3, "scale_by_keep", True))
    return None


def _dynamic_training(gm: fx.GraphModule) -> None:
    """Replace functional dropout-like calls by their modules, which read ``self.training`` when
    they run (``anet.train()`` / ``.eval()`` then switch them, as in the original model)."""
    for n in list(gm.graph.nodes):
        m = _dropout_module(n)
        if m is None:
            continue
        name, k = f"dan_{n.name}", 0
        while hasattr(gm, name):
            name, k = f"dan_{n.name}_{k}", k + 1
        gm.add_submodule(name, m)
        with gm.graph.inserting_after(n):
            new = gm.graph.call_module(name, (n.args[0],))
        n.replace_all_uses_with(new)
        gm.graph.erase_node(n)
    gm.recompile()


def analyze(model: nn.Module, example: torch.Tensor, *, stem: int = 1,
            unmasked: tuple = ()) -> GraphAnalysis:
    """Trace ``model`` and assign a width group to every conv, BatchNorm and linear layer.

    Every node of the graph goes to the handler of its kind (:data:`_GRAPH_HANDLERS` for inputs,
    outputs and attributes, then :data:`_MODULE_HANDLERS`, :data:`_FUNCTION_HANDLERS` or
    :data:`_METHOD_HANDLERS` by its target); anything without a handler is refused."""
    gm = trace(model)
    _dynamic_training(gm)
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if isinstance(out, fx.Node) and _returns_several(out):  # before the input size, which is then moot
        raise UnsupportedModelError(_returns_several(out))
    _propagate_shapes(gm, model, example)
    w = _Walk(gm, stem, dict(gm.named_modules()))
    for n in gm.graph.nodes:
        _visit(w, n)
    # unmasked layers: the groups they write stay at full width
    for name, (gi, go, _) in w.layer_io.items():
        if any(name == p or name.startswith(p + ".") for p in unmasked):
            for gid, _ in go:
                w.uf.fix(gid, "unmasked")
    _check_constant_features(w)
    _share_attributes(w)
    return _result(w)


def _share_attributes(w: "_Walk") -> None:
    """Attributes read only by nodes both networks share (an input normalization's mean and std)
    are read once too, at full width (a small copy, cut to the small channels, would go unused).
    Users first: a reshaped attribute decides before the attribute it reshapes."""
    for n in reversed(list(w.gm.graph.nodes)):
        if n in w.attr_nodes and n.users and all(u.name in w.shared for u in n.users):
            w.shared.add(n.name)


def _propagate_shapes(gm: fx.GraphModule, model: nn.Module, example: torch.Tensor) -> None:
    """Record every node's output shape (``n.meta["tensor_meta"]``) for ``example``, in eval mode."""
    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        try:  # run it plainly first: ShapeProp prints a traceback of its own before raising
            with quiet_fx_errors():  # the failure is the user's one line (the input size)
                gm(example)
        except Exception as e:
            if out_of_memory(e):  # the network is too large for this machine, not the input wrong
                raise
            raise UnsupportedModelError(_wrong_input(gm, model, example, e)) from e
        ShapeProp(gm).propagate(example)
    gm.train(was_training)


def _wrong_input(gm: fx.GraphModule, model: nn.Module, example: torch.Tensor, e: Exception) -> str:
    """What is wrong with ``example`` and how to give another input: the option and the flags
    that set it, and the smallest square size the network runs on when there is one above."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # a message formatted while tracing shows a traced size as "Proxy(getitem_2)" (ViT's "Wrong
    # image height! Expected 224 but got Proxy(getitem_2)!"): the expected size is what helps
    first = re.sub(r",? but got Proxy\([^)]*\)", "", first)
    first = re.sub(r"Proxy\([^)]*\)", "a traced size", first)
    side = _smallest_side(gm, example)
    size = f"the smallest it takes is {side}x{side}; " if side else ""
    return (f"{type(model).__name__} does not run on an input of shape {tuple(example.shape)} ({first[:200]}): "
            f"{size}give an input size it takes (--image-size on the tools, --input-size on count.py, "
            f"input_shape in dan.to_adjoint)")


def _smallest_side(gm: fx.GraphModule, example: torch.Tensor, limit: int = 4096) -> Optional[int]:
    """The smallest square side above ``example``'s on which ``gm`` runs, or None (none up to
    ``limit``, or the network does not run on the meta device): sides doubled, then bisected, each
    a forward on PyTorch's meta device (every shape computed, nothing allocated)."""
    if example.dim() != 4:
        return None
    from dan.cost import meta_state

    state = meta_state(gm)

    def runs(side: int) -> bool:
        x = torch.empty(tuple(example.shape[:2]) + (side, side), device="meta", dtype=example.dtype)
        try:
            with quiet_fx_errors():
                torch.func.functional_call(gm, state, (x,))
            return True
        except Exception:  # noqa: BLE001 - any failure: not this side
            return False

    lo = max(example.shape[2:])
    hi = 2 * lo
    while not runs(hi):
        lo, hi = hi, 2 * hi
        if hi > limit:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid, hi)
    return hi


def _shape(n: fx.Node) -> Optional[tuple]:
    tm = n.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


@dataclass(eq=False)
class _Walk:
    """What the walk over the graph carries from node to node (see :func:`analyze`)."""

    gm: fx.GraphModule
    stem: int  # how many leading convs stay shared
    modules: dict  # module name -> module
    uf: _UnionFind = field(default_factory=_UnionFind)
    info: dict = field(default_factory=dict)  # node -> TensorInfo of its channels (None: no feature map)
    shapes: dict = field(default_factory=dict)  # node name -> output shape
    layer_io: dict = field(default_factory=dict)  # module name -> [in parts, out parts, in mult]
    producers: dict = field(default_factory=dict)  # gid -> names of the convs / linears writing it
    shared: set = field(default_factory=set)  # node names computed once for both networks
    stem_convs: list = field(default_factory=list)
    adjoint: set = field(default_factory=set)
    pieces: dict = field(default_factory=dict)  # chunk / split node -> the TensorInfo of each piece
    attr_nodes: dict = field(default_factory=dict)  # node -> _Attr
    attrs: dict = field(default_factory=dict)  # attribute target -> [parts, dim]
    ranges: dict = field(default_factory=dict)  # node name -> (kind, cuts, dim, parts read, by parts?)
    additive: set = field(default_factory=set)  # attribute targets added to a feature map
    constant_features: list = field(default_factory=list)  # flattens to a constant count: (what, count, parts)
    # the node being walked: how errors name it, its inputs that carry channels, whether all its
    # inputs are shared, and whether its result is (a handler of a layer decides for itself)
    where: str = ""
    ins: list = field(default_factory=list)
    all_shared: bool = False
    share: bool = False

    @property
    def x(self) -> TensorInfo:
        """The channels of the node's first tensor input."""
        return self.info[self.ins[0]]

    @property
    def s(self) -> Optional[tuple]:
        """The shape of the node's first tensor input."""
        return self.shapes[self.ins[0].name]


def _visit(w: _Walk, n: fx.Node) -> None:
    """Give ``n`` the channels of its output (``w.info[n]``), or refuse it."""
    w.shapes[n.name] = _shape(n)
    w.where = f"node {n.name} ({n.op} {getattr(n.target, '__name__', n.target)})"
    if n.op in _GRAPH_HANDLERS:
        _GRAPH_HANDLERS[n.op](w, n)
        return
    if n.op == "call_method" and n.target in ("reshape", "view") and n.args and n.args[0] in w.attr_nodes \
            and w.shapes[n.name] is not None:  # a stored (C,) vector reshaped to broadcast: same entries
        a = w.attr_nodes[n.args[0]]
        w.attr_nodes[n] = _Attr(a.target, tuple(w.shapes[n.name]), a.origin or a.shape)
        w.info[n] = None
        return
    if any(a in w.attr_nodes for a in n.all_input_nodes) and not (
            (n.op == "call_function" and n.target in _BINARY) or (n.op == "call_method" and n.target in _BINARY_METHODS)):
        _refuse_attribute_use(w, n)
    w.ins = [a for a in n.all_input_nodes if w.info.get(a) is not None]
    # an attribute is the same tensor for both networks: arithmetic of the input with buffers or
    # constants (``(x - self.mean) / self.std``) is shared as the input is, and the stem follows it
    w.all_shared = w.share = all(a.name in w.shared or a in w.attr_nodes for a in n.all_input_nodes)
    if n.op in ("call_function", "call_method") and not w.ins and w.shapes[n.name] is None \
            and not any(a in w.pieces for a in n.all_input_nodes):
        w.info[n] = None  # arithmetic on sizes (x.size(1) // 2): no tensor
    else:
        if any(w.info[a].split for a in w.ins) and not _shuffle_step(n):
            raise UnsupportedModelError(f"{w.where}: only a channel shuffle (view, transpose(1, 2), view back) "
                                        f"may use a 5-D view of the channels")
        w.info[n] = _handler(w, n)(w, n)
    if w.share:  # computed from the input and the stem only: one copy serves both networks
        w.shared.add(n.name)


def _refuse_attribute_use(w: _Walk, n: fx.Node) -> None:
    """Refuse a tensor attribute used other than as a per-channel factor or term, saying what it
    is: a tensor made in forward from constants (``torch.arange(31, -1, -1)``) is stored by the
    trace as an attribute ``_tensor_constant<i>``, which the user never wrote."""
    a = next(a for a in n.all_input_nodes if a in w.attr_nodes)
    target = w.attr_nodes[a].target
    what = ("a constant tensor made in forward (torch.arange, torch.tensor, ...)"
            if target.rpartition(".")[2].startswith("_tensor_constant") else f"the tensor attribute {target}")
    if n.op == "call_function" and n.target is operator.getitem and a is not n.args[0]:
        raise UnsupportedModelError(f"{w.where}: indexes a tensor with {what}, which the small network cannot "
                                    f"cut to its channels: index the channels by a range (x[:, a:b])")
    raise UnsupportedModelError(f"{w.where}: {what} is used other than as a per-channel factor or term")


def _returns_several(n: fx.Node) -> str:
    """The refusal of an output built as a tuple class (GoogLeNet's and Inception's auxiliary
    outputs in training mode), saying how to build the model with one output; "" for other nodes."""
    if not isinstance(n.target, type) or not any(u.op == "output" for u in n.users):
        return ""
    fields = getattr(n.target, "_fields", ())
    fix = ("build it without the auxiliary classifiers: aux_logits=False (with the tools, drop "
           "model.args.aux_logits or set it to false)") if any("aux" in f for f in fields) \
        else "make its forward return the logits alone"
    return (f"the model returns a {n.target.__name__}{' (' + ', '.join(fields) + ')' if fields else ''} where one "
            f"tensor of logits is expected: {fix}")


def _handler(w: _Walk, n: fx.Node):
    """The handler of a call node, by its module's type (the first entry of the table it is an
    instance of, then its class name), its function or its method name."""
    if n.op == "call_module":
        m = w.modules[n.target]
        handler = next((h for kind, h in _MODULE_HANDLERS.items() if isinstance(m, kind)), None) \
            or _FOREIGN_MODULE_HANDLERS.get(type(m).__name__)
        if handler is None:
            raise UnsupportedModelError(
                f"module {n.target} ({type(m).__name__}) is not supported by the adjoint conversion "
                f"(supported: Conv2d, BatchNorm2d, LayerNorm, GroupNorm, Linear, activations, pooling, "
                f"dropout, flatten, add/mul)")
        return handler
    if n.op == "call_function":
        handler = _FUNCTION_HANDLERS.get(n.target)
        if handler is None and _returns_several(n):
            raise UnsupportedModelError(_returns_several(n))
        if handler is None:
            raise UnsupportedModelError(
                f"{w.where}: the operation {getattr(n.target, '__name__', n.target)} is not supported by the "
                f"adjoint conversion")
        return handler
    if n.op == "call_method":
        handler = _METHOD_HANDLERS.get(n.target)
        if handler is None:
            raise UnsupportedModelError(f"{w.where}: the method .{n.target}() is not supported")
        return handler
    raise UnsupportedModelError(f"{w.where}: unsupported graph node")


def _result(w: _Walk) -> GraphAnalysis:
    """One WidthGroup per union-find root, named after its first producer (or its role), and the
    layers, attributes and channel ranges by group name."""
    uf = w.uf
    roots: dict[int, WidthGroup] = {}
    order: list[int] = []
    for gid in range(len(uf.parent)):
        r = uf.find(gid)
        if r not in roots:
            roots[r] = WidthGroup(name="", full=uf.full[r], quantum=uf.quantum[r], fixed=uf.fixed[r])
            order.append(r)
        roots[r].producers.extend(w.producers.get(gid, []))
    for r in order:
        g = roots[r]
        g.name = g.producers[0] if g.producers else g.fixed or f"group{r}"
        g.width = g.max_width = g.full

    def names(parts):  # one group: its name; else ((name, coef), ...) (see Segments)
        if len(parts) == 1 and parts[0][1] == 1:
            return roots[uf.find(parts[0][0])].name
        return tuple((roots[uf.find(g)].name, c) for g, c in parts)

    groups = [roots[r] for r in order]
    all_names = [g.name for g in groups]
    assert len(set(all_names)) == len(all_names), all_names
    _attr_owners(w)
    layer_groups = {name: (names(gi), names(go), mult) for name, (gi, go, mult) in w.layer_io.items()}
    attr_groups = {t: (names(parts), dim) for t, (parts, dim) in w.attrs.items()}
    range_groups = {k: (kind, cuts, dim, tuple((roots[uf.find(g)].name, c) for g, c in parts), by_parts)
                    for k, (kind, cuts, dim, parts, by_parts) in w.ranges.items()}
    return GraphAnalysis(w.gm, groups, layer_groups, w.adjoint, w.shared, w.stem_convs, w.shapes, attr_groups,
                         range_groups, set(w.additive))


def _attr_owners(w: _Walk) -> None:
    """The modules owning per-channel attributes: their parameters scale with the group (cost)."""
    for target, (parts, dim) in w.attrs.items():
        owner = target.rpartition(".")[0]
        direct = {f"{owner}.{k}" if owner else k for k, _ in w.gm.get_submodule(owner).named_parameters(recurse=False)}
        if not direct <= set(w.attrs) or any(w.attrs[t][0] != parts for t in direct):
            raise UnsupportedModelError(f"module {owner or 'the model'} holds parameters besides its per-channel "
                                        f"factors, or factors of different channels")
        for name in ([owner] if owner else [f"{ROOT}.{k}" for k, _ in w.gm.named_parameters(recurse=False)]):
            w.layer_io[name] = [parts, parts, 1]  # the model's own: a row per parameter in dan.count's table


# --- handlers of the graph's inputs, output and attributes (by node op)

def _on_placeholder(w: _Walk, n: fx.Node) -> None:
    s = w.shapes[n.name]
    if s is None or len(s) != 4:
        raise UnsupportedModelError(f"input {n.name}: expected one NCHW image tensor")
    w.info[n] = _one(w.uf.new(s[1], "input"))
    w.shared.add(n.name)


def _on_output(w: _Walk, n: fx.Node) -> None:
    out = n.args[0]
    if not isinstance(out, fx.Node) or w.info.get(out) is None:
        raise UnsupportedModelError("the model must return one tensor of logits")
    for gid, _ in w.info[out].parts:
        w.uf.fix(gid, "output")


def _on_get_attr(w: _Walk, n: fx.Node) -> None:
    value = _get_attr(w.gm, n.target)
    if not isinstance(value, torch.Tensor):
        raise UnsupportedModelError(f"{w.where}: reads a non-tensor attribute")
    w.attr_nodes[n] = _Attr(n.target, tuple(value.shape))
    w.info[n] = None


# --- handlers of modules: each returns the TensorInfo of the node's output

def _on_conv(w: _Walk, n: fx.Node) -> TensorInfo:
    m, x, uf = w.modules[n.target], w.x, w.uf
    if x.mult != 1 or x.cdim != 1:
        raise UnsupportedModelError(f"conv {n.target} reads a flattened or permuted tensor")
    if len(x.parts) > 1 and m.groups != 1 and m.in_channels // m.groups != 1:
        raise UnsupportedModelError(f"conv {n.target}: a grouped conv reading a concatenation "
                                    f"is not supported (depthwise is)")
    is_stem = len(w.stem_convs) < w.stem and w.all_shared  # any padding_mode: both paths pad per channel
    out_parts = None
    if m.groups == 1:
        gid = uf.new(m.out_channels, "stem" if is_stem else "")
    elif m.in_channels == m.out_channels:  # depthwise / ResNeXt: width tied to the input
        gid = x.gid
        if x.simple:
            r = uf.find(gid)
            uf.quantum[r] = math.lcm(uf.quantum[r], m.in_channels // m.groups)
        else:  # depthwise / grouped over a concatenation, a shuffle or a split piece
            out_parts = x.parts
            if len(x.parts) == 1:  # whole conv groups in the small piece
                _divisible(uf, x.parts[0][0], x.parts[0][1], m.in_channels // m.groups)
        if is_stem:
            for g, _ in x.parts:
                uf.fix(g, "stem")
    elif m.out_channels % m.in_channels == 0 and len(x.parts) == 1 and not x.split:
        # a channel multiplier (FastViT's depthwise convs with twice the outputs): group g's outputs
        # are k·g .. k·g + k - 1 for k = out / in, so whole groups of leading inputs make the leading
        # k times as many outputs: one part of k times the input's
        gid, coef = x.parts[0]
        _divisible(uf, gid, coef, m.in_channels // m.groups)
        out_parts = ((gid, coef * (m.out_channels // m.in_channels)),)
        if is_stem:
            uf.fix(gid, "stem")
    else:
        raise UnsupportedModelError(
            f"conv {n.target}: grouped conv with {m.in_channels} inputs and {m.out_channels} outputs "
            f"(fewer outputs than inputs, or a channel multiplier reading a concatenation) is not supported")
    out = TensorInfo(out_parts) if out_parts else _one(gid)
    prev = w.layer_io.get(n.target)
    if prev is not None:  # a conv called twice: both calls share its groups
        _union_parts(uf, prev[0], x.parts, w.where)
        _union_parts(uf, prev[1], out.parts, w.where)
    w.layer_io[n.target] = [x.parts, out.parts, 1]
    if not out_parts:
        w.producers.setdefault(gid, []).append(n.target)
    w.share = is_stem  # only the stem convs are computed once; the others get a small path
    if is_stem:
        w.stem_convs.append(n.target)
    else:
        w.adjoint.add(n.target)
    return out


def _on_norm(w: _Walk, n: fx.Node) -> TensorInfo:
    m, x = w.modules[n.target], w.x
    rank = len(w.s)
    if isinstance(m, nn.BatchNorm2d) or type(m).__name__ == "LayerNorm2d":
        if x.cdim != 1:
            raise UnsupportedModelError(f"{w.where}: normalizes a permuted tensor")
    elif x.cdim != rank - 1 or len(m.normalized_shape) != 1:
        raise UnsupportedModelError(f"{w.where}: a LayerNorm over more than the channels (the last dim)")
    return _per_channel_layer(w, n, small_path=True)


def _per_channel_layer(w: _Walk, n: fx.Node, *, small_path: bool) -> TensorInfo:
    """A layer whose output has its input's channels and whose cost scales with their width (norms;
    a Conv1d along the channels and blur pools, which both networks share: ``small_path`` False).
    A module called twice normalizes the same channels both times."""
    x = w.x
    prev = w.layer_io.get(n.target)
    if prev is not None:
        _union_parts(w.uf, prev[0], x.parts, w.where)
    w.layer_io[n.target] = [x.parts, x.parts, 1]
    if small_path and not w.all_shared:
        w.adjoint.add(n.target)
    return x.copy()


def _on_group_norm(w: _Walk, n: fx.Node) -> TensorInfo:
    """GroupNorm over the channels (dim 1): the small network keeps the group size, so its width is a
    multiple of it (whole groups)."""
    m, x = w.modules[n.target], w.x
    if x.cdim != 1 or x.mult != 1 or len(x.parts) != 1 or x.split:
        raise UnsupportedModelError(f"{w.where}: a GroupNorm over a permuted, flattened or concatenated tensor")
    gid, coef = x.parts[0]
    _divisible(w.uf, gid, coef, m.num_channels // m.num_groups)
    return _per_channel_layer(w, n, small_path=True)


def _on_linear(w: _Walk, n: fx.Node) -> TensorInfo:
    m, x, s = w.modules[n.target], w.x, w.s
    if s is None or x.cdim != len(s) - 1 or (x.mult != 1 and len(s) != 2):
        raise UnsupportedModelError(f"linear {n.target} must read features in its last dimension "
                                    f"((N, features), or channels-last maps)")
    gid = w.uf.new(m.out_features)
    w.layer_io[n.target] = [x.parts, ((gid, ONE),), x.mult]
    w.producers.setdefault(gid, []).append(n.target)
    w.share = False
    w.adjoint.add(n.target)
    return _one(gid, cdim=len(s) - 1)


def _on_flatten_module(w: _Walk, n: fx.Node) -> TensorInfo:
    m = w.modules[n.target]
    return _flatten(w.x, w.s, m.start_dim, m.end_dim, w.where)


def _on_blur_pool(w: _Walk, n: fx.Node) -> TensorInfo:
    """timm's BlurPool2d: one fixed binomial filter per channel, depthwise, strided (anti-aliased
    downsampling). Built for ``channels`` it stores that many copies of the one filter, which the
    small network cannot use; the converted network holds one copy expanded to the input's
    channels, which is what BlurPool2d(channels=None) computes, the same sums."""
    m = w.modules[n.target]
    if getattr(m, "channels", None) is not None:
        filt = m.filt
        if filt.ndim != 4 or not torch.equal(filt, filt[:1].expand_as(filt)):
            raise UnsupportedModelError(f"module {n.target} (BlurPool2d): its channels' filters differ")
        new = copy.deepcopy(m)
        new.channels, new.filt = None, filt[:1].clone()
        w.gm.set_submodule(n.target, new)
        w.modules[n.target] = new
    if w.x.cdim != 1 or w.x.mult != 1:
        raise UnsupportedModelError(f"module {n.target} (BlurPool2d) reads a flattened or permuted tensor")
    return _per_channel_layer(w, n, small_path=False)  # a depthwise conv: its MACs scale with the width


def _on_pad_module(w: _Walk, n: fx.Node) -> TensorInfo:
    """``nn.ConstantPad2d`` and its kin (BiT ResNets' stem): padding of the two spatial dims."""
    if w.x.cdim != 1 or w.s is None or len(w.s) != 4:
        raise UnsupportedModelError(f"module {n.target} ({type(w.modules[n.target]).__name__}) pads a tensor "
                                    f"whose last two dims are not spatial")
    return _same_as_first(w, n)


def _on_space_to_depth(w: _Walk, n: fx.Node) -> TensorInfo:
    """timm's SpaceToDepth (TResNet's stem): pixels rearranged into channels. Only where both networks
    share the tensor (the input, the stem), before any layer with a small path: its channels are a
    new fixed group, computed once."""
    s = w.shapes[n.name]
    if not w.all_shared or s is None or len(s) != 4 or w.x.cdim != 1:
        raise UnsupportedModelError(f"module {n.target} (SpaceToDepth): only where both networks share the "
                                    f"tensor (the input image, the stem's output)")
    gid = w.uf.new(s[1], "input")
    w.producers.setdefault(gid, []).append(n.target)  # names the group
    return _one(gid)


# --- handlers of functions and methods

def _same_as_first(w: _Walk, n: fx.Node) -> Optional[TensorInfo]:
    """Elementwise: the channels of the first tensor input."""
    return w.x.copy() if w.ins else None


def _no_tensor(w: _Walk, n: fx.Node) -> None:
    return None


def _on_binary(w: _Walk, n: fx.Node) -> TensorInfo:
    for a in n.all_input_nodes:
        if a in w.attr_nodes and _adds(n, a):
            w.additive.add(w.attr_nodes[a].target)
    return _binary(n, w.ins, w.info, w.shapes, w.uf, w.where, w.attr_nodes, w.attrs)


def _adds(n: fx.Node, a: fx.Node) -> bool:
    """Whether ``n`` adds (or subtracts) its input ``a`` rather than multiplying or dividing by it:
    ``torch.addcmul(a, b, c)`` adds its first argument only."""
    if n.target is torch.addcmul:
        return bool(n.args) and n.args[0] is a
    return n.target in (operator.add, operator.iadd, operator.sub, torch.add, torch.sub, "add", "sub", "add_")


def _on_cat(w: _Walk, n: fx.Node) -> TensorInfo:
    return _cat(n, w.info, w.shapes, w.where)


def _on_pad(w: _Walk, n: fx.Node) -> Optional[TensorInfo]:
    """Spatial padding (blur pools, "same" convs): channels untouched."""
    pad = n.args[1] if len(n.args) > 1 else n.kwargs.get("pad")
    if not isinstance(pad, (list, tuple)) or len(pad) > 4 or w.x.cdim != 1:
        raise UnsupportedModelError(f"{w.where}: padding other than of the two spatial dimensions")
    return _same_as_first(w, n)


def _on_chunk(w: _Walk, n: fx.Node) -> None:
    w.pieces[n] = _chunk(n, w.x, w.s, w.uf, w.ranges, w.where)


def _on_split(w: _Walk, n: fx.Node) -> None:
    x, s = w.x, w.s
    w.pieces[n] = _ranges(n, x, s, _split_bounds(n, x, s, w.where), "split", w.uf, w.ranges, w.where)


def _on_getitem(w: _Walk, n: fx.Node) -> Optional[TensorInfo]:
    """A piece of a chunk or a split, a range of the channels (``x[:, a:b]``), or an index into a
    size (``x.shape[1]``)."""
    if n.args[0] in w.pieces:
        return w.pieces[n.args[0]][n.args[1]].copy()
    if w.ins and w.shapes[n.name] is not None:
        bounds = _channel_slice(n, w.x, w.s, w.where)
        return _ranges(n, w.x, w.s, [bounds], "slice", w.uf, w.ranges, w.where)[0]
    return _on_shape_op(w, n)


def _on_shape_op(w: _Walk, n: fx.Node) -> None:
    if w.shapes[n.name] is not None:
        raise UnsupportedModelError(f"{w.where}: indexing a tensor is not supported")
    return None


def _on_transpose(w: _Walk, n: fx.Node) -> TensorInfo:
    return _transpose(n, w.x, w.where)


def _on_permute(w: _Walk, n: fx.Node) -> TensorInfo:
    return _permute(n, w.x, w.s, w.where)


def _on_flatten_function(w: _Walk, n: fx.Node) -> TensorInfo:
    start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
    end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
    return _flatten(w.x, w.s, start, end, w.where)


def _on_reshape(w: _Walk, n: fx.Node) -> TensorInfo:
    """``view`` / ``reshape`` / ``flatten``: a channel shuffle's views, or (N, -1)."""
    src, dst = w.s, w.shapes[n.name]
    shuffled = _shuffle_view(w.x, src, dst, w.uf, w.where)
    if shuffled is not None:
        return shuffled
    if src is not None and dst is not None and len(dst) == 2 and dst[0] == src[0] and w.x.cdim == 1:
        if n.target in ("view", "reshape"):
            _constant_features(n, w)
        return _flatten(w.x, src, 1, -1, w.where)
    moved = _unit_view(n, w.x, src, dst, w.where) if n.target in ("view", "reshape") else None
    if moved is None:
        raise UnsupportedModelError(f"{w.where}: only (N, -1) reshapes, channel shuffles and views that add or "
                                    f"drop dims of size 1 are supported")
    return moved


def _view_sizes(n: fx.Node) -> list:
    """The sizes of ``x.view(a, b)`` or ``x.view((a, b))``."""
    sizes = list(n.args[1:]) or list(n.kwargs.get("shape", n.kwargs.get("size", ())))
    return list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else sizes


def _constant_features(n: fx.Node, w: "_Walk") -> None:
    """A flatten by ``view`` / ``reshape`` should read its feature count from the tensor (``-1``):
    ``x.view(-1, 32*8*8)`` bakes the big network's count into the graph, which the narrower small
    tensor does not have (the small path, extraction and training then failed deep in fx; at batch
    1 the view looked like an (N, -1) one). Recorded, and refused by :func:`_check_constant_features`
    unless its channels all keep their full width (fixed, unmasked included)."""
    sizes = _view_sizes(n)
    if len(sizes) == 2 and sizes[1] != -1 and not isinstance(sizes[1], fx.Node):
        shown = ", ".join(a.name if isinstance(a, fx.Node) else repr(a) for a in sizes)
        w.constant_features.append((f"{w.where}: x.{n.target}({shown})", sizes[1], w.x.parts))


def _check_constant_features(w: "_Walk") -> None:
    for what, count, parts in w.constant_features:
        if not all(w.uf.fixed[w.uf.find(g)] for g, _ in parts):
            raise UnsupportedModelError(f"{what} writes the feature count as a constant ({count}), which the small "
                                        f"network's narrower tensor does not have: flatten with torch.flatten(x, 1) "
                                        f"or x.view(x.size(0), -1)")


def _unit_view(n: fx.Node, x: TensorInfo, src, dst, where) -> Optional[TensorInfo]:
    """A view that only adds or drops dims of size 1, so the channels keep their order and move to
    another dim: ECA's ``x.mean((2, 3)).view(N, 1, -1)`` (a Conv1d along the channels) and its
    ``.view(N, -1, 1, 1)`` back. ``None`` for other views. The channel count must be read from
    the tensor (``-1`` or a size of it), so that the small network's view fits its width."""
    if src is None or dst is None or x.mult != 1 or x.split or len(src) == len(dst):
        return None
    kept_src = [i for i, d in enumerate(src) if d != 1]
    kept_dst = [i for i, d in enumerate(dst) if d != 1]
    if [src[i] for i in kept_src] != [dst[i] for i in kept_dst] or x.cdim not in kept_src:
        return None
    cdim = kept_dst[kept_src.index(x.cdim)]
    sizes = _view_sizes(n)
    if len(sizes) != len(dst) or not (sizes[cdim] == -1 or isinstance(sizes[cdim], fx.Node)):
        raise UnsupportedModelError(f"{where}: a view that writes the channel count as a constant (use -1)")
    return dataclasses.replace(x, cdim=cdim)


def _on_conv1d(w: _Walk, n: fx.Node) -> TensorInfo:
    """A one-channel Conv1d along the channels (ECA: attention weights from each channel's
    neighbours), its output as long as its input. It is shared by the two networks like an
    activation: the small network runs it over its own channels (zero-padded at its last one), so
    its small path is an ordinary network that extraction reproduces exactly."""
    m, x, s = w.modules[n.target], w.x, w.s
    out = w.shapes[n.name]
    if s is None or len(s) != 3 or x.cdim != 2 or x.mult != 1 or m.in_channels != 1 or m.out_channels != 1 \
            or out is None or tuple(out) != tuple(s):
        raise UnsupportedModelError(f"conv {n.target}: only a one-channel Conv1d along the channels that keeps "
                                    f"their number (ECA) is supported")
    if m.padding_mode != "zeros":
        raise UnsupportedModelError(f"conv {n.target}: padding_mode {m.padding_mode!r}")
    return _per_channel_layer(w, n, small_path=False)  # its MACs scale with the width (the cost table)


def _on_mean(w: _Walk, n: fx.Node) -> Optional[TensorInfo]:
    """A mean over other dims than the batch and the channels: the same channels. A mean over the
    channels alone that keeps the dim (timm's GRN divides by it) carries no channels: the small
    network averages its own, as a LayerNorm does (through :class:`dan.layers.ChannelMean`, which
    divides by the soft mask's sum in the search's architecture steps)."""
    dims = _reduced_dims(n, w.s)
    if dims == [w.x.cdim] and _arg(n, 2, "keepdim", False) and w.x.mult == 1 and not w.x.split:
        w.ranges[n.name] = ("mean", [], w.x.cdim, w.x.parts, False)
        return None
    if not dims or any(d in (0, w.x.cdim) for d in dims):
        raise UnsupportedModelError(f"{w.where}: mean over the channel or batch dimension (other than over the "
                                    f"channels alone, keeping the dim)")
    return _same_as_first(w, n)


def _on_norm_method(w: _Walk, n: fx.Node) -> TensorInfo:
    """``x.norm(p, dim)`` over other dims than the batch and the channels (GRN's spatial norm)."""
    dims = _reduced_dims(n, w.s, pos=2)
    if not dims or any(d in (0, w.x.cdim) for d in dims):
        raise UnsupportedModelError(f"{w.where}: a norm over the channel or batch dimension")
    return _same_as_first(w, n)


def _reduced_dims(n: fx.Node, s, pos: int = 1) -> list:
    dims = _arg(n, pos, "dim", None)
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    return sorted(d % len(s) for d in dims) if s is not None else []


def _table(*entries) -> dict:
    """A handler table from ``(keys, handler)`` pairs; a key may appear once only."""
    table = {}
    for keys, handler in entries:
        for k in keys:
            assert k not in table, k
            table[k] = handler
    return table


_GRAPH_HANDLERS = {"placeholder": _on_placeholder, "output": _on_output, "get_attr": _on_get_attr}
# by module type: a module takes the first entry it is an instance of (subclasses included)
_MODULE_HANDLERS = _table(
    ([nn.Conv2d], _on_conv), ([nn.Conv1d], _on_conv1d), ([nn.BatchNorm2d, nn.LayerNorm], _on_norm),
    ([nn.GroupNorm], _on_group_norm),
    ([nn.Linear], _on_linear),
    ([nn.Flatten], _on_flatten_module), (_ELEMENTWISE_MODULES, _same_as_first),
    ([nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d], _on_pad_module))
_FOREIGN_MODULE_HANDLERS = _table(  # by class name
    (_ELEMENTWISE_FOREIGN_MODULES, _same_as_first), (["BlurPool2d"], _on_blur_pool),
    (["SpaceToDepth"], _on_space_to_depth))
_FUNCTION_HANDLERS = _table(
    (_ELEMENTWISE_FUNCTIONS, _same_as_first), (_BINARY, _on_binary), (_CAT_FUNCTIONS, _on_cat),
    ([F.pad], _on_pad), ([torch.chunk], _on_chunk), ([operator.getitem], _on_getitem), ([torch.split], _on_split),
    ([torch.transpose], _on_transpose), ([torch.permute], _on_permute), (_FLATTEN_FUNCTIONS, _on_flatten_function),
    ([getattr], _on_shape_op))
_METHOD_HANDLERS = _table(
    (_ELEMENTWISE_METHODS, _same_as_first), (_BINARY_METHODS, _on_binary), (_RESHAPE_METHODS, _on_reshape),
    (["split"], _on_split), (["chunk"], _on_chunk), (["transpose"], _on_transpose), (["permute"], _on_permute),
    (["mean"], _on_mean), (["norm"], _on_norm_method), (["expand_as"], _on_binary), (_SHAPE_METHODS, _no_tensor))


def _flatten(x: TensorInfo, s, start, end, where) -> TensorInfo:
    if s is None or start != 1 or end not in (-1, len(s) - 1) or x.cdim != 1:
        raise UnsupportedModelError(f"{where}: only flatten(x, 1) is supported")
    return TensorInfo(x.parts, x.mult * math.prod(s[2:]))


def _binary(n, ins, info, shapes, uf, where, attr_nodes, attrs) -> TensorInfo:
    chan = []
    if not ins:
        if any(a in attr_nodes for a in n.all_input_nodes):
            raise UnsupportedModelError(f"{where}: combines tensors read from attributes only")
        return None  # arithmetic on tensors without channels (a mean over the channels, + eps)
    for a in n.all_input_nodes:
        if a in attr_nodes and all(d == 1 for d in attr_nodes[a].shape):
            continue  # a scalar (NFNet's skipinit gain): the same factor for every channel, nothing to cut
        if a in attr_nodes:  # a per-channel factor or term: its channels are the feature map's
            x, s = info[ins[0]], shapes[ins[0].name]
            attrs[attr_nodes[a].target] = _attr_channels(attr_nodes[a], x, s, where)
    for a in ins:
        s = shapes[a.name]
        cdim = info[a].cdim
        if s is not None and len(s) > cdim and s[cdim] == 1 and s != shapes[n.name]:
            continue  # broadcast along channels: carries no channel group
        chan.append(a)
    if not chan:
        return info[ins[0]].copy()
    first = info[chan[0]]
    for a in chan[1:]:
        if info[a].mult != first.mult or info[a].cdim != first.cdim:
            raise UnsupportedModelError(f"{where}: combines tensors of different layouts")
        if _same_structure(uf, first.parts, info[a].parts):
            _union_parts(uf, first.parts, info[a].parts, where)
        else:
            # a concatenation added to a conv's output (Inception-ResNet): their small widths would
            # have to add up, which one width per group cannot say; both keep their full width
            for g, _ in first.parts + info[a].parts:
                uf.fix(g, "added to channels of another structure")
    return first.copy()


def _same_structure(uf, a, b) -> bool:
    return len(a) == len(b) and all(ca == cb and uf.full[uf.find(x)] == uf.full[uf.find(y)]
                                    for (x, ca), (y, cb) in zip(a, b))


def _union_parts(uf, a, b, where) -> None:
    """Channels that meet elementwise: part i of one side and part i of the other share a width.
    Concatenations of different structure cannot be matched part by part."""
    if len(a) != len(b) or any(ca != cb or uf.full[uf.find(x)] != uf.full[uf.find(y)]
                               for (x, ca), (y, cb) in zip(a, b)):
        if len(a) == len(b) == 1 and a[0][1] == b[0][1]:
            uf.union(a[0][0], b[0][0], where)  # raises with the channel counts
        raise UnsupportedModelError(f"{where}: combines channel concatenations of different structure")
    for (x, _), (y, _) in zip(a, b):
        uf.union(x, y, where)


def _cat(n, info, shapes, where) -> TensorInfo:
    """``torch.cat(tensors, 1)``: the channels of the parts side by side. In the small network each
    part keeps its own leading channels, so the small tensor is the concatenation of the small
    parts (and a layer reading it selects, per part, the leading channels of that part)."""
    tensors = n.args[0] if n.args else n.kwargs.get("tensors")
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) and info.get(t) for t in tensors):
        raise UnsupportedModelError(f"{where}: concatenates something other than feature maps")
    rank = len(shapes[tensors[0].name] or ())
    cdim = info[tensors[0]].cdim
    if rank < 2 or dim % rank != cdim or any(info[t].cdim != cdim or info[t].split for t in tensors):
        raise UnsupportedModelError(f"{where}: concatenation along dim {dim} (only channels, dim 1, is supported)")
    if any(info[t].mult != 1 for t in tensors):
        raise UnsupportedModelError(f"{where}: concatenates flattened tensors")
    return TensorInfo(tuple(p for t in tensors for p in info[t].parts), cdim=cdim)


def _split_bounds(n, x: TensorInfo, s, where) -> list:
    """(start, end) channel ranges of ``split(x, size_or_sections, dim)``."""
    if n.op == "call_method":
        size = n.args[1] if len(n.args) > 1 else n.kwargs.get("split_size", n.kwargs.get("split_size_or_sections"))
        dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    else:
        size = n.args[1] if len(n.args) > 1 else n.kwargs.get("split_size_or_sections")
        dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    if s is None or not isinstance(dim, int) or dim % len(s) != x.cdim:
        raise UnsupportedModelError(f"{where}: only splits of the channels are supported")
    total = s[x.cdim]
    if isinstance(size, int):
        if size <= 0 or total % size:
            raise UnsupportedModelError(f"{where}: a split into unequal last piece")
        sizes = [size] * (total // size)
    elif isinstance(size, (list, tuple)) and all(isinstance(v, int) for v in size) and sum(size) == total:
        sizes = list(size)
    else:
        raise UnsupportedModelError(f"{where}: split sizes computed at run time are not supported")
    bounds, start = [], 0
    for v in sizes:
        bounds.append((start, start + v))
        start += v
    return bounds


def _channel_slice(n, x: TensorInfo, s, where) -> tuple:
    """(start, end) of ``x[:, a:b]`` (the channel dimension sliced, every other one whole)."""
    idx = n.args[1]
    idx = idx if isinstance(idx, tuple) else (idx,)
    if s is None or x.split or x.mult != 1:
        raise UnsupportedModelError(f"{where}: indexing a tensor is not supported")
    full = slice(None, None, None)
    for i, v in enumerate(idx):
        if v is Ellipsis and i == len(idx) - 1:
            break
        if i == x.cdim:
            if not isinstance(v, slice) or v.step not in (None, 1) or not all(
                    isinstance(b, (int, type(None))) for b in (v.start, v.stop)):
                raise UnsupportedModelError(f"{where}: indexing the channels other than by a range")
            continue
        if v != full:
            raise UnsupportedModelError(f"{where}: indexing a tensor other than a range of its channels")
    if len(idx) <= x.cdim:
        raise UnsupportedModelError(f"{where}: indexing a tensor is not supported")
    return idx[x.cdim].indices(s[x.cdim])[:2]


def _ranges(n, x: TensorInfo, s, bounds, kind, uf, ranges, where) -> list:
    """Pieces of ``x`` that are ranges of its channels. The small network cuts the small tensor at
    the same fractions of its width (the widths are made multiples that cut whole channels)."""
    offsets = [Fraction(0)]
    for g, c in x.parts:
        offsets.append(offsets[-1] + c * uf.full[uf.find(g)])
    if len(x.parts) > 1 and all(a in offsets and b in offsets and a < b for a, b in bounds):
        # the cuts fall between parts of a concatenation (DPN): each piece is whole parts, which
        # keep their own widths (the small tensor is cut after each part's small width)
        cuts = [(offsets.index(a), offsets.index(b)) for a, b in bounds]
        ranges[n.name] = (kind, cuts, x.cdim, x.parts, True)
        return [TensorInfo(x.parts[i:j], cdim=x.cdim) for i, j in cuts]
    gid, coef = _merge_all(x, uf, where)
    total = s[x.cdim]
    fractions = [(Fraction(a, total), Fraction(b, total)) for a, b in bounds]
    for a, b in fractions:
        for f in (a, b):
            _divisible(uf, gid, coef * f, 1)
    ranges[n.name] = (kind, fractions, x.cdim, ((gid, coef),), False)
    return [TensorInfo(((gid, coef * (b - a)),), cdim=x.cdim) for a, b in fractions]


def _merge_all(x: TensorInfo, uf, where) -> tuple[int, Fraction]:
    """Tie every part of ``x`` to one width (a chunk or a shuffle mixes them): (group, total
    coefficient)."""
    gid = x.parts[0][0]
    for g, _ in x.parts[1:]:
        if uf.full[uf.find(g)] != uf.full[uf.find(gid)]:
            raise UnsupportedModelError(f"{where}: splits or shuffles the channels of parts of different "
                                        f"widths ({uf.full[uf.find(gid)]} and {uf.full[uf.find(g)]})")
        gid = uf.union(gid, g, where)
    return uf.find(gid), sum((c for _, c in x.parts), Fraction(0))


def _divisible(uf, gid: int, coef: Fraction, k: int) -> None:
    """Make ``coef · width`` a multiple of ``k`` for every width of the group (its quantum)."""
    need = k * coef.denominator // math.gcd(coef.numerator, k * coef.denominator)
    r = uf.find(gid)
    uf.quantum[r] = math.lcm(uf.quantum[r], need)


def _chunk(n, x: TensorInfo, s, uf, ranges, where) -> list:
    """``x.chunk(k, 1)``: k equal pieces of the channels. The small network chunks the small
    tensor (equal pieces: the widths are made multiples that divide), so each piece is ``1/k`` of
    the whole, whatever its parts were. Recorded as a split at fractions (``ranges``), so that
    under soft masks each piece is the one a network of each width cuts (ShuffleNet's chunks of a
    shuffled tensor: at fractions of the full width a piece holds other channels)."""
    k = n.args[1] if len(n.args) > 1 else n.kwargs.get("chunks")
    dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    if s is None or not isinstance(k, int) or dim % len(s) != x.cdim or x.mult != 1 or s[x.cdim] % k or x.split:
        raise UnsupportedModelError(f"{where}: only chunks of the channels (dim 1) into equal pieces are supported")
    gid, coef = _merge_all(x, uf, where)
    _divisible(uf, gid, coef, k)
    ranges[n.name] = ("split", [(Fraction(i, k), Fraction(i + 1, k)) for i in range(k)], x.cdim, ((gid, coef),), False)
    return [TensorInfo(((gid, coef / k),), cdim=x.cdim) for _ in range(k)]


def _shuffle_view(x: TensorInfo, src, dst, uf, where) -> Optional[TensorInfo]:
    """The two views of a channel shuffle: (N, C, H, W) -> (N, g, C/g, H, W) and back. The small
    network shuffles the small tensor the same way (sizes are read from the tensor)."""
    if src is None or dst is None or x.cdim != 1:
        return None
    if not x.split and len(src) == 4 and len(dst) == 5 and dst[0] == src[0] and dst[1] * dst[2] == src[1] \
            and tuple(dst[3:]) == tuple(src[2:]):
        gid, coef = _merge_all(x, uf, where)
        _divisible(uf, gid, coef, dst[1])
        return TensorInfo(((gid, coef),), split=dst[1])
    if x.split and len(src) == 5 and len(dst) == 4 and dst[0] == src[0] and dst[1] == src[1] * src[2] \
            and tuple(dst[2:]) == tuple(src[3:]):
        return TensorInfo(x.parts)
    return None


def _transpose(n, x: TensorInfo, where) -> TensorInfo:
    dims = sorted(d % 5 for d in (list(n.args[1:3]) or [n.kwargs.get("dim0"), n.kwargs.get("dim1")]))
    if not x.split or dims != [1, 2]:
        raise UnsupportedModelError(f"{where}: a transpose other than the one of a channel shuffle")
    return dataclasses.replace(x, transposed=not x.transposed)


def _get_attr(gm, target: str):
    owner, _, leaf = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, leaf)


def _attr_channels(attr: _Attr, x: TensorInfo, s, where) -> list:
    """[parts, dim]: the dimension of the attribute that runs along ``x``'s channels when it
    broadcasts against ``x`` (every other dimension 1)."""
    if s is None or x.mult != 1 or x.split:
        raise UnsupportedModelError(f"{where}: an attribute combined with a flattened or shuffled tensor")
    shape, rank = attr.shape, len(s)
    dim = x.cdim - (rank - len(shape))  # right-aligned broadcasting
    if not 0 <= dim < len(shape) or any(d != 1 for i, d in enumerate(shape) if i != dim) or shape[dim] != s[x.cdim]:
        raise UnsupportedModelError(f"{where}: the attribute {attr.target} of shape {shape} is not a factor "
                                    f"per channel of a tensor of shape {tuple(s)}")
    if attr.origin:  # reshaped on the way: the one dimension of the stored tensor that is not 1
        big = [i for i, d in enumerate(attr.origin) if d != 1]
        if len(big) != 1 or attr.origin[big[0]] != shape[dim]:
            raise UnsupportedModelError(f"{where}: the attribute {attr.target} is reshaped from {attr.origin}")
        dim = big[0]
    return [x.parts, dim]


def _permute(n, x: TensorInfo, s, where) -> TensorInfo:
    dims = list(n.args[1:]) if n.op == "call_method" else list(n.args[1] if len(n.args) > 1 else n.kwargs["dims"])
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = list(dims[0])
    if s is None or x.split or x.mult != 1 or sorted(d % len(s) for d in dims) != list(range(len(s))) or dims[0] % len(s) != 0:
        raise UnsupportedModelError(f"{where}: only permutations that keep the batch first are supported")
    return dataclasses.replace(x, cdim=[d % len(s) for d in dims].index(x.cdim))


def _shuffle_step(n) -> bool:
    """Operations allowed on the 5-D view of a channel shuffle."""
    if n.op == "call_method":
        return n.target in ("transpose", "contiguous", "view", "reshape")
    return n.op == "call_function" and n.target is torch.transpose
