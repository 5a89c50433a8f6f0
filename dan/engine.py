"""The training engine: one loop for every method.

``train(cfg, monitor)`` builds the data and the method's model, trains for ``cfg.train.epochs``
epochs with Adam (or SGD) and a linear-warm-up + cosine learning-rate schedule (the paper's
recipe), evaluates every network of the method on the test split each epoch, writes TensorBoard
scalars, ``metrics.jsonl`` and an atomic ``checkpoints/last.pt`` (+ ``best.pt``), and at the end
saves the deployable network (``small.pt`` …, or ``model.pt`` … when it is the base network), counts and times the networks, and returns a summary.
A method that learns from a teacher asks for one; :func:`resolve_teacher` loads it from a finished
run or trains it first, and the trainer hands it to the method.

Reproducibility: the model is built right after seeding with ``cfg.seed``; every epoch re-seeds
all generators from (seed, epoch) and the data order/augmentation is a function of (seed, epoch),
so a run resumed from ``last.pt`` replays exactly the epochs an uninterrupted run would have run.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from dan import distributed, onnx_export
from dan.checkpoint import (atomic_write, code_version, init_path, load_named, rng_state, save_checkpoint,
                            set_rng_state, start_from, write_json)
from dan.config import Config
from dan.cost import count_layers, format_count
from dan.data import Data, build_data, checkpoint_info, deploy_preprocess
from dan.deploy import deploy_form, layout_for, measure_latency, save_deployable
from dan.errors import UserError
from dan.loop import (RESUMABLE_CHANGES, check_run_dir, check_same_config, optimizer_step,  # noqa: F401
                      prepare_run_dir, read_run_checkpoint, load_states, reconcile_metrics, run_epochs, start,
                      managed_fit, start_and_fit, start_managed, steps_per_epoch)
from dan.layers import channels_last_runs
from dan.methods import TeacherRequest, get_method
from dan.monitor import Monitor, owned_monitor
from dan.seed import seed_everything
from dan.timing import OtherLoad

CHECKPOINT_VERSION = 1


def resolve_device(name: str) -> torch.device:
    local = distributed.info().local_rank
    if name in (None, "", "auto"):
        return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"bad --device '{name}': use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available: use --device cpu")
    return dev


def amp_dtype(mode: str, device: torch.device):
    """The autocast dtype for ``train.amp`` on ``device``: None on the CPU or when off."""
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"train.amp must be auto, bf16, fp16 or off, got {mode!r}")
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def build_optimizer(params, tcfg) -> torch.optim.Optimizer:
    """Adam(W) or SGD; weight decay only on weights with ≥ 2 dims (not on BN/bias)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if tcfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=tcfg.lr)
    if tcfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=tcfg.lr)
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tcfg.lr, momentum=tcfg.momentum, nesterov=tcfg.nesterov)
    raise UserError(f"unknown optimizer '{tcfg.optimizer}': choose adam, adamw or sgd")


