"""Saving the deployable network and timing it.

The deployable form of a network (:func:`deploy_form`) folds every BatchNorm into the conv before
it and stores the weights channels-last (NHWC), which oneDNN/cuDNN run fastest; outputs are the
same to float tolerance. Latencies in summaries and benchmarks are measured on this form for the
big and the small network alike.

:func:`save_deployable` writes, next to each other:

* ``small.pt`` — TorchScript of the deployable form; ``torch.jit.load("small.pt")`` runs it with PyTorch alone (and from
  C++ via libtorch), no class of this package needed;
* ``small.pt2`` — the same network as a ``torch.export`` program with a dynamic batch dimension,
  PyTorch's successor format (``torch.export.load("small.pt2").module()``);
* ``small_state.pt`` — the state dict of the network as extracted (BatchNorm not folded, so it can
  be fine-tuned; plain tensors, loads with ``weights_only=True``);
* ``small.onnx`` — the same network in ONNX (opset 17; 18 from the fallback exporter; dynamic batch), checked against PyTorch with
  ONNX Runtime (:mod:`dan.onnx_export`; needs the ``dan[onnx]`` extra, else skipped with one warning);
* ``small.json`` — what it is: input shape, FLOPs, parameters, the layout, the run's method and space, the
  input it takes (``preprocess``: the evaluation's steps, mean and std, class names), the ONNX check.

TorchScript is deprecated upstream but still the format most serving stacks read; both are written
so that users of either world can deploy without this package.

**Trust.** :func:`load_deployable` never unpickles code from a ``.pt2``: ``torch.export.load``
itself falls back to ``torch.load(weights_only=False)``, ``pickle.loads`` and compiled AOTInductor
libraries for some archive entries, so the archive is first checked against the entries that
``torch.export.save`` writes for a plain network (JSON program, raw weight buffers, configs that
say "no pickle"), every string of its JSON is checked against what ``torch.export.save`` writes
there (:mod:`dan.pt2_json`: the deserializer evaluates symbolic sizes with ``sympy.sympify``, looks
node targets up from ``torch`` and pastes names into Python source it runs), and the load then runs
with every unpickler forced to ``weights_only=True``. Anything else is refused with a
:class:`UserError`. TorchScript (``.pt``) files carry TorchScript
code that PyTorch runs when the network runs: load only ``.pt`` files you trust (your own runs), and
prefer ``.pt2`` for files you received.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import warnings
import zipfile

import torch
import torch.nn as nn
import torch.fx as fx
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dan.checkpoint import atomic_write, write_bytes, write_json, write_through_python
from dan.cost import count_layers, set_mode
from dan.errors import UserError, first_line, out_of_memory, quiet_fx_errors
from dan.timing import device_of, median_ms, sync


# the layouts a deployable network's 4-d weights can take, by their config name
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def deploy_form(model: nn.Module, memory_format: str = "channels_last") -> nn.Module:
    """A copy of ``model`` for inference: eval mode, BatchNorm folded into convs (one without running
    statistics spelt out: :class:`BatchStatsNorm`), 4-d weights in
    ``memory_format`` (``channels_last``, or ``contiguous``: NCHW, which thin networks at batch 1
    can run faster on some CPUs, see :mod:`dan.latency`)."""
    model = copy.deepcopy(model)
    set_mode(model, False)
    try:
        model = fold_batchnorms(model)
    except Exception:  # not traceable: keep the BatchNorms
        pass
    _spell_out_batch_stats(model)
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory format '{memory_format}': choose {' or '.join(MEMORY_FORMATS)}")
    if any(p.ndim == 4 for p in model.parameters()):  # (a network trained channels-last keeps it)
        model = model.to(memory_format=MEMORY_FORMATS[memory_format])
    return model


class BatchStatsNorm(nn.Module):
    """A BatchNorm without running statistics (``track_running_stats=False``: it normalizes by the
    batch's own, in evaluation too) in plain tensor operations, as the deployed files hold it: the
    TorchScript ONNX exporter refused the module ("batch_size and channel_size must be non-None", an
    AssertionError that ended a successful run in a Python warning and no small.onnx), and tracing
    it warned of a size check taken as a constant."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.eps, self.weight, self.bias = bn.eps, bn.weight, bn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.ndim))  # every dimension but the channels'
        # the statistics in float32 at least, as nn.BatchNorm's kernel takes them (bfloat16 ones
        # were 0.016 off)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = (xf - xf.mean(dims, keepdim=True)) / torch.sqrt(xf.var(dims, unbiased=False, keepdim=True) + self.eps)
        if self.weight is not None:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = y * self.weight.reshape(shape).to(y.dtype) + self.bias.reshape(shape).to(y.dtype)
        return y.to(x.dtype)


def _spell_out_batch_stats(model: nn.Module) -> None:
    """Make ``model``'s plain BatchNorms without running statistics :class:`BatchStatsNorm` (the
    same outputs), in place (timm's BatchNormAct2d, which also runs its activation, is left)."""
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    names = [n for n, m in model.named_modules() if type(m) in plain and m.running_mean is None]
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, leaf, BatchStatsNorm(getattr(owner, leaf)))


