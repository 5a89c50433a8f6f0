"""Will it fit? Memory a run needs, checked against what the machine has before it is spent.

A network or an input too large for the machine's memory does not always fail as an allocation
the tools can report: on Linux most allocations succeed (memory is overcommitted) and the kernel's
out-of-memory killer ends the process once the pages are touched, with no message and, mid-epoch,
with the epoch's work lost. So before a run starts (:func:`check_training`, called by
:func:`dan.loop.start` once the task is built and before its folder is written) and before a
search space's weights are allocated (:func:`check_weights`), the need is computed and compared
with ``MemAvailable``:

* **saved activations**: one forward of the training model at the real batch on PyTorch's meta
  device (or under ``FakeTensorMode``), which computes every shape and allocates nothing; a
  saved-tensors hook sums the distinct storages autograd keeps for the backward pass (what a
  training step holds at the end of its forward), parameters excluded;
* **optimizer state**: Adam and AdamW keep two tensors per parameter, SGD with momentum one
  (gradients are freed before each forward: ``zero_grad(set_to_none=True)``);
* **evaluation**: the largest of those tensors at the evaluation batch (no gradients are kept,
  but each tensor is made once), scaled from the same pass.

Each is a lower bound (transient buffers of the backward pass, gradients, the data loader's
workers and the export are left out; a search is estimated at its narrowest small path): a
refused run could not fit in the memory available then, and a run that passes may need more. Measured on 2026-12-06
(peak resident memory by ``/usr/bin/time -f %M`` of a 1-batch run at batch 16 of a width-8
ResNet-18, minus the same run's at 16 pixels; estimate / measured): ``tools/train.py`` 0.90 at
128 pixels, 0.99 at 256, 0.95 at 384, 0.99 at 512 (3.39 GB of 3.41); ``tools/search.py`` 0.57 to
0.66 at the same sizes. ``tools/bench.py`` shows it beside the measured peak of its steps. On
the CPU only: a GPU's allocator raises an error the tools already report in one line
(``dan.errors.out_of_memory``).
``DAN_MEMORY_CHECK=0`` skips the check (e.g. where swap would carry a run that RAM cannot).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from dan.errors import UserError, quiet_fx_errors
from dan.timing import proc_kb

ENV = "DAN_MEMORY_CHECK"
GIB = float(1 << 30)
# Per-parameter state tensors each optimizer keeps (dan.engine.build_optimizer's choices).
_STATE_TENSORS = {"adam": 2, "adamw": 2}


def available_bytes() -> int | None:
    """The machine's available memory (``MemAvailable``), or None where the check does not apply:
    not Linux, or ``DAN_MEMORY_CHECK=0``."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return 1024 * proc_kb("MemAvailable", "/proc/meminfo")
    except (OSError, ValueError):
        return None


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the trainable parameters (each shared tensor once)."""
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values()
               if p.requires_grad)


def optimizer_state_bytes(model: nn.Module, optimizer: str, momentum: float) -> int:
    """Bytes of the optimizer's per-parameter state once its first step has run."""
    tensors = _STATE_TENSORS.get(optimizer, 1 if momentum else 0)
    return tensors * parameter_bytes(model)


@contextlib.contextmanager
def kept_for_backward(into: dict):
    """Within it, every tensor autograd saves for the backward pass is recorded as ``into[storage]
    = bytes``, each storage once (a view shares its base's); parameters and their views (a
    transposed weight) are left out, being resident already. Real, meta or fake tensors alike."""
    def pack(t):
        base = t if t._base is None else t._base
        if not (base.is_leaf and base.requires_grad):
            s = t.untyped_storage()
            into[s._cdata] = s.nbytes()
        # detached: a saved output returned as itself would hold its own grad_fn, a cycle through
        # autograd's C++ that Python's collector cannot see (every network it ran would be leaked)
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield into


def activation_bytes(model: nn.Module, batch_shape: tuple, *, amp=None) -> tuple[int, float] | None:
    """``(saved, largest)``: bytes autograd keeps for the backward pass of one training forward at
    ``batch_shape``, and the largest of those tensors per image (for the evaluation bound). Nothing
    is allocated and the model's state (weights, BatchNorm statistics, random generators) is left
    as it was. None when the model cannot run without real tensors (the check is then skipped: it
    refuses only what it can show).

    On the meta device first (the parameters and buffers swapped for meta copies by
    ``torch.func.functional_call``: 3-5 times faster than fake tensors, which matters as every run
    makes this check), then, for a model holding other tensors or under ``amp`` (autocast does not
    reach the meta device), under ``FakeTensorMode``. Each equalled what a real forward kept on all
    117 zoo models the conversion takes (``docs/coverage.md``, run once with each)."""
    saved: dict = {}
    training = model.training
    # fake tensors: a buffer updated in Python (BatchNorm's num_batches_tracked += 1) is the real
    # tensor under allow_non_fake_inputs (the kernels' own updates are faked)
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:  # a failure is an answer here (None), not the user's error: no fx traceback printed
        with torch.random.fork_rng(devices=[]), quiet_fx_errors():
            model.train()
            if amp is None:
                try:
                    return _on_meta(model, batch_shape, saved)
                except Exception:  # noqa: BLE001 - a tensor that is not a parameter or buffer, ...
                    saved.clear()
            return _on_fake(model, batch_shape, saved, amp)
    except Exception:  # noqa: BLE001 - an operation without a meta kernel, data-dependent control flow, ...
        return None
    finally:
        model.train(training)
        with torch.no_grad():
            for b, was in buffers:
                b.copy_(was)


