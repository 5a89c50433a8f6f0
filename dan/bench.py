"""Benchmarks measured as ratios within one run (the machine is shared and noisy).

* :func:`step_ratio` — time of one adjoint training step over one standard step of the same base
  network (interleaved rounds, medians), plus the paper-code reference: the small path computed at
  full width with zeroed channels.
* :func:`inference_speedup` — latency of the extracted small network against the big one in every
  runtime form of :mod:`dan.runtimes`, and best form against best form, next to their FLOPs ratio.
* :func:`peak_memory` — peak resident memory added by training steps, each kind of step measured
  in a fresh subprocess (the only clean way to get a peak on the CPU), beside
  :func:`estimate_memory`, the lower bound :mod:`dan.memory` checks before a run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F

import search_spaces
from dan.adjoint import extract_small, to_adjoint
from dan.cost import count_layers
from dan.layers import channels_last_safe
from dan.loss import adjoint_loss
from dan.monitor import Monitor
from dan.timing import proc_kb


def interleaved_medians(fns: dict, rounds: int, warmup: int = 2) -> dict:
    """Median seconds of each function, calling them in turn for ``rounds`` rounds so that
    load changes on the machine hit every function alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def step_models(space: str, *, width: int = 64, batch: int = 64, image: int = 32, channels: int = 3,
                classes: int = 10, alpha: float = 4, channels_last: bool | None = None,
                kinds=("standard", "adjoint")) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """``(models, x, y)``: one network per kind of training step, all from the same base network,
    in the memory layout the trainer would use for it on this CPU (``channels_last=None``:
    :func:`dan.layers.channels_last_safe`), and the batch they train on."""
    torch.manual_seed(0)
    base = search_spaces.create(space, num_classes=classes, in_channels=channels, width=width)
    if channels_last is None:
        channels_last = channels_last_safe(base)
    x = torch.randn(batch, channels, image, image)
    y = torch.randint(0, classes, (batch,))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    models = {}
    for kind in kinds:
        if kind == "standard":
            models[kind] = _copy(base).to(memory_format=fmt)
        else:
            model = zeroed_adjoint(base, alpha, x.shape) if kind == "zeroed" else \
                to_adjoint(base, alpha=alpha, input_shape=(1,) + tuple(x.shape[1:]))
            models[kind] = model.to(memory_format=fmt)
    return models, x, y


def make_steps(space: str, *, kinds=("standard", "adjoint"), **kw) -> dict[str, Callable[[], None]]:
    """One closure per kind of training step (Adam) on :func:`step_models`' networks and batch."""
    models, x, y = step_models(space, kinds=kinds, **kw)
    steps = {}
    for kind, model in models.items():
        opt = torch.optim.Adam(model.parameters())
        if kind == "standard":
            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
        else:
            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                big, small = model(x)
                adjoint_loss(big, small, y, 1.0).backward()
                opt.step()
        steps[kind] = step
    return steps


def zeroed_adjoint(base, alpha: float, shape):
    """The paper code's way: the small path at full width, channels beyond c/α zeroed (by the
    same channel masks DAN search uses). Same outputs as the sliced small path, full cost."""
    anet = to_adjoint(base, alpha=1, input_shape=(1,) + tuple(shape[1:]))
    sliced = to_adjoint(base, alpha=alpha, input_shape=(1,) + tuple(shape[1:]))
    for g in anet.groups:
        if not g.fixed:
            g.mask_to(sliced.group(g.name).width)
    return anet


def step_ratio(space: str, rounds: int = 6, zeroed: bool = False, **kw) -> dict:
    kinds = ("standard", "adjoint") + (("zeroed",) if zeroed else ())
    med = interleaved_medians(make_steps(space, kinds=kinds, **kw), rounds)
    out = {"space": space, "standard_s": med["standard"], "adjoint_s": med["adjoint"],
           "adjoint_over_standard": med["adjoint"] / med["standard"]}
    if zeroed:
        out["zeroed_s"] = med["zeroed"]
        out["zeroed_over_standard"] = med["zeroed"] / med["standard"]
    return out