def layout_for(model: nn.Module, input_shape: tuple, memory_format: str = "channels_last") -> str:
    """``memory_format``, or ``contiguous`` where ``model`` cannot run channels-last: a forward that
    flattens with ``x.view(x.size(0), -1)`` needs a contiguous tensor, and an audit's LeNet trained,
    deployed and was timed channels-last into "view size is not compatible" tracebacks, with no
    setting that avoided all three. Probed with one forward of a copy on zeros (eval mode)."""
    if memory_format != "channels_last" or not any(p.ndim == 4 for p in model.parameters()):
        return memory_format
    try:  # (an fx module prints its own traceback before raising: not for a probe)
        probe = copy.deepcopy(model).to(memory_format=torch.channels_last)
        set_mode(probe, False)
        x = torch.zeros((2,) + tuple(input_shape[1:]), device=device_of(model),
                        dtype=next(model.parameters()).dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), quiet_fx_errors():
            probe(x)
    except RuntimeError as e:
        if "view size is not compatible" in str(e):
            return "contiguous"
    except Exception:  # noqa: BLE001 (not the layout's: the run itself says what is wrong)
        pass
    return memory_format


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """``model`` (in eval mode) with every BatchNorm that follows a conv alone folded into the conv's
    weights and bias, on its fx graph (an extracted network's own, or one traced with
    :func:`dan.graph.trace`, which keeps timm's layers whole).

    Folded: ``nn.BatchNorm2d`` and timm's ``BatchNormAct2d`` (its dropout and activation stay, as a
    ``Sequential``) after an ``nn.Conv2d`` or a "same"-padding conv (``dan.graph.SAME_PADDING_CONVS``,
    whose forward convolves with the same weight and bias), or after a ``Sequential`` that ends in one
    (lowrank's factorized convs: the BatchNorm folds into their last, 1×1 conv). torch's own ``fuse``
    retraces the model with the default tracer and matches exact classes, so it folded neither timm's
    BatchNormAct2d (traced into a functional batch norm) nor anything in a network with a "same" conv
    (untraceable).
    Other conv subclasses (weight standardization...) are left alone."""
    from dan.graph import SAME_PADDING_CONVS, trace

    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    modules = dict(gm.named_modules())
    calls: dict = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    for node in list(gm.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or type(bn).__name__ not in ("BatchNorm2d", "BatchNormAct2d") \
                or bn.running_mean is None or bn.training or not node.args:
            continue
        src = node.args[0]
        conv = modules.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        target = src.target if conv is not None else None
        # a plain Sequential or lowrank's Factorized (a subclass may override forward: a residual
        # x + super().forward(x) must not have the BatchNorm after it folded into its last conv)
        while (type(conv) is nn.Sequential or type(conv).__name__ == "Factorized") and len(conv):
            target, conv = f"{target}.{len(conv) - 1}", conv[len(conv) - 1]
        if conv is None or not (type(conv) is nn.Conv2d or type(conv).__name__ in SAME_PADDING_CONVS) \
                or len(src.users) != 1 or calls[src.target] != 1 or calls[node.target] != 1:
            continue
        gm.set_submodule(target, fuse_conv_bn_eval(conv, bn))
        post = [getattr(bn, k) for k in ("drop", "act") if isinstance(getattr(bn, k, None), nn.Module)]
        if post:  # BatchNormAct2d: what it runs after normalizing stays
            gm.set_submodule(node.target, nn.Sequential(*post))
        else:
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm


def save_deployable(model: nn.Module, folder: str, input_shape: tuple, *, name: str = "small",
                    extra: dict | None = None, memory_format: str = "channels_last") -> dict:
    """Write ``<name>.pt`` (TorchScript), ``<name>.pt2`` (torch.export), ``<name>.onnx`` (with the
    extra), ``<name>_state.pt`` and ``<name>.json`` into ``folder``; returns the metadata written
    to the JSON file. ``memory_format`` (``channels_last`` or ``contiguous``) is the layout of the
    TorchScript and torch.export weights (:func:`deploy_form`)."""
    os.makedirs(folder, exist_ok=True)
    set_mode(model, False)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    cost = count_layers(model, (1,) + tuple(input_shape[1:]))  # as extracted: BatchNorm parameters count
    memory_format = layout_for(model, input_shape, memory_format)
    model = deploy_form(model, memory_format)
    example = torch.zeros((2,) + tuple(input_shape[1:]), device=device_of(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(model, example, check_trace=False)
        atomic_write(lambda p: write_bytes(lambda f: torch.jit.save(scripted, f), p), os.path.join(folder, f"{name}.pt"))
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    with warnings.catch_warnings():  # channels-last weights make torch.export chatty, not wrong
        warnings.simplefilter("ignore", UserWarning)
        atomic_write(lambda p: write_bytes(lambda f: torch.export.save(program, f), p),
                     os.path.join(folder, f"{name}.pt2"), ".pt2")
    atomic_write(lambda p: write_through_python(lambda f: torch.save(state, f), p), os.path.join(folder, f"{name}_state.pt"))
    meta = {"input_shape": [1] + list(input_shape[1:]), "flops": cost.flops, "params": cost.params,
            "nonzero_params": cost.nonzero_params, "memory_format": memory_format, **(extra or {})}
    from dan import onnx_export  # it uses this module's timing loop

    checked = onnx_export.save_and_check(model, folder, input_shape, name)
    if checked is not None:
        meta["onnx"] = checked
    atomic_write(lambda p: write_json(meta, p), os.path.join(folder, f"{name}.json"))
    return meta


def load_deployable(path: str) -> nn.Module:
    """Load a ``.pt2`` (torch.export) or ``.pt`` (TorchScript) network written by
    :func:`save_deployable`. A ``.pt2`` that holds pickled objects or compiled code is refused
    (see the module docstring); a file that is not a network is a :class:`UserError`."""
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: pass the small.pt2 or small.pt of a run folder")
    if path.endswith(".pt2"):
        check_pt2(path)
        try:
            with _no_code_unpickling(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.export.load(path).module()
        except UserError:
            raise
        except Exception as e:  # truncated or foreign archives raise many types
            if out_of_memory(e):  # a good network too large for the memory left
                raise
            raise UserError(f"{path} is not a readable torch.export network ({first_line(e, 160)}): "
                            f"re-export it with dan (tools/train.py or tools/retrain.py)") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location="cpu")
    except Exception as e:
        if out_of_memory(e):
            raise
        raise UserError(f"{path} is not a readable TorchScript network ({first_line(e, 160)}): pass the "
                        f"small.pt or small.pt2 of a run folder") from e


# Entries torch.export.save writes for a plain network (a root folder, then these paths). Weights
# and constants are raw tensor buffers described by JSON configs; everything that would be
# unpickled (``opaque_obj_*``, ``custom_obj_*``, pickled tensor subclasses) or loaded as native code
# (``data/aotinductor/``) is absent from it.
_PT2_ENTRIES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
    r"models/[\w.-]+\.json|data/sample_inputs/[\w.-]+\.pt|"
    r"data/weights/[\w.-]+_weights_config\.json|data/weights/weight_\d+|"
    r"data/constants/[\w.-]+_constants_config\.json|data/constants/tensor_\d+|extra/[\w./-]+)")


def check_pt2(path: str) -> None:
    """Refuse a ``.pt2`` archive unless it holds only what :func:`save_deployable` writes: no
    pickled Python objects, no compiled libraries, not the legacy (pickle-based) layout, and JSON
    whose every string is what torch.export writes there (:mod:`dan.pt2_json`: the deserializer
    hands symbolic sizes to ``sympy.sympify``, which evaluates them, resolves node targets from
    ``torch`` and pastes names into the Python source it generates)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1 or any("/" not in n for n in names) or len(set(names)) != len(names):
                raise UserError(f"{path} is not a torch.export archive written by this PyTorch "
                                f"(old or foreign layout, or an entry twice): re-export it with dan")
            for n in names:
                rel = n.split("/", 1)[1]
                if not _PT2_ENTRIES.fullmatch(rel) or ".." in rel:
                    raise UserError(f"{path} holds '{rel}', which could run code when loaded; refused "
                                    f"(only plain exported networks are loaded: re-export it with dan)")
            for n in names:
                rel = n.split("/", 1)[1]
                if rel.endswith(".json") and not rel.startswith("extra/"):
                    _check_pt2_json(path, rel, z.read(n))
    except zipfile.BadZipFile:
        raise UserError(f"{path} is not a .pt2 archive (truncated or another format): pass the "
                        f"small.pt2 of a run folder")


def _check_pt2_json(path: str, rel: str, data: bytes) -> None:
    """One JSON entry of a ``.pt2``: a weights or constants config must not say "pickle", and
    every string must be what torch.export writes (:func:`dan.pt2_json.check_pt2_json`)."""
    from dan.pt2_json import check_pt2_json

    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path}: '{rel}' is not valid JSON: the file is corrupt") from None
    if rel.endswith("_config.json"):
        config = doc.get("config", {}) if isinstance(doc, dict) else None
        if not isinstance(config, dict):
            raise UserError(f"{path}: '{rel}' is not valid JSON: the file is corrupt")
        for key, meta in config.items():
            if not isinstance(meta, dict) or meta.get("use_pickle", True):
                raise UserError(f"{path} stores '{key}' as a pickle, which could run code "
                                f"when loaded; refused (re-export it with dan)")
    check_pt2_json(path, rel, doc)


class _Refused(Exception):
    pass


@contextlib.contextmanager
def _no_code_unpickling():
    """While loading: every ``torch.load`` is ``weights_only=True`` and plain ``pickle.loads`` /
    TorchBind object loading raise, whatever torch.export asks for (defence in depth behind
    :func:`check_pt2`)."""
    import pickle
    import types

    real_load = torch.load

    def weights_only_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise _Refused("a pickled Python object")

    patches = [(torch, "load", weights_only_load), (torch._C, "_pickle_load_obj", refuse)]
    try:
        from torch.export.pt2_archive import _package
        patches.append((_package, "pickle", types.SimpleNamespace(loads=refuse, load=refuse,
                                                                   dumps=pickle.dumps)))
    except ImportError:  # older PyTorch: no pt2 archive module
        pass
    saved = [(obj, name, getattr(obj, name, None)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        yield
    except _Refused as e:
        raise UserError(f"the archive holds {e}, which could run code when loaded; refused "
                        f"(re-export it with dan)") from None
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple, *, warmup: int = 3, repeats: int = 10,
                    min_time: float = 0.5) -> float:
    """Median wall time in milliseconds of one forward pass at ``input_shape`` (eval mode).

    Absolute times depend on the machine and its load: compare models in one run.
    """
    training = getattr(model, "training", False)
    set_mode(model, False)
    x = torch.randn(tuple(input_shape), device=device_of(model))

    def run():
        sync(x)
        model(x)
        sync(x)
    try:
        return median_ms(run, warmup=warmup, repeats=repeats, min_time=min_time)
    finally:
        set_mode(model, training)