def build_scheduler(optimizer, tcfg, steps_per_epoch: int):
    """The paper's schedule over ``tcfg.epochs``: linear warm-up, then cosine decay to ``min_lr``."""
    total = steps_per_epoch * tcfg.epochs
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        total, int(tcfg.warmup_epochs * steps_per_epoch), tcfg.min_lr / tcfg.lr if tcfg.lr else 0.0))


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """lr multiplier: linear from ~0 to 1 over ``warmup_steps``, then cosine down to ``min_ratio``."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


@torch.no_grad()
def evaluate(logits_fn, loader, limit: int | None = None, names: tuple = ()) -> dict:
    """Top-1 and cross-entropy of every network ``logits_fn(x)`` returns, over ``loader`` (summed
    over ranks when distributed: each rank evaluates its share). ``names`` lists the networks
    when a rank may see no batch."""
    correct, ce, n = {k: 0 for k in names}, {k: 0.0 for k in names}, 0
    device = "cpu"
    for i, (x, y) in enumerate(loader):
        if limit is not None and i >= limit:
            break
        for name, logits in logits_fn(x).items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == y).sum())
            ce[name] = ce.get(name, 0.0) + float(F.cross_entropy(logits.float(), y, reduction="sum"))
        n += y.shape[0]
        device = y.device
    keys = sorted(correct)
    sums = distributed.all_reduce_sum([float(n)] + [correct[k] for k in keys] + [ce[k] for k in keys], device)
    n, c, e = sums[0], sums[1:1 + len(keys)], sums[1 + len(keys):]
    return {k: {"top1": c[i] / max(n, 1), "ce": e[i] / max(n, 1), "images": int(n)} for i, k in enumerate(keys)}


@dataclass
class Summary:
    method: str
    run_dir: str
    input_shape: tuple
    rows: dict = field(default_factory=dict)  # network -> top1, flops, params, nonzero, latency_ms
    files: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "run_dir": self.run_dir, "input_shape": list(self.input_shape),
                "networks": self.rows, "files": self.files, **self.extra}


class Trainer:
    """Runs one method's training; see the module docstring."""

    def __init__(self, cfg: Config, monitor: Monitor | None = None, *, data: Data | None = None):
        self.cfg, self.run_dir = cfg, cfg.run_dir
        if cfg.train.init_from and not os.path.isfile(os.path.join(cfg.run_dir, "checkpoints", "last.pt")):
            init_path(cfg.train.init_from)  # read on a fresh start only: checked before any file is written
        self.monitor = monitor or Monitor(self.run_dir, console=False)
        self.device = resolve_device(cfg.device)
        self.dist = distributed.info()
        self.data = data if data is not None else build_data(cfg.data, seed=cfg.seed, device=self.device,
                                                             log=self.monitor.info)
        if self.dist.enabled:
            self.data.shard(self.dist.rank, self.dist.world)
        seed_everything(cfg.seed)
        self.method = get_method(cfg.train.method)(cfg, self.data.info, self.device)
        self.method.build()
        self.model = self.method.model
        # channels-last unless it would meet PyTorch 2.14's oneDNN bug (AVX2-only CPUs; dan.layers)
        self.channels_last = cfg.train.channels_last and channels_last_runs(self.model, self.method.input_shape,
                                                                              self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.method.wrapped = distributed.wrap(self.model, self.device) if self.dist.enabled else None
        t = cfg.train
        self.amp = amp_dtype(t.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        if t.compile and self.device.type == "cuda":
            self.method.wrapped = torch.compile(self.method.fwd)
        self.steps_per_epoch = steps_per_epoch(self.data.train, t.limit_batches)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.optimizer = build_optimizer(self.method.parameters(), t)
        self.method.optimizer = self.optimizer
        self.scheduler = build_scheduler(self.optimizer, t, self.steps_per_epoch)
        if t.eval_split not in ("test", "holdout"):
            raise UserError(f"train.eval_split must be test or holdout, got {t.eval_split!r}")
        if t.eval_split == "holdout" and self.data.holdout_eval is None:
            raise UserError("train.eval_split=holdout needs data.holdout > 0")
        self.eval_loader = self.data.test if t.eval_split == "test" else self.data.holdout_eval
        self.teacher = given_teacher(self.method, self.device, self.data.info.num_classes)
        self.epoch = 0  # next epoch to run
        self.step = 0
        self.best = -1.0
        self.last_eval: dict = {}
        self.last_row: dict | None = None  # the last epoch's metrics row (also in the checkpoint)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    # --- checkpoints -----------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> str:
        return os.path.join(self.run_dir, "checkpoints")

    def state(self) -> dict:
        return {"version": CHECKPOINT_VERSION, "model": self.model.state_dict(),
                "method": self.method.extra_state(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "step": self.step,
                "best": self.best, "last_eval": self.last_eval, "rng": rng_state(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "last_row": self.last_row, "config": self.cfg.to_dict(), "data_info": self.data.record()}

    def _write_checkpoints(self, best: bool = False) -> None:
        if not self.dist.main:
            return
        state = self.state()
        if best:  # before last.pt, which records the best score: a stop between them lost best.pt's epoch
            keep = ("version", "model", "method", "epoch", "best", "config", "data_info")  # no optimizer
            save_checkpoint({k: state[k] for k in keep}, os.path.join(self.ckpt_dir, "best.pt"))
        save_checkpoint(state, os.path.join(self.ckpt_dir, "last.pt"))

    def restore(self, path: str | None = None) -> None:
        path = path or os.path.join(self.ckpt_dir, "last.pt")
        state = read_run_checkpoint(path, self.cfg, self.device, None, self.data, self.monitor.info)
        load_states(path, state, {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler})
        self.method.load_extra_state(state.get("method", {}))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.best = state["epoch"], state["step"], state["best"]
        self.last_eval = state.get("last_eval", {})
        self.last_row = state.get("last_row")
        set_rng_state(state["rng"])

    # --- the loop (dan.loop.run_epochs calls these) ------------------------------------------
    def fit(self) -> Summary:
        if self.cfg.train.init_from and self.step == 0:  # weight inheritance, on a fresh start only:
            start_from(self.model, self.cfg.train.init_from, self.run_dir if self.dist.main else None,
                       {"space": self.cfg.model.space, "num_classes": self.data.info.num_classes,
                        "in_channels": self.data.info.in_channels, "class_names": self.data.class_names})
        request = self.method.teacher_request()
        teacher = self.teacher if self.teacher is not None or request is None else \
            resolve_teacher(request, self.cfg, self.data, self.monitor, self.device)
        self.method.prepare(self.data, self.monitor, teacher)
        run_epochs(self, seed_tag="epoch", desc="epoch")
        return self.finish()

    def begin_epoch(self, epoch: int) -> None:
        self.model.train()

    def train_step(self, x, y) -> dict:
        t = self.cfg.train
        x = self.prepare_input(x)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            loss, scalars = self.method.train_step(x, y, self.step / max(1, self.total_steps))
        optimizer_step(loss, self.optimizer, self.scheduler, self.method.parameters(), t.grad_clip, self.scaler,
                       self.step)
        self.method.after_step(self.step)
        return {f"train/{k}": float(v) for k, v in scalars.items()}

    def log_window(self, logs: dict, images_per_s: float, bar) -> None:
        logs = dict(logs, **{"train/lr": self.optimizer.param_groups[0]["lr"], "train/images_per_s": images_per_s})
        self.monitor.scalars(self.step, logs)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{logs.get('train/loss', float('nan')):.3f}", ips=f"{images_per_s:.0f}")

    def end_epoch(self) -> dict:
        t, row = self.cfg.train, {}
        if self.epoch % t.eval_every == 0 or self.epoch == t.epochs:
            self.model.eval()
            ev = evaluate(lambda x: self.method.eval_logits(self.prepare_input(x)), self.eval_loader,
                          t.limit_batches, self.method.outputs)
            self.last_eval = ev
            for name, m in ev.items():
                row[f"val/top1_{name}"] = m["top1"]
                row[f"val/ce_{name}"] = m["ce"]
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        return row

    def save(self, row: dict) -> None:
        """The checkpoint of the epoch that just ended (``best.pt`` too when it improved)."""
        self.last_row = {"epoch": self.epoch, **row}
        score = deployed_top1(self.last_eval, self.method.deployed)
        improved = score > self.best
        self.best = max(self.best, score)
        self._write_checkpoints(best=improved)

    def after_epoch(self) -> None:
        pass

    def finish(self) -> Summary:
        """Save the deployable network, count and time every network, write ``summary.json``."""
        cfg = self.cfg
        self.model.eval()
        nets = self.method.networks()
        shape = self.method.input_shape
        missing = {n: net.eval() for n, net in nets.items()
                   if n not in self.last_eval or n in self.method.final_eval}
        if missing:  # networks made at the end (a teacher, a truncated network...): evaluate them
            self.last_eval.update(evaluate(lambda x: {n: net(self.prepare_input(x)) for n, net in missing.items()},
                                           self.eval_loader, cfg.train.limit_batches, tuple(missing)))
        summary = Summary(cfg.train.method, self.run_dir, shape)
        if not self.dist.main:  # rank 0 saves, counts and times; the others are done
            distributed.barrier()
            return summary
        deployed = nets[self.method.deployed]
        # named for what it is: ``small.*`` a compressed network, ``model.*`` the base network
        # itself (standard and dropout training deploy the network they trained)
        stem = deploy_name(self.method.deployed)
        meta = save_deployable(deployed, self.run_dir, shape, name=stem,
                               extra={"method": cfg.train.method, "space": cfg.model.space,
                                      "preprocess": deploy_preprocess(self.data.info, cfg.data,
                                                                       self.data.class_names)},
                               memory_format=cfg.train.deploy_memory_format or "channels_last")
        summary.files = {k: os.path.join(self.run_dir, stem + suffix) for k, suffix in
                         [("torchscript", ".pt"), ("export", ".pt2"), ("state_dict", "_state.pt"), ("meta", ".json")]}
        summary.extra["deploy_memory_format"] = meta["memory_format"]  # the layout its files and timing use
        if "onnx" in meta:
            summary.files["onnx"] = os.path.join(self.run_dir, meta["onnx"]["file"])
            summary.extra["onnx"] = meta["onnx"]
        own_threads, ort_threads = timing_threads(cfg)
        run_threads = torch.get_num_threads()
        torch.set_num_threads(own_threads)  # (the run's own again below: its training is over)
        try:
            with OtherLoad() as load:
                summary.rows = measure_networks(nets, self.last_eval, self.method.deployed, cfg, shape,
                                                summary.files.get("onnx"), say=self.monitor.info,
                                                onnx_threads=ort_threads)
        finally:
            torch.set_num_threads(run_threads)
        if "onnx" in summary.files:  # the thread count of the 'ort' rows (format_summary's header)
            summary.extra["onnx_threads"] = ort_threads
        summary.extra["latency_threads"] = own_threads  # the eager rows' (format_summary's header)
        summary.extra["timing_load"] = load.to_dict()
        summary.extra["best_top1"] = self.best
        summary.extra["epochs"], summary.extra["threads"] = self.epoch, torch.get_num_threads()
        summary.extra["code"] = code_version()
        summary.extra.update(self.method.summary_extra())
        atomic_write(lambda p: write_json(summary.to_dict(), p), os.path.join(self.run_dir, "summary.json"))
        self.monitor.flush()
        distributed.barrier()
        return summary


def measure_networks(nets: dict, last_eval: dict, deployed: str, cfg: Config, shape: tuple,
                     onnx_path: str | None, say=None, onnx_threads: int | None = None) -> dict:
    """The summary's row of every network: top-1 and CE of its last evaluation (on ``eval_images``
    images of the ``eval_split``: with ``--limit-batches`` a part of it), its counts, and its
    median ms per batch size of ``train.latency_batches`` (eager, in the layout the deployed files
    store for ``deployed``, channels-last for the others; and in ONNX Runtime when ``onnx_path``,
    the deployed network's file, was written, with ``onnx_threads`` intra-op threads: default the
    process's, as the eager timings). ``say``: where the line announcing the timing goes (a
    ResNet-50's retrain at 224 pixels was silent for 2.5 minutes after its epoch, timing batch 64)."""
    rows = {}
    if say is not None and cfg.train.latency_batches:
        say(f"timing the networks ({', '.join(nets)}) at batch {', '.join(map(str, cfg.train.latency_batches))} "
            f"(train.latency_batches){' and in ONNX Runtime' if onnx_path else ''}")
    for name, net in nets.items():
        c = count_layers(net, shape)
        ev = last_eval.get(name, {})
        row = {"top1": ev.get("top1"), "ce": ev.get("ce"), "eval_split": cfg.train.eval_split,
               "eval_images": ev.get("images"),
               "flops": c.flops, "params": c.params, "nonzero_params": c.nonzero_params, "latency_ms": {}}
        fmt = "channels_last"
        if name == deployed:  # timed in the layout its files store
            fmt = cfg.train.deploy_memory_format or fmt
        fast = deploy_form(net, layout_for(net, shape, fmt))
        for b in cfg.train.latency_batches:
            row["latency_ms"][str(b)] = measure_latency(fast, (int(b),) + tuple(shape[1:]), min_time=0.25)
        if onnx_path:  # every network in ONNX Runtime too (the deployed one: its .onnx file itself)
            row["latency_ms_onnxruntime"] = onnx_latency(fast, onnx_path if name == deployed else None, shape,
                                                         cfg.train.latency_batches, onnx_threads)
        rows[name] = row
    return rows


def onnx_latency(fast: nn.Module, path: str | None, shape: tuple, batches, threads: int | None = None) -> dict:
    """Median ms per batch size in ONNX Runtime of ``path``, or of ``fast`` exported to a
    temporary file when ``path`` is None (not exportable: ``{}``, only the deployed network must be),
    with ``threads`` intra-op threads (default the process's: :func:`dan.onnx_export.session`)."""
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = os.path.join(tmp, "net.onnx")
            try:
                onnx_export.export(fast, path, shape)
            except Exception:  # not exportable (only the deployed network must be): not timed
                return {}
        sess = onnx_export.session(path, threads)
        return {str(b): onnx_export.latency(None, (int(b),) + tuple(shape[1:]), sess=sess, min_time=0.25)
                for b in batches}


def train(cfg: Config, monitor: Monitor | None = None, *, resume: bool = False,
          data: Data | None = None) -> Summary:
    """Train ``cfg.train.method`` on ``cfg`` in ``cfg.run_dir``; see :class:`Trainer`.

    Every check (folder, config, data, resume compatibility) runs before the first file is
    written, so a refused run leaves nothing behind."""
    with owned_monitor(monitor, cfg.run_dir, console=False) as mon:  # one it makes is closed when the run ends
        return start_and_fit(cfg, resume, lambda: Trainer(cfg, mon, data=data))


def deployed_top1(last_eval: dict, deployed: str) -> float:
    """The top-1 ``best.pt`` follows: the deployed network's, or for a deployable made only at the
    end (lowrank's truncation) the network it comes from, the first evaluated (lowrank wrote no
    ``best.pt`` and a best top-1 of -1); -1 before any evaluation."""
    return last_eval.get(deployed, next(iter(last_eval.values()), {})).get("top1", -1.0)


def given_teacher(method, device: torch.device, num_classes: int) -> nn.Module | None:
    """The finished run ``method`` names to teach with (``methods.kd.teacher``), loaded while the
    run is set up, before its first file: a wrong one is refused with nothing written. None when it
    names none (the teacher is then trained in the run's folder: :func:`resolve_teacher`)."""
    request = method.teacher_request()
    return load_teacher(request.path, device, num_classes) if request is not None and request.path else None


def load_teacher(path: str, device: torch.device, num_classes: int | None = None) -> nn.Module:
    """The big network of a finished run, frozen and in eval mode, to teach with.

    Args:
        path: the run folder (its ``checkpoints/last.pt`` is read) or a checkpoint file.
        device: where the network goes.
        num_classes: when given, the classes the student's data has; a teacher with another
            number is a :class:`UserError`.
    """
    fix = "methods.kd.teacher takes a finished training run's folder or its checkpoints/last.pt"
    ckpt, state = load_named(path, "teacher", fix, map_location=device)
    if state.get("kind") == "search":  # a supernet: its small path holds every candidate width
        raise UserError(f"teacher {path} is a search's supernet: {fix} (a retrain of it, or train.py's)")
    tcfg = Config.from_dict(state["config"])
    info = checkpoint_info(state, tcfg.data)
    if num_classes is not None and info.num_classes != num_classes:
        raise UserError(f"teacher {path} has {info.num_classes} classes, the data {num_classes}")
    m = get_method(tcfg.train.method)(tcfg, info, device)
    m.build()
    try:
        m.model.load_state_dict(state["model"])
    except RuntimeError as e:  # another network's weights under this config
        raise UserError(f"teacher {ckpt} does not load into the network its config builds "
                        f"({str(e).splitlines()[0][:120]}): {fix}") from None
    m.load_extra_state(state.get("method", {}))
    nets = m.networks()
    if nets.get("big") is None:  # a kd run's own "big" is its teacher, not kept in its checkpoint
        raise UserError(f"{ckpt} holds no big network to teach with (method {tcfg.train.method}): {fix}")
    teacher = nets["big"].to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def resolve_teacher(request: TeacherRequest, cfg: Config, data: Data, monitor: Monitor,
                    device: torch.device) -> nn.Module:
    """The teacher a method asked for, frozen: the big network of the finished run at
    ``request.path``, or else the base network trained the standard way for ``request.epochs``
    (default ``cfg.train.epochs``) on the same data in ``<run>/teacher`` — reused when that run
    finished, resumed when it was killed."""
    if request.path:
        return load_teacher(request.path, device, num_classes=data.info.num_classes)
    tcfg = copy.deepcopy(cfg)
    tcfg.train.method = "standard"
    tcfg.model.arch = None
    tcfg.train.epochs = request.epochs or cfg.train.epochs
    tcfg.out = os.path.join(cfg.run_dir, "teacher")
    tcfg.methods = {}
    if not os.path.isfile(os.path.join(tcfg.out, "summary.json")):
        with owned_monitor(None, tcfg.out, console=monitor.console, tensorboard=monitor.tensorboard) as mon:
            managed_fit(tcfg, lambda: Trainer(tcfg, mon, data=data), cfg.run_dir)  # (its writer was left open too)
    return load_teacher(tcfg.out, device)


def timing_threads(cfg: Config) -> tuple[int, int]:
    """The intra-op threads of the summary's eager rows and of its ONNX Runtime ('ort') rows: those of
    the latency budget the run's network was searched under, for the rows of the runtime it was
    measured in, else the run's own (``--threads``). An audit read 'ort' rows timed at --threads 2 just
    above the retrain's "budget: ... 1 thread(s), onnxruntime" line: a reader compares the two lines
    to see whether the deployed file meets its budget, and only a timing at the budget's thread count
    answers that (the header names the thread counts of both kinds of rows)."""
    own = torch.get_num_threads()
    path = cfg.adjoint.arch or cfg.model.arch
    if path and os.path.isfile(path):  # the arch.json the run's network was built from
        from dan.arch import load_arch

        found = load_arch(path)
        dev = (found.latency or {}).get("device") or {}
        if "latency" in found.budget and isinstance(dev.get("threads"), int):
            if dev.get("runtime") == "torch":
                return dev["threads"], own
            if dev.get("runtime") == "onnxruntime":
                return own, dev["threads"]
    return own, own


def deploy_name(deployed: str) -> str:
    """The file stem of a run's deployable network: ``model`` when it is the base network
    (``deployed == "big"``), else ``small``."""
    return "model" if deployed == "big" else "small"


def format_summary(summary: Summary | dict) -> str:
    """The end-of-run table: accuracy, FLOPs, params and latency of every network."""
    d = summary.to_dict() if isinstance(summary, Summary) else summary
    nets = d["networks"]
    batches = sorted({b for r in nets.values() for b in r["latency_ms"]}, key=int)
    head = f"{'network':10s} {'top-1':>7s} {'FLOPs':>9s} {'params':>9s} {'nonzero':>9s}" + \
        "".join(f" {'ms@b' + b:>9s}" for b in batches)
    # the eager rows' (a summary.json of before 'latency_threads': the run's, and of before 'onnx_threads':
    # the 'ort' rows' too)
    threads = d.get("latency_threads", d.get("threads"))
    ort_threads = d.get("onnx_threads", threads)
    lines = [f"{d['method']} — input {'x'.join(map(str, d['input_shape']))}; FLOPs = multiply-accumulates; "
             "latency = median ms per forward" + (f" at {threads} thread(s)" if threads else "")
             + ", eval, BN folded, "
             + ("channels-last" if d.get("deploy_memory_format", "channels_last") == "channels_last" else
                f"the deployed network {d['deploy_memory_format']} (as its files), the others channels-last")
             + (f"; 'ort' = ONNX Runtime on the .onnx file" + (f" at {ort_threads} thread(s)" if ort_threads else "")
                if any(r.get("latency_ms_onnxruntime") for r in nets.values())
                else ""),
             head, "-" * len(head)]
    for name, r in nets.items():
        top1 = f"{100 * r['top1']:6.2f}%" if r["top1"] is not None else "     - "
        lines.append(f"{name:10s} {top1:>7s} {format_count(r['flops']):>9s} {format_count(r['params']):>9s} "
                     f"{format_count(r['nonzero_params']):>9s}" +
                     "".join(f" {r['latency_ms'].get(b, float('nan')):9.2f}" for b in batches))
        if r.get("latency_ms_onnxruntime"):  # the same network, from small.onnx in ONNX Runtime
            ort = r["latency_ms_onnxruntime"]
            lines.append(f"{name + ' ort':10s} {'':>7s} {'':>9s} {'':>9s} {'':>9s}" +
                         "".join(f" {ort.get(b, float('nan')):9.2f}" for b in batches))
    if "big" in nets and len(nets) > 1:
        for name, r in nets.items():
            if name == "big":
                continue
            b = nets["big"]
            ratio = lambda k: b[k] / r[k] if r[k] else float("nan")
            speed = "".join(f" {b['latency_ms'][k] / r['latency_ms'][k]:8.2f}x" for k in batches
                            if k in r["latency_ms"] and r["latency_ms"][k] > 0)
            lines.append(f"{'big/' + name:10s} {'':>7s} {ratio('flops'):8.2f}x {ratio('params'):8.2f}x "
                         f"{b['params'] / r['nonzero_params'] if r['nonzero_params'] else float('nan'):8.2f}x"
                         + speed)
            bo, ro = b.get("latency_ms_onnxruntime") or {}, r.get("latency_ms_onnxruntime") or {}
            if bo and ro:
                lines.append(f"{'  ort':10s} {'':>7s} {'':>9s} {'':>9s} {'':>9s}" +
                             "".join(f" {bo[k] / ro[k]:8.2f}x" for k in batches if k in bo and ro.get(k)))
    load = d.get("timing_load") or {}
    if load.get("busy"):  # the numbers stand as measured; the reader is told what they are worth
        lines.append(f"note: other processes used {load['other_processes_cores']:.1f} of the {load['cpus']} CPUs "
                     f"while these were timed ({load['threads']} thread(s) here): the latencies are unreliable; "
                     "time the deployed file on an idle machine (tools/latency.py --arch"
                     # an audit was told "or --threads 1" by a run given --threads 1: not what is already set
                     + (", or --threads 1)" if load.get("threads") != 1 else ")"))
    return "\n".join(lines)