def _totals(saved: dict, batch: int) -> tuple[int, float]:
    return sum(saved.values()), max(saved.values(), default=0) / batch


def _on_meta(model: nn.Module, batch_shape: tuple, saved: dict) -> tuple[int, float]:
    from dan.cost import meta_state

    with kept_for_backward(saved):
        torch.func.functional_call(model, meta_state(model), (torch.empty(batch_shape, device="meta"),))
    return _totals(saved, batch_shape[0])


def _on_fake(model: nn.Module, batch_shape: tuple, saved: dict, amp) -> tuple[int, float]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    device_type = "cuda" if any(p.is_cuda for p in model.parameters()) else "cpu"
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(batch_shape)
        autocast = torch.autocast(device_type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with autocast, kept_for_backward(saved):
            model(x)
    return _totals(saved, batch_shape[0])


@dataclass
class Need:
    """The least one training step needs beside its weights, by part (bytes)."""

    kept: int  # kept for the backward pass (at the end of the forward)
    state: int  # the optimizer's per-parameter state
    per_image: float  # the largest kept tensor, per image (the evaluation bound)

    @property
    def least(self) -> int:
        return self.kept + self.state


def training_need(model: nn.Module, batch_shape: tuple, *, optimizer: str = "adam", momentum: float = 0.0,
                  amp=None) -> Need | None:
    """:class:`Need` of one training step of ``model`` at ``batch_shape`` with ``optimizer``
    (``train.optimizer``, ``train.momentum``): what the check before a run, ``count.py
    --batch-size`` and the benchmark report. None where :func:`activation_bytes` cannot tell."""
    acts = activation_bytes(model, batch_shape, amp=amp)
    if acts is None:
        return None
    return Need(acts[0], optimizer_state_bytes(model, optimizer, momentum), acts[1])


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= 0.1 * GIB else f"{n / (1 << 20):.0f} MiB"


def check_training(model: nn.Module, batch_shape: tuple, *, eval_batch: int, optimizer: str = "adam",
                   momentum: float = 0.0, amp=None, processes: int = 1, available: int | None = None) -> None:
    """Refuse (:class:`UserError`) a run whose training step at ``batch_shape`` or evaluation at
    ``eval_batch`` images cannot fit in the memory available (``available`` bytes; default the
    machine's); ``processes`` ranks on this machine each need as much. ``optimizer`` and
    ``momentum`` as in ``train.*``."""
    available = available_bytes() if available is None else available
    if available is None or any(p.is_cuda for p in model.parameters()):
        return
    need = training_need(model, batch_shape, optimizer=optimizer, momentum=momentum, amp=amp)
    if need is None:
        return
    saved, largest, state = need.kept, need.per_image, need.state
    need_train = processes * need.least
    need_eval = processes * largest * eval_batch
    batch = batch_shape[0]
    where = f"{'x'.join(map(str, batch_shape[1:]))} inputs" + (f", {processes} processes" if processes > 1 else "")
    if need_train > available:
        fixed = processes * state
        fits = math.floor((available - fixed) / (processes * saved / batch)) if available > fixed else 0
        # half the most that could fit: measured peaks were up to 1.75 times this lower bound (a search)
        fix = (f"lower data.batch_size to {max(1, fits // 2)} (above {fits} it cannot fit; this estimate is a "
               f"lower bound)" if fits >= 1 else "even batch 1 does not fit: lower data.image_size or the network's width")
        raise UserError(f"training needs at least {gib(need_train)} of memory at batch {batch} of {where} "
                        f"({gib(processes * saved)} kept for the backward pass, {gib(fixed)} of {optimizer} "
                        f"state) and this machine has {gib(available)} available: {fix}, or free memory "
                        f"({ENV}=0 skips this check)")
    if need_eval > available:
        fits = math.floor(available / (processes * largest))
        fix = f"set data.eval_batch_size to {fits} or less" if fits >= 1 else "lower data.image_size"
        raise UserError(f"evaluation needs at least {gib(need_eval)} of memory at batch {eval_batch} of {where} "
                        f"and this machine has {gib(available)} available: {fix} ({ENV}=0 skips this check)")


def check_weights(model_fn, what: str, *, available: int | None = None, fix: str = "lower its width") -> None:
    """Refuse a network whose weights alone are more than the memory available: ``model_fn()`` is
    built on the meta device (no memory) and its parameters and buffers counted. For this
    package's own search spaces, whose ``width`` a user sets (a width-1000 ResNet-18 holds 11 GB of
    weights), and torchvision's and timm's networks (:func:`dan.models.check_size`), before the real
    build would allocate them; ``fix``: what the message tells the user to do."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    try:
        with torch.device("meta"):
            model = model_fn()
    except Exception:  # noqa: BLE001 - a constructor that needs real tensors: the build will tell
        return
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}.values()
    need = sum(t.numel() * t.element_size() for t in tensors)
    if need > available:
        raise UserError(f"{what} has {gib(need)} of weights and this machine has {gib(available)} "
                        f"available: {fix} ({ENV}=0 skips this check)")