def inference_speedup(space: str, *, width: int = 64, image: int = 32, channels: int = 3,
                      classes: int = 10, alpha: float = 4, batches=(1, 64), rounds: dict | None = None,
                      threads=None) -> dict:
    """Latency of the extracted small network against the big one in every runtime form of
    :mod:`dan.runtimes`, all forms of both networks timed in interleaved rounds (medians). Per
    batch: each form's speed-up, and the speed-up of the best form of each network (what a user
    deploying each in its fastest form gets), next to the FLOPs ratio. Every form is timed with each
    of ``threads`` intra-op thread counts (default: 1 and PyTorch's), named ``form@Nt``. The
    top-level ``big_ms``, ``small_ms``, ``speedup`` of a batch stay the eager channels-last numbers at
    PyTorch's thread count (the first version)."""
    from dan.runtimes import forms

    torch.manual_seed(0)
    base = search_spaces.create(space, num_classes=classes, in_channels=channels, width=width).eval()
    shape = (1, channels, image, image)
    anet = to_adjoint(base, alpha=alpha, input_shape=shape).eval()
    small = extract_small(anet)
    big = fx.symbolic_trace(_copy(base)).eval()
    cb, cs = count_layers(big, shape), count_layers(small, shape)
    ratio = cb.flops / cs.flops
    out = {"space": space, "flops_big": cb.flops, "flops_small": cs.flops,
           "flops_ratio": ratio, "params_ratio": cb.params / cs.params, "batches": {}}
    rounds = rounds or {1: 15, 64: 5}
    default = torch.get_num_threads()
    thread_counts = sorted(set(threads or (1, default)))
    for b in batches:
        s = (b,) + shape[1:]
        ms, order = {}, []
        for t in thread_counts:  # a thread count is part of a deployment form: one pass each
            torch.set_num_threads(t)
            try:
                fns = {}
                for name, net in (("big", big), ("small", small)):
                    for form, fn in forms(net, s).items():
                        fns[(name, f"{form}@{t}t" if len(thread_counts) > 1 else form)] = fn
                med = interleaved_medians(fns, rounds.get(b, 5))
            finally:
                torch.set_num_threads(default)
            ms.update({k: 1000.0 * v for k, v in med.items()})
            order += [f for n, f in fns if n == "big"]
        per = {}
        for form in order:
            if ("big", form) in ms and ("small", form) in ms:
                sp = ms[("big", form)] / ms[("small", form)]
                per[form] = {"big_ms": ms[("big", form)], "small_ms": ms[("small", form)], "speedup": sp,
                             "speedup_over_flops_ratio": sp / ratio}
        top = max(per, key=lambda f: per[f]["speedup"])  # one form (runtime, threads) for both networks
        best_big = min(per, key=lambda f: per[f]["big_ms"])
        best_small = min(per, key=lambda f: per[f]["small_ms"])
        sp = per[best_big]["big_ms"] / per[best_small]["small_ms"]
        e = per.get("eager") or per[next(f for f in per if f.startswith("eager@") and f.endswith(f"@{default}t"))]
        out["batches"][str(b)] = {"big_ms": e["big_ms"], "small_ms": e["small_ms"], "speedup": e["speedup"],
                                  "speedup_over_flops_ratio": e["speedup_over_flops_ratio"], "runtimes": per,
                                  "best_runtime": {"form": top, **per[top]},
                                  "best": {"big": best_big, "small": best_small, "big_ms": per[best_big]["big_ms"],
                                           "small_ms": per[best_small]["small_ms"], "speedup": sp,
                                           "speedup_over_flops_ratio": sp / ratio}}
    return out


def peak_memory(space: str, kind: str, steps: int = 3, repeats: int = 3, **kw) -> int:
    """Peak resident bytes added by ``steps`` training steps of ``kind``: the median over
    ``repeats`` fresh subprocesses (the allocator makes single readings noisy)."""
    # the child reads its arguments from stdin and answers one JSON line on stdout
    code = ("import json, sys; from dan.bench import _memory_child; "
            "sys.stdout.write(json.dumps(_memory_child(*json.load(sys.stdin))) + '\\n')")
    arg = json.dumps([space, kind, steps, kw])
    readings = []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", code], input=arg, capture_output=True, text=True, check=True)
        readings.append(int(json.loads(res.stdout.strip().splitlines()[-1])))
    return int(statistics.median(readings))


def estimate_memory(space: str, kind: str, **kw) -> int:
    """What :mod:`dan.memory` computes, before a run, as the least those steps add: the bytes kept
    for the backward pass and Adam's two state tensors per parameter (the bench shows it beside
    :func:`peak_memory`, which it should never exceed)."""
    from dan.memory import training_need

    models, x, _ = step_models(space, kinds=(kind,), **kw)
    return training_need(models[kind], tuple(x.shape)).least


def _memory_child(space: str, kind: str, steps: int, kw: dict) -> int:
    """Peak RSS during the steps minus RSS before them. ``ru_maxrss`` is not usable here: Linux
    carries the parent's peak across fork+exec; VmHWM of /proc/self/status is per address space
    and is reset first (writing 5 to /proc/self/clear_refs)."""
    step = make_steps(space, kinds=(kind,), **kw)[kind]
    before = proc_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    for _ in range(steps):
        step()
    return (proc_kb("VmHWM") - before) * 1024


