"""Cost model: FLOPs and parameters, with a per-layer breakdown.

Convention (the paper's, torchvision's and fvcore's): **FLOPs are multiply–accumulates** of
convolution and linear (matrix-multiply) layers, and batched matrix multiplies (attention's
scores and weighted sums); one fused multiply-add is one FLOP. BatchNorm,
activations, pooling and additions are not counted. ``torch.utils.flop_counter`` counts 2 per MAC;
our numbers are half of its. Suffixes K, M, G are powers of 10.

The formulas are pure functions of shapes (:func:`conv2d_macs`, :func:`linear_macs`);
:func:`count` runs the model once under a dispatch mode that records the shape of every
convolution and matrix multiply that really executes, and attributes them to the module that ran
them: on PyTorch's meta device where the model runs there (nothing allocated), else on a zero input.
It works on any module, including TorchScript and ``torch.export`` programs (whose layers are then
named by operator). The meta run also counts what PyTorch's fused CPU attention hid from a real
eval-mode run: a ViT-B/16 at 224 px is 17.56 G, torchvision's figure (11.27 G before: its
projections and attention products ran inside one fused operator).

>>> import torch.nn as nn
>>> count(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 4, 4)).flops   # 3·3·3 · 8 · 4·4
3456
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from dan.errors import UserError, first_line, out_of_memory, raised_in_dan

aten = torch.ops.aten
ROOT = "<root>"  # the layer-table rows of parameters held by the model itself (not a submodule): <root>.<name>


def conv2d_macs(c_in: int, c_out: int, kernel: tuple, out_hw: tuple, groups: int = 1,
                batch: int = 1) -> int:
    """MACs of a 2-D convolution: ``k_h·k_w · H_out·W_out · (c_in/groups) · c_out`` per image."""
    return batch * kernel[0] * kernel[1] * out_hw[0] * out_hw[1] * (c_in // groups) * c_out


def linear_macs(in_features: int, out_features: int, rows: int = 1) -> int:
    """MACs of a linear layer (a matrix multiply) applied to ``rows`` vectors."""
    return rows * in_features * out_features


@dataclass
class LayerCost:
    """One row of the layer table. Besides the totals it keeps the shape factors, so that the cost
    of the same layer at other widths is a pure function (DAN's expected cost uses them):
    ``flops = calls · unit · (c_in / groups) · c_out`` with ``unit = k_h·k_w·H_out·W_out`` (or the
    number of rows for a linear layer)."""

    name: str
    kind: str  # conv | linear | matmul | bn | other
    flops: int = 0
    params: int = 0
    nonzero: int = 0
    detail: str = ""
    c_in: int = 0
    c_out: int = 0
    groups: int = 1
    unit: int = 0
    calls: int = 0
    weight_params: int = 0
    bias_params: int = 0


@dataclass
class Cost:
    flops: int
    params: int
    nonzero_params: int
    input_shape: tuple
    layers: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def table(self, top: int | None = None) -> str:
        """A text table: one row per layer, then the totals."""
        rows = self.layers if top is None else sorted(self.layers, key=lambda l: -l.flops)[:top]
        width = max([len(l.name) for l in rows] + [5])
        show_nz = self.nonzero_params != self.params
        head = f"{'layer':{width}s}  {'kind':6s}  {'shape':28s}  {'FLOPs':>9s}  {'%':>5s}  {'params':>9s}"
        head += "  nonzero" if show_nz else ""
        lines = [head, "-" * len(head)]
        for l in rows:
            pct = 100.0 * l.flops / self.flops if self.flops else 0.0
            line = (f"{l.name:{width}s}  {l.kind:6s}  {l.detail:28s}  {format_count(l.flops):>9s}  "
                    f"{pct:5.1f}  {format_count(l.params):>9s}")
            lines.append(line + (f"  {format_count(l.nonzero):>7s}" if show_nz else ""))
        lines.append("-" * len(head))
        total = (f"{'total':{width}s}  {'':6s}  {'input ' + 'x'.join(map(str, self.input_shape)):28s}  "
                 f"{format_count(self.flops):>9s}  {100.0:5.1f}  {format_count(self.params):>9s}")
        lines.append(total + (f"  {format_count(self.nonzero_params):>7s}" if show_nz else ""))
        return "\n".join(lines)


class _Recorder(TorchDispatchMode):
    """Records conv / matmul shapes as they execute; ``where`` names the running module."""

    def __init__(self):
        super().__init__()
        self.where: list[str] = []
        self.records: list[tuple] = []  # (module name or None, kind, flops, detail)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        pkt = getattr(func, "_overloadpacket", None)
        name = self.where[-1] if self.where else None
        if pkt in (aten.convolution, aten._convolution):
            x, w = args[0], args[1]
            transposed = bool(args[6]) if len(args) > 6 else False
            groups = int(args[8]) if len(args) > 8 else 1
            if transposed:
                flops = x.numel() * w.shape[1] * math.prod(w.shape[2:])
            else:
                flops = out.numel() * math.prod(w.shape[1:])
            stride = args[3] if len(args) > 3 else (1, 1)
            k = "×".join(map(str, w.shape[2:]))
            cin = w.shape[1] * groups if not transposed else w.shape[0]
            cout = w.shape[0] if not transposed else w.shape[1] * groups
            detail = f"{cin}→{cout} {k}" + (f" s{stride[0]}" if max(stride) > 1 else "")
            detail += f" g{groups}" if groups > 1 else ""
            detail += f" @{out.shape[-2]}×{out.shape[-1]}"
            unit = out.numel() // (out.shape[0] * out.shape[1]) * math.prod(w.shape[2:]) * out.shape[0]
            self.records.append((name, "conv", int(flops), detail, (cin, cout, groups, unit), tuple(w.shape)))
        elif pkt in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if pkt is aten.mm else (args[1], args[2])
            self.records.append((name, "linear", a.shape[0] * a.shape[1] * b.shape[1],
                                 f"{a.shape[1]}→{b.shape[1]}", (a.shape[1], b.shape[1], 1, a.shape[0]),
                                 (b.shape[1], a.shape[1])))
        elif pkt in (aten.bmm, aten.baddbmm):
            a, b = (args[0], args[1]) if pkt is aten.bmm else (args[1], args[2])
            self.records.append((name, "matmul", a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2],
                                 f"bmm {tuple(a.shape)}@{tuple(b.shape)}", None, None))
        return out


def count(model: nn.Module, input_shape: tuple, *, device: torch.device | str | None = None) -> Cost:
    """FLOPs (conv, linear and matmul MACs) and parameters of ``model`` for one input of ``input_shape``.

    Args:
        model: any module (eager, ``fx.GraphModule``, TorchScript, ``torch.export`` module).
        input_shape: the full input shape including the batch, e.g. ``(1, 3, 224, 224)``; FLOPs
            are for that whole batch.
        device: where to run (default: the model's device).

    Returns:
        :class:`Cost` with totals (``flops``, ``params``, ``nonzero_params``) and ``layers``.

    Raises:
        UserError: when the model does not run on ``input_shape`` (naming the shape and what to give;
            PyTorch's error is its cause). DAN's own callers use :func:`count_layers`, which lets
            that error through: a shape DAN chose that fails is DAN's bug and keeps its traceback.
    """
    try:
        return count_layers(model, input_shape, device=device)
    except (RuntimeError, ValueError, AssertionError) as e:  # (AssertionError: a model's own, a ViT's size check)
        if out_of_memory(e) or isinstance(e, AssertionError) and raised_in_dan(e):
            raise  # the machine's memory, or a bug of ours
        raise UserError(refused_input(model, tuple(input_shape), e)) from e


def count_layers(model: nn.Module, input_shape: tuple, *, device: torch.device | str | None = None) -> Cost:
    """:func:`count`, with the model's own error when it does not run on ``input_shape``."""
    if not isinstance(model, nn.Module):
        raise UserError(f"dan.count counts a torch.nn.Module, got a {type(model).__name__}: build the model first")
    if isinstance(input_shape, torch.Tensor) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                        for v in input_shape):
        raise UserError(f"input_shape must be whole numbers >= 1, the batch first (e.g. (1, 3, 224, 224)), got "
                        f"{tuple(input_shape) if not isinstance(input_shape, torch.Tensor) else 'a tensor'}")
    params = list({id(p): p for p in model.parameters()}.values())
    if device is None:
        device = params[0].device if params else "cpu"
    rec = _Recorder()
    handles, per_module = [], {}
    for name, m in model.named_modules():
        direct = list(m.parameters(recurse=False))
        if not name:
            if direct:
                per_module[ROOT] = m
            continue
        if len(list(m.children())) and not direct:
            continue
        per_module[name] = m
        try:
            handles.append(m.register_forward_pre_hook(lambda _m, _i, n=name: rec.where.append(n)))
            handles.append(m.register_forward_hook(lambda _m, _i, _o: rec.where.pop() and None))
        except (RuntimeError, AttributeError):  # TorchScript modules take no hooks
            pass
    training = model.training
    set_mode(model, False)
    try:
        with torch.no_grad():
            _trace(model, tuple(input_shape), device, rec, _input_dtype(model))
    finally:
        for h in handles:
            h.remove()
        set_mode(model, training)

    layers = _operation_rows(rec.records, per_module)
    for name, m in per_module.items():
        direct = list(m.parameters(recurse=False))
        if not direct:
            continue
        if name == ROOT and _row_per_parameter(m):
            # a model's own parameters, a row each: the convs its forward runs on two of them shared
            # one row. (A model that is itself one layer, nn.Conv2d, keeps one row of its kind.)
            for pname, p in m.named_parameters(recurse=False):
                l = layers.setdefault(f"{ROOT}.{pname}", LayerCost(f"{ROOT}.{pname}", "other"))
                l.params, l.nonzero = p.numel(), int(torch.count_nonzero(p))
                l.bias_params, l.weight_params = 0, p.numel()
            continue
        kind = ("bn" if isinstance(m, nn.modules.batchnorm._BatchNorm) else
                "conv" if isinstance(m, nn.Conv2d) else "linear" if isinstance(m, nn.Linear) else "other")
        l = layers.setdefault(name, LayerCost(name, kind))
        l.params += sum(p.numel() for p in direct)
        l.nonzero += sum(int(torch.count_nonzero(p)) for p in direct)
        bias, gain = getattr(m, "bias", None), getattr(m, "gain", None)
        l.bias_params = bias.numel() if isinstance(bias, torch.Tensor) and kind != "bn" else 0
        if kind == "conv" and isinstance(gain, torch.Tensor) and gain.numel() == getattr(m, "out_channels", -1):
            l.bias_params += gain.numel()  # a scaled standardized conv's gain: one per output, as a bias
        l.weight_params = l.params - l.bias_params
    order = {name: i for i, name in enumerate(n for n, _ in model.named_modules())}
    ordered = sorted(layers.values(), key=lambda l: order.get(l.name, len(order)))
    total_params = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    flops = sum(l.flops for l in ordered)
    return Cost(flops, total_params, nonzero, tuple(input_shape), ordered)


def _operation_rows(records: list, per_module: dict) -> dict:
    """The layer table's rows of the recorded convolutions and matrix multiplies, by module name."""
    layers: dict[str, LayerCost] = {}
    unnamed = 0
    owners = _weight_owners(per_module)
    model = per_module.get(ROOT)
    split = model is not None and _row_per_parameter(model)
    root_weights = [(f"{ROOT}.{n}" if split else ROOT, tuple(p.shape))
                    for n, p in model.named_parameters(recurse=False) if p.dim() >= 2] if model is not None else []
    root = [list(w) for w in root_weights]  # those not matched yet (_owner)
    hooked = any(r[0] is not None for r in records)
    for name, kind, flops, detail, shape, weight in records:
        if name is None and not hooked:  # no hooks ran (TorchScript, torch.export): the module holding that weight
            name = _owner(owners, weight)
        elif name is None and kind == "linear":  # a matrix multiply outside any module (torch.matmul): a row of
            kind = "matmul"  # its own; it went to the Linear whose weight had its shape
        if name is None and kind == "conv" and weight is not None and any(tuple(weight) == s for _, s in root_weights):
            # the model's own forward convolving its own weight (standardized, say): one row, not
            # its FLOPs as conv#i and its params as <root> (a matmul's right operand may be any tensor).
            # Matched by shape, to the first root weight of that shape not matched yet (in the order the
            # model holds them), else to the first: a computed kernel of a root weight's shape is billed
            # there too, and two root weights of one shape may swap rows (the totals are right either way)
            name = _owner(root, weight) or next(n for n, s in root_weights if s == tuple(weight))
        if name is None:
            name, unnamed = f"{kind}#{unnamed}", unnamed + 1
        l = layers.setdefault(name, LayerCost(name, kind, detail=detail))
        l.flops += flops
        l.calls += 1
        if shape is not None:
            l.c_in, l.c_out, l.groups, l.unit = shape
    return layers


def _row_per_parameter(model: nn.Module) -> bool:
    """Whether the parameters ``model`` holds itself get a row each (``<root>.<name>``): unless it
    is itself one layer of a kind the table names (a conv, linear or batch norm: one row)."""
    return not isinstance(model, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm))


def _weight_owners(per_module: dict) -> list:
    """[module name, its 2-D-or-more ``weight``'s shape], in the order of ``named_modules``."""
    out = []
    for name, m in per_module.items():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            split = name == ROOT and _row_per_parameter(m)
            out.append([f"{ROOT}.weight" if split else name, tuple(w.shape)])
    return out


def _owner(owners: list, weight) -> str | None:
    """The first module of ``owners`` not yet matched whose weight has the shape ``weight``: a
    TorchScript or exported network runs its layers in the order it holds them. Without it the
    table listed each layer twice: its parameters under its name, its FLOPs as ``conv#i``."""
    for i, (name, shape) in enumerate(owners):
        if weight is not None and shape == tuple(weight):
            del owners[i]
            return name
    return None


def meta_state(model: nn.Module) -> dict:
    """Every parameter and buffer of ``model`` (tied ones under each name) as an empty tensor of
    its shape on PyTorch's meta device, for ``torch.func.functional_call``: a forward that computes
    every shape and allocates nothing (this counting, and :mod:`dan.memory`'s estimate)."""
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return {n: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad) for n, t in named}


