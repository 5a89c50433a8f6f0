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
* ``small.json`` — what it is: input shape, FLOPs, parameters, widths.

TorchScript is deprecated upstream but still the format most serving stacks read; both are written
so that users of either world can deploy without this package.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
import warnings

import torch
import torch.nn as nn
from torch.fx.experimental.optimization import fuse

from dan.checkpoint import atomic_write
from dan.cost import count, set_mode


def deploy_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, BatchNorm folded into convs, channels-last."""
    model = copy.deepcopy(model)
    set_mode(model, False)
    try:
        model = fuse(model)  # conv+BN folding on the fx graph (needs a traceable model)
    except Exception:  # not traceable: keep the BatchNorms
        pass
    if any(p.ndim == 4 for p in model.parameters()):
        model = model.to(memory_format=torch.channels_last)
    return model


def save_deployable(model: nn.Module, folder: str, input_shape: tuple, *, name: str = "small",
                    extra: dict | None = None) -> dict:
    """Write ``<name>.pt`` (TorchScript), ``<name>.pt2`` (torch.export), ``<name>_state.pt`` and
    ``<name>.json`` into ``folder``; returns the metadata written to the JSON file."""
    os.makedirs(folder, exist_ok=True)
    set_mode(model, False)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    cost = count(model, (1,) + tuple(input_shape[1:]))  # as extracted: BatchNorm parameters count
    model = deploy_form(model)
    example = torch.zeros((2,) + tuple(input_shape[1:]), device=_device(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(model, example, check_trace=False)
        atomic_write(lambda p: torch.jit.save(scripted, p), os.path.join(folder, f"{name}.pt"))
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    with warnings.catch_warnings():  # channels-last weights make torch.export chatty, not wrong
        warnings.simplefilter("ignore", UserWarning)
        atomic_write(lambda p: torch.export.save(program, p), os.path.join(folder, f"{name}.pt2"), ".pt2")
    atomic_write(lambda p: torch.save(state, p), os.path.join(folder, f"{name}_state.pt"))
    meta = {"input_shape": [1] + list(input_shape[1:]), "flops": cost.flops, "params": cost.params,
            "nonzero_params": cost.nonzero_params, **(extra or {})}
    atomic_write(lambda p: _write_json(meta, p), os.path.join(folder, f"{name}.json"))
    return meta


def load_deployable(path: str) -> nn.Module:
    """Load a ``.pt`` (TorchScript) or ``.pt2`` (torch.export) network written by
    :func:`save_deployable`."""
    if path.endswith(".pt2"):
        return torch.export.load(path).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(path, map_location="cpu")


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple, *, warmup: int = 3, repeats: int = 10,
                    min_time: float = 0.5) -> float:
    """Median wall time in milliseconds of one forward pass at ``input_shape`` (eval mode).

    Runs ``warmup`` passes, then at least ``repeats`` timed passes and at least ``min_time``
    seconds. Absolute times depend on the machine and its load: compare models in one run.
    """
    training = getattr(model, "training", False)
    set_mode(model, False)
    x = torch.randn(tuple(input_shape), device=_device(model))
    for _ in range(warmup):
        model(x)
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        _sync(x)
        t = time.perf_counter()
        model(x)
        _sync(x)
        times.append(time.perf_counter() - t)
        if len(times) > 1000:
            break
    set_mode(model, training)
    return 1000.0 * statistics.median(times)


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def _device(model: nn.Module) -> torch.device:
    for p in list(model.parameters()) + list(model.buffers()):
        return p.device
    return torch.device("cpu")


def _write_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