def _copy(m):
    import copy

    return copy.deepcopy(m)


def search_step_ratio(space: str = "resnet18_small", *, width: int = 64, batch: int = 64, image: int = 32,
                      rounds: int = 5, budget: str = "25%") -> dict:
    """Time of one DAN search step (weight step + architecture step, as :class:`~dan.search.Searcher`
    runs them) over one standard training step of the same base network, at the start of a search
    (uniform architecture distribution) and near its end (a distribution peaked on an
    architecture at the budget)."""
    import tempfile

    from dan.config import Config
    from dan.search import Searcher

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.from_dict({
            "out": tmp, "model": {"space": space, "args": {"width": width}},
            "data": {"dataset": "synthetic", "image_size": image, "num_classes": 10, "batch_size": batch,
                     "synthetic_size": 4 * batch, "holdout": 0.5},
            "search": {"budget_flops": budget}})
        s = Searcher(cfg, monitor=Monitor(None))
        x, y = next(iter(s.data.train))
        xh, yh = next(iter(s.data.holdout))
        x, xh = s.prep(x), s.prep(xh)
        # the standard step in the searcher's own layout (NCHW on CPUs without AVX-512: dan.layers)
        std = make_steps(space, width=width, batch=batch, image=image, channels_last=s.cl,
                         kinds=("standard",))["standard"]

        def search_step():
            s.weight_step(x, y, 0.5)
            s.arch_step(xh, yh, 0.5, 1.0)

        start = interleaved_medians({"standard": std, "search": search_step}, rounds)
        # peak the distribution on a budget-sized architecture (what the search converges to)
        from dan.supernet import repair

        b = s.budget
        choice = repair([len(c) // 2 for c in s.sn.cands], s.sn.cands,
                        [[0.0] * len(c) for c in s.sn.cands], lambda c: s.sn.cost_of(c)[0], b.lo, b.hi)
        with torch.no_grad():
            for t, k in zip(s.sn.arch.logits, choice):
                t.fill_(0.0)
                t[k] = 4.0
        end = interleaved_medians({"standard": std, "search": search_step}, rounds)
    return {"space": space, "budget": budget,
            "start": {"standard_s": start["standard"], "search_s": start["search"],
                      "search_over_standard": start["search"] / start["standard"]},
            "end": {"standard_s": end["standard"], "search_s": end["search"],
                    "search_over_standard": end["search"] / end["standard"]}}


def gpu_step_times(space: str = "resnet50_small", *, width: int = 64, batch: int = 128, image: int = 32,
                   rounds: int = 10) -> dict:
    """On CUDA only: one standard and one adjoint training step in fp32, with bf16/fp16 autocast
    (+ gradient scaler for fp16), channels-last, and torch.compile; ratios to fp32 standard."""
    import torch

    from dan.engine import amp_dtype

    if not torch.cuda.is_available():
        return {}
    dev = torch.device("cuda")
    torch.manual_seed(0)
    base = search_spaces.create(space, num_classes=10, width=width)
    x = torch.randn(batch, 3, image, image, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    variants = {"fp32": ("off", False, False), "amp": ("auto", False, False), "amp+cl": ("auto", True, False),
                "amp+cl+compile": ("auto", True, True)}
    fns = {}
    for kind in ("standard", "adjoint"):
        for label, (amp, cl, comp) in variants.items():
            model = _copy(base) if kind == "standard" else to_adjoint(base, alpha=4, input_shape=(1, 3, image, image))
            model = model.to(dev)
            fmt = torch.channels_last if cl else torch.contiguous_format
            model = model.to(memory_format=fmt)
            xin = x.contiguous(memory_format=fmt)
            fwd = torch.compile(model) if comp else model
            opt = torch.optim.Adam(model.parameters())
            dtype = amp_dtype(amp, dev)
            scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

            def step(fwd=fwd, opt=opt, xin=xin, dtype=dtype, scaler=scaler, kind=kind):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    out = fwd(xin)
                    loss = adjoint_loss(out[0], out[1], y, 1.0) if kind == "adjoint" else F.cross_entropy(out, y)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                torch.cuda.synchronize()

            fns[f"{kind}/{label}"] = step
    med = interleaved_medians(fns, rounds, warmup=3)
    ref = med["standard/fp32"]
    return {"space": space, "device": torch.cuda.get_device_name(), "batch": batch,
            "seconds": med, "over_standard_fp32": {k: v / ref for k, v in med.items()}}