def _input_dtype(model: nn.Module) -> torch.dtype:
    """The floating type of the model's first floating parameter or buffer (float32 without one):
    a float64 or bfloat16 model refused a float32 input."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _trace(model: nn.Module, input_shape: tuple, device, rec: _Recorder, dtype=torch.float32) -> None:
    """Run ``model`` once under ``rec``: on PyTorch's meta device where it can (its parameters and
    buffers swapped for meta copies, as :func:`dan.memory.activation_bytes` does: every shape,
    nothing allocated, so a large input is counted at once instead of allocated, which took 107 s
    and then failed for a ResNet-18 at 20000 px), else on a zero input on ``device`` (TorchScript
    and exported modules, tensors held outside parameters and buffers, operations without a meta
    kernel, control flow on the input's values). Both record the same operations: checked equal on
    every model of the conversion's zoo (tests/test_cost.py)."""
    if not isinstance(model, torch.jit.ScriptModule):
        try:
            with rec:
                torch.func.functional_call(model, meta_state(model),
                                           (torch.empty(input_shape, device="meta", dtype=dtype),))
            return
        except Exception:  # noqa: BLE001 - whatever stops a meta run: count it for real
            rec.records.clear()
            rec.where.clear()
    with rec:
        model(torch.zeros(input_shape, device=device, dtype=dtype))


def refused_input(model: nn.Module, input_shape: tuple, e: BaseException) -> str:
    """The line of a ``dan.count`` whose model does not run on ``input_shape`` (it raised ``e``):
    what it said and the shape to give, with the channels its first conv takes. An audit's
    ``dan.count(m, (3, 64))`` and a 3-channel ResNet's ``(1, 1, 64, 64)`` were PyTorch's bare
    RuntimeErrors ("Expected 3D (unbatched) or 4D (batched) input to conv2d ...")."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    example = (f"e.g. (1, {first.in_channels}, 224, 224): its first conv takes {first.in_channels} channels"
               if first is not None else "e.g. (1, 3, 224, 224)")
    return (f"{type(model).__name__} does not run on an input of shape {input_shape} ({first_line(e, 200)}): "
            f"give dan.count the shape of an input it takes, the batch first, {example}")


def set_mode(model: nn.Module, training: bool) -> None:
    """``model.train(training)``, tolerating ``torch.export`` modules (which refuse it)."""
    try:
        model.train(training)
    except NotImplementedError:
        pass


_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_count(text: str | int | float) -> int:
    """``"1.6G"`` → 1_600_000_000; ``"500M"``, ``"1.8M"``, ``"250K"``, plain numbers (powers of 10)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text):
            raise UserError(f"cannot read the count {text!r}: write a finite number, e.g. 1.6G or 500M")
        return int(round(text))  # as a written "1.5" is: 1.5 was 1, "1.5" 2
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KkMmGgTt]?)\s*", str(text))
    if not m:
        raise UserError(f"cannot read the count '{text}': write a number with an optional K, M or G "
                        f"suffix, e.g. 1.6G or 500M")
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if not math.isfinite(value):
        raise UserError(f"cannot read the count '{text}': it is too large; write e.g. 1.6G or 500M")
    return int(round(value))


def format_count(n: float) -> str:
    """``1_600_000_000`` → ``"1.60G"`` (powers of 10)."""
    for suffix in ("T", "G", "M", "K"):
        # from where two decimals round up to the next suffix (999_999 was "1000.00K")
        if abs(n) >= _SUFFIX[suffix] - _SUFFIX[suffix] / 2e5:
            return f"{n / _SUFFIX[suffix]:.2f}{suffix}"
    return str(int(n))
