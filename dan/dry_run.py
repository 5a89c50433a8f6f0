"""A run's dry run: every check the real command makes before its first epoch, then the plan it
would follow, with nothing written.

:func:`plan_search` and :func:`plan_train` (training and retraining) build the run's task as the run
does (:func:`dan.loop.checked_start`: the run folder, the config, the network built and converted,
the budget read and checked against the space's cost range, the data found and its splits' sizes
read, the memory estimate, and on a resume the checkpoint's compatibility) and return a
:class:`Plan`. A user error is the :class:`~dan.errors.UserError` the run itself raises. Nothing is
written: no run folder, checkpoint, metrics or latency table (a latency budget takes the cached
table, or says that one would be measured). The audit that asked for it: ``tools/search.py
--dry-run`` was refused as an unknown flag, while a ResNet-50 search at 224 pixels runs for hours and
``tools/reproduce.py`` had one.
"""

from __future__ import annotations

import collections
import math
import os
from dataclasses import dataclass, field

import torch

from dan.config import Config
from dan.cost import format_count
from dan.downloads import withheld
from dan.loop import checked_start
from dan.monitor import Monitor, owned_monitor
from dan.seed import kept_rng_state


@dataclass
class Plan:
    """What a run would do. ``start``: ``"new"`` (the folder would be made, or holds no run) or
    ``"resume"``; ``rows``: ``(label, text)`` in the order :meth:`format` prints them."""

    run_dir: str
    start: str
    rows: list = field(default_factory=list)

    def format(self) -> str:
        width = max(len(label) for label, _ in self.rows) + 1
        return "\n".join(f"{label + ':':<{width}} {text}" for label, text in self.rows)


def plan_search(cfg: Config, monitor: Monitor | None = None, *, resume: bool = False, data=None,
                model=None) -> Plan:
    """The plan of ``dan.search.search(cfg, resume=resume)`` after all of its checks; see the
    module docstring. The caller's random generators are left as they were."""
    from dan.search import Searcher, checked_search_config, narrowest

    cfg = checked_search_config(cfg, resume)
    with kept_rng_state(), owned_monitor(monitor, cfg.run_dir) as mon, withheld() as fetched:
        sr = checked_start(cfg, resume, lambda: Searcher(cfg, mon, data=data, model=model, dry_run=True),
                           least=narrowest)
    s = cfg.search
    warmup = f"; weight steps only for the first {s.warmup_epochs:g} epoch(s)" if s.warmup_epochs else ""
    rows = [("model", f"{_model(cfg)}, input {_shape(sr.input_shape)}, {sr.data.info.num_classes} classes; big "
                      f"network {format_count(sr.sn.table.big_flops)} FLOPs, {format_count(sr.sn.table.big_params)} "
                      f"params"),
            ("data", _data(cfg, sr.data, "held out for the architecture steps")),
            ("budget", budget_text(sr))]
    if s.budget_latency is not None:
        rows.append(("latency table", latency_text(sr)))
    rows += [("width groups", groups_text(sr.sn.cands)),
             ("epochs", _epochs(cfg, sr.data, sr.steps_per_epoch) + warmup),
             ("run folder", folder_text(cfg, resume, sr, "arch.json"))]
    return Plan(cfg.run_dir, "resume" if resume else "new", rows + _downloads(fetched))


def plan_train(cfg: Config, monitor: Monitor | None = None, *, resume: bool = False, data=None) -> Plan:
    """The plan of ``dan.engine.train(cfg, resume=resume)`` (``tools/train.py`` and
    ``tools/retrain.py``) after all of its checks; see the module docstring."""
    from dan.engine import Trainer

    with kept_rng_state(), owned_monitor(monitor, cfg.run_dir, console=False) as mon, withheld() as fetched:
        tr = checked_start(cfg, resume, lambda: Trainer(cfg, mon, data=data))
    method = tr.method
    rows = [("model", f"{_model(cfg)}, method {cfg.train.method} (deploys its {method.deployed} network), input "
                      f"{_shape(method.input_shape)}, {tr.data.info.num_classes} classes"),
            ("data", _data(cfg, tr.data, "held out for evaluation"))]
    arch = cfg.adjoint.arch or cfg.model.arch
    if arch:
        rows.append(("budget", _arch_budget(arch)))
    start = f"{cfg.train.init_from} (the search's supernet, cut to these widths)" if cfg.train.init_from else "scratch"
    rows.append(("weights from", "the run's checkpoint (resumed)" if resume else start))
    teacher = _teacher(tr)
    if teacher:
        rows.append(("teacher", teacher))
    rows += [("epochs", _epochs(cfg, tr.data, tr.steps_per_epoch)),
             ("run folder", folder_text(cfg, resume, tr, "the deployable network and summary.json"))]
    return Plan(cfg.run_dir, "resume" if resume else "new", rows + _downloads(fetched))


def _downloads(fetched: list) -> list:
    """The plan's row of what the run would download first (the dry run fetched none of it and
    checked a stand-in of the same shapes: :mod:`dan.downloads`)."""
    return [("downloads", "; ".join(fetched) + " (the run fetches them first; this plan checked stand-ins of the "
                          "same shapes)")] if fetched else []


def budget_text(sr) -> str:
    """The search's budget as given, as an absolute count, as a share of the widest small network's
    cost, with the range of the space (what :func:`dan.budget.resolve_budget` found feasible)."""
    b, s = sr.budget, sr.cfg.search
    given = {"flops": s.budget_flops, "params": s.budget_params, "latency": s.budget_latency}[b.kind]
    if b.kind == "latency" and sr.latency is None:
        return (f"{given} (latency): its value in ms and whether it is feasible are known once the latency "
                f"table is measured (the search checks them then, before its first epoch)")
    lo, hi = sr.extremes[b.kind]
    unit = " ms" if b.kind == "latency" else ""
    fmt = (lambda v: f"{v:.3g}") if b.kind == "latency" else format_count
    return (f"{given} = {fmt(b.value)}{unit if unit else ' ' + b.kind}, {100 * b.value / hi:.1f}% of the widest "
            f"small network's {fmt(hi)}{unit} (band ±{100 * b.band:g}%: {fmt(b.lo)} to {fmt(b.hi)}{unit}); "
            f"feasible: {fmt(lo)} to {fmt(hi)}{unit} ({100 * lo / hi:.1f}% to 100% of the widest)")


def latency_text(sr) -> str:
    """Whether a latency budget's table would be measured, or the cached one used (nothing is measured
    here: :func:`dan.latency.cached`)."""
    from dan import latency

    s = sr.cfg.search
    threads = int(s.latency_threads or torch.get_num_threads())  # as dan.latency.build reads it
    path, table = latency.cached(sr.sn, batch=s.latency_batch, threads=threads, runtime=s.latency_runtime)
    if table is None:
        return (f"none cached for this network and device: it would be measured first "
                f"({latency.measurement(sr.sn, threads, s.latency_batch, s.latency_runtime)}; minutes for a large "
                f"network) and kept in {latency.cache_dir()}")
    busy = (table.fit.get("timing_load") or {}).get("busy")
    return f"the cached one would be used: {path}" + (
        " (measured while the machine was busy: measured again if it is quiet when the search starts)" if busy else "")


def groups_text(cands: list) -> str:
    """``12 width groups: 9 with 4 candidates, 3 with 8 (...architectures)``."""
    counts = collections.Counter(len(c) for c in cands)
    parts = ", ".join(f"{n} with {k} candidate{'s' if k != 1 else ''}" for k, n in sorted(counts.items()))
    total = math.prod(len(c) for c in cands)
    return f"{len(cands)}: {parts} ({total:.3g} architectures)"


def folder_text(cfg: Config, resume: bool, task, end: str) -> str:
    """Where the run would write and how it would start there (a refusal is the checks' UserError)."""
    run_dir = cfg.run_dir
    if resume:
        done = " (every epoch is done: it would only redo the end, " + end + ")" if task.epoch >= cfg.train.epochs \
            else ""
        return f"{run_dir}: would resume after epoch {task.epoch} of {cfg.train.epochs} (step {task.step}){done}"
    if os.path.isdir(run_dir):
        return f"{run_dir}: would start anew (the folder is there and holds no run)"
    return f"{run_dir}: would start anew (the folder would be made)"


def _model(cfg: Config) -> str:
    from dan.search import describe_model

    return describe_model(cfg)


def _shape(shape) -> str:
    return "x".join(str(n) for n in tuple(shape)[1:])


def _data(cfg: Config, data, holdout_use: str) -> str:
    """The dataset, where it is read from, and its splits' sizes (before any sharding)."""
    size = lambda loader: getattr(loader, "total", None) or loader.num_samples
    where = f" in {cfg.data.data}" if cfg.data.data else ""
    held = f", {size(data.holdout)} {holdout_use}" if data.holdout is not None else (
        f", {size(data.holdout_eval)} {holdout_use}" if data.holdout_eval is not None else "")
    return (f"{cfg.data.dataset}{where}: {size(data.train)} training images{held}, {size(data.test)} test images"
            f"{'' if held else ' (evaluation)'}")


def _epochs(cfg: Config, data, steps: int) -> str:
    t = cfg.train
    limited = f", at most {t.limit_batches} of its {len(data.train)} batches" if steps < len(data.train) else ""
    return (f"{t.epochs} × {steps} steps per epoch (batch {data.train.batch_size}{limited}): "
            f"{t.epochs * steps} steps")


def _arch_budget(path: str) -> str:
    """A retrain's budget (its arch.json's) beside the found small network's cost."""
    from dan.arch import load_arch

    arch = load_arch(path)
    if "latency" in arch.budget:
        return (f"{arch.budget['latency']:.3g} ms; the search measured {arch.latency.get('measured_ms', math.nan):.3g}"
                f" ms for this network")
    kind = "flops" if "flops" in arch.budget else "params"
    return (f"{format_count(arch.budget[kind])} {kind}; the found small network {format_count(arch.small[kind])} "
            f"{kind} ({100 * arch.small[kind] / arch.budget[kind]:.1f}% of it)")


def _teacher(tr) -> str | None:
    """A method's teacher: given, read from a finished run (checked here: loaded), or trained first."""
    from dan.engine import load_teacher

    request = tr.method.teacher_request()
    if tr.teacher is not None or request is None:
        return "given" if tr.teacher is not None else None
    if request.path:
        load_teacher(request.path, tr.device, num_classes=tr.data.info.num_classes)
        return f"the big network of {request.path}"
    out = os.path.join(tr.cfg.run_dir, "teacher")
    return (f"the base network, trained first the standard way for {request.epochs or tr.cfg.train.epochs} epochs in "
            f"{out}" + (" (finished: reused)" if os.path.isfile(os.path.join(out, "summary.json")) else ""))
