"""DAN search: widths of the small network under a FLOPs or params budget.

``search(cfg, monitor)`` runs, per epoch, alternating steps on two disjoint parts of the
*training* data (the test split is never seen):

1. **Weight step** (training split): every group's width is drawn uniformly from its candidates
   (SPOS; ``weight_sampling: distribution`` draws it from the architecture distribution instead,
   which biases the supernet towards the architecture the search already prefers), the small
   path runs on tensors sliced to it, and the weights take a step on the adjoint loss
   ``CE(y, p) + λ(t)·KL(p‖q)``.
2. **Architecture step** (held-out split, after ``warmup_epochs`` of weight-only training): the big
   network's p is computed without gradients, the small path runs with soft Gumbel channel masks
   at temperature τ, and the logits θ take an Adam step on ``CE(y, q) + c·KL(p‖q) + μ·E[cost]/B``
   (``arch_objective: kl`` drops the CE). Only θ gets gradients (``torch.autograd.grad``): no
   weight gradients are computed. τ falls exponentially, step by step, from ``tau0`` to
   ``tau_min`` over the architecture phase, so the distributions can commit to one width.

**Budget.** μ is a Lagrange multiplier, not a hand-set coefficient: after each architecture step
it moves by ``multiplier_lr · (E[cost]/B − (1 − band/2))`` per epoch, two-sided, so the expected
cost settles in the middle of ``[B·(1−band), B]`` (``multiplier_p > 0`` adds a proportional term,
``w = μ + p·(E[cost]/B − target)``: it tracks the target faster but keeps the distributions mixed); as the distributions sharpen the argmax
network's cost joins it, from below (``budget_control: blend`` watches E[cost] blended into the
argmax network's cost by the mean largest probability, driven to B; ``budget_control: argmax``
watches the argmax network alone, with a dead band: the first design, which oscillated). Costs are normalized by the budget, so the same
settings serve every search space and budget.

**Settle phase.** Over the last ``settle`` fraction of the architecture steps (0.5 by default) τ
stays at ``tau_min`` and the multiplier watches the argmax network's cost, with the band as a dead
band, in steps proportional to ``max(|μ|, 0.25)``: once the distributions have committed E[cost] no
longer tells where the argmax network is, and a committed group flips only for a large change of
μ (below the band, only for μ < 0). Such steps overshoot (a 10 % run went 0.81 → 1.07 B within 40
steps, a 25 % one was at 1.01 B twenty steps before it ended at 0.84 B), so the first time the
argmax network is inside the band the architecture steps stop for good (the weights go on): the
search ends on the committed architecture that met its budget, not wherever the last flip left it.
At 10 % one channel of the first stage is 8 % of the budget, more than the band is wide, so the
argmax can jump over it; each jump halves the multiplier's steps, so it comes back more slowly and
crosses again closer to the edge (a bisection on μ). At the end the argmax architecture is repaired into
``[B·(1−band), B·(1+band)]`` by moving the fewest groups (:func:`dan.supernet.repair`; a safety
net: ``arch.json`` records the argmax cost before repair and the groups it moved), and
``arch.json`` is written with the final distributions, their entropy and largest probability.

**Determinism and resume.** Every epoch re-seeds all generators from (seed, epoch) and the data
order is a function of (seed, epoch); a checkpoint after each epoch holds weights, optimizers,
θ, μ and the width history, so a search killed at any point and resumed writes the same
``arch.json`` as an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from dan import distributed, models
from dan.arch import Arch
from dan.budget import Budget, resolve_budget  # noqa: F401 (re-exported: dan.search.Budget)
from dan.cost import format_count
from dan.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dan.config import Config
from dan.data import build_data, dataset_info
from dan.engine import amp_dtype, build_optimizer, build_scheduler, evaluate, resolve_device
from dan.loop import check_same_config, optimizer_step, reconcile_metrics, run_epochs, start
from dan.errors import UserError
from dan.layers import AdjointBatchNorm2d
from dan.loss import adjoint_loss, kl_divergence, schedule
from dan.models import input_shape
from dan.monitor import Monitor
from dan.seed import seed_everything
from dan.supernet import build_supernet, repair

CHECKPOINT_VERSION = 1
# A third of the training images drive the architecture: architecture batches are half the size
# of weight batches, so both parts are used up at the same pace (DARTS splits 50/50 with equal
# batches).
DEFAULT_HOLDOUT = 1 / 3


_CHOICES = {"tau_anneal": ("step", "epoch"), "arch_objective": ("ce+kl", "kl"),
            "budget_control": ("expected", "blend", "argmax"), "arch_lambda": ("full", "schedule"),
            "weight_sampling": ("distribution", "uniform"),
            "latency_runtime": ("torch", "onnxruntime")}


# The settle phase's multiplier steps are in proportion to max(|mu|, this): near mu = 0 a purely
# relative step crawls, and an argmax committed below the band needs mu < 0 (a reward for cost)
# to widen a group (with a floor of 0.05, seed 0 at 10 % ended at mu 0.02 and 0.93 B).
SETTLE_MU_FLOOR = 0.25


def check_search_config(s) -> None:
    """The search section's choices and ranges, checked before any data is loaded."""
    for key, allowed in _CHOICES.items():
        if getattr(s, key) not in allowed:
            raise UserError(f"search.{key} must be one of {', '.join(allowed)}, got {getattr(s, key)!r}")
    if not (math.isfinite(s.multiplier_p) and s.multiplier_p >= 0):
        raise UserError(f"search.multiplier_p must be >= 0, got {s.multiplier_p!r}")
    for key in ("tau0", "tau_min", "arch_lr", "multiplier_lr", "multiplier_max", "settle_gain"):
        v = getattr(s, key)
        if not (math.isfinite(v) and v > 0):
            raise UserError(f"search.{key} must be a positive finite number, got {v!r}")
    if not (math.isfinite(s.settle) and 0 <= s.settle < 1):
        raise UserError(f"search.settle must be in [0, 1), got {s.settle!r}")
    if not (math.isfinite(s.warmup_epochs) and s.warmup_epochs >= 0):
        raise UserError(f"search.warmup_epochs must be >= 0, got {s.warmup_epochs!r}")


class Searcher:
    def __init__(self, cfg: Config, monitor: Monitor | None = None, *, data=None, model=None):
        self.cfg, s = cfg, cfg.search
        check_search_config(s)
        self.run_dir = cfg.run_dir
        self.monitor = monitor or Monitor(self.run_dir)
        self.device = resolve_device(cfg.device)
        models.kind(cfg.model.space)  # a name it can build, checked before any data is loaded
        _search_data_defaults(cfg)
        # the network and the budget are checked before any image is loaded
        info = data.info if data is not None else dataset_info(cfg.data)
        self.input_shape = input_shape(info)
        seed_everything(cfg.seed)
        self.sn = build_supernet(cfg, info, model=model)
        extremes = self.sn.extremes()
        self.latency = None
        if s.budget_latency is not None:  # this device's latency model (cached; built once here)
            if s.latency_batch < 1 or (s.latency_threads is not None and s.latency_threads < 1):
                raise UserError("search.latency_batch and search.latency_threads must be >= 1")
            resolve_budget(s, {**extremes, "latency": (0.0, math.inf)})  # the text, before measuring
            from dan import latency

            self.latency = latency.build(self.sn, batch=s.latency_batch, threads=s.latency_threads,
                                         runtime=s.latency_runtime, progress=self.monitor.console)
            extremes["latency"] = tuple(self.latency.predict(self.sn.widths_of(c)) for c in
                                        ([0] * len(self.sn.cands), [len(c) - 1 for c in self.sn.cands]))
        self.budget = resolve_budget(s, extremes, describe_model(cfg))
        self.data = data if data is not None else build_data(cfg.data, seed=cfg.seed, device=self.device)
        self.dist = distributed.info()
        if self.dist.enabled:
            self.data.shard(self.dist.rank, self.dist.world)
        self.anet = self.sn.anet.to(self.device)
        self.sn.arch.to(self.device)
        self.cl = cfg.train.channels_last
        if self.cl:
            self.anet.to(memory_format=torch.channels_last)
        self.train_anet = distributed.wrap(self.anet, self.device)  # DDP when distributed
        self.amp = amp_dtype(cfg.train.amp, self.device)  # CUDA only: bf16 autocast for both steps
        if self.amp == torch.float16:
            self.amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else None  # no scaler in search
        t = cfg.train
        self.steps_per_epoch = len(self.data.train) if t.limit_batches is None else \
            min(len(self.data.train), t.limit_batches)
        if self.steps_per_epoch == 0:
            raise UserError("the training split has no batch: lower --batch-size or use more data")
        self.total_steps = self.steps_per_epoch * t.epochs
        self.w_opt = build_optimizer(self.anet.parameters(), t)
        self.sched = build_scheduler(self.w_opt, t, self.steps_per_epoch)
        self.a_opt = torch.optim.Adam(self.sn.arch.parameters(), lr=s.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=s.arch_weight_decay)
        self.lam = schedule(cfg.adjoint.schedule, cfg.adjoint.c)
        self.mu = 0.0
        self.settled_at: int | None = None  # the settle-phase step at which the argmax landed
        self.settle_side = 0  # the side of the band the argmax was last on in the settle phase (-1, +1)
        self.settle_scale = 1.0  # halved each time the argmax jumps across the band
        self.epoch = 0
        self.step = 0
        self.history: list[list[int]] = []  # argmax widths per epoch
        self.last_eval: dict = {}
        self.last_row: dict | None = None
        self._tau = self.tau(0)

    # --- helpers -----------------------------------------------------------------------------
    @property
    def model(self):
        """The supernet's weights (what the loop checks before a checkpoint)."""
        return self.anet

    def prep(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.cl and x.ndim == 4 else x

    def tau(self, epoch: int, step: int | None = None) -> float:
        """Temperature of the architecture step ``step`` (global) in ``epoch``."""
        s = self.cfg.search
        if s.tau_anneal == "epoch":
            k = max(0, epoch - math.ceil(s.warmup_epochs))
            return max(s.tau_min, s.tau0 * s.tau_decay ** k)
        first, span = self._arch_phase()
        if step is None:
            step = max(first, epoch * self.steps_per_epoch)
        frac = min(1.0, max(0.0, (step - first) / max(1.0, span * (1.0 - s.settle))))  # settle holds tau_min
        return s.tau0 * (min(s.tau_min, s.tau0) / s.tau0) ** frac

    def _arch_phase(self) -> tuple[int, int]:
        """(first architecture step, steps from it to the last one)."""
        first = math.ceil(self.cfg.search.warmup_epochs) * self.steps_per_epoch
        return first, self.total_steps - first - 1

    def settling(self, step: int) -> bool:
        """Whether architecture step ``step`` (global) is in the final settle phase."""
        s = self.cfg.search
        if s.settle <= 0 or s.tau_anneal != "step":
            return False
        first, span = self._arch_phase()
        return step >= first + span * (1.0 - s.settle)

    def arch_active(self, epoch: int) -> bool:
        return epoch >= math.ceil(self.cfg.search.warmup_epochs)

    def cost_target(self) -> float:
        """Where the multiplier drives the watched cost, over the budget: the middle of
        [1 − band, 1] for the expected cost, the budget itself for the blend."""
        s = self.cfg.search
        return 1.0 if s.budget_control == "blend" else 1.0 - s.band / 2

    def norm_cost(self, flops, params):
        return (flops if self.budget.kind == "flops" else params) / self.budget.value

    def expected_norm(self):
        """The expected cost of the budget's kind over the budget (differentiable in the logits)."""
        if self.budget.kind == "latency":
            probs = [p.double() for p in self.sn.arch.probs()]
            cands = [c.to(p.device) for c, p in zip(self.sn.cand_tensors, probs)]
            return self.latency.expected(probs, cands) / self.budget.value
        return self.norm_cost(*self.sn.expected_cost())

    def choice_cost(self, choice) -> float:
        """The cost of one architecture in the budget's unit (a count, or predicted ms)."""
        if self.budget.kind == "latency":
            return self.latency.predict(self.sn.widths_of(choice))
        flops, params = self.sn.cost_of(choice)
        return flops if self.budget.kind == "flops" else params

    def choice_norm(self, choice) -> float:
        return self.choice_cost(choice) / self.budget.value

    # --- one step of each kind ----------------------------------------------------------------
    def weight_step(self, x, y, progress: float) -> dict:
        # the same draw on every rank (same seeds)
        self.sn.set_widths(self.sn.sample_hard(uniform=self.cfg.search.weight_sampling == "uniform"))
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            big, small = self.train_anet(x)
        lam = self.lam(progress)
        loss, ce, kl = adjoint_loss(big, small, y, lam, detach_teacher=self.cfg.adjoint.detach_teacher,
                                    label_smoothing=self.cfg.train.label_smoothing, return_terms=True)
        optimizer_step(loss, self.w_opt, self.sched, self.anet.parameters(), self.cfg.train.grad_clip, step=self.step)
        return {"loss": loss.item(), "ce": float(ce), "kl": float(kl), "lambda": lam}

    def arch_step(self, x, y, progress: float, tau: float) -> dict:
        s = self.cfg.search
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            with torch.no_grad():
                p = self.anet.big(x)
            self.sn.set_soft(tau, s.arch_samples)
            q = self.anet.small(x)
        kl = kl_divergence(p, q)
        ce = F.cross_entropy(q.float(), y) if s.arch_objective == "ce+kl" else torch.zeros(())
        lam = self.cfg.adjoint.c if s.arch_lambda == "full" else self.lam(progress)
        e_norm = self.expected_norm()
        settling = self.settling(self.step)
        control = "argmax" if settling else s.budget_control
        weight = self.mu
        if control != "argmax":  # PI control: the proportional part reacts at once
            weight = self.mu + s.multiplier_p * (float(e_norm.detach()) - self.cost_target())
        loss = ce + lam * kl + weight * e_norm.float()
        params = list(self.sn.arch.parameters())
        grads = torch.autograd.grad(loss, params)
        for prm, g in zip(params, grads):
            prm.grad = g
        distributed.average_gradients(params)  # the same logits on every rank
        self.a_opt.step()
        self.a_opt.zero_grad(set_to_none=True)
        self.sn.clear_masks()
        if control in ("expected", "blend"):
            # dual ascent on the expected cost towards the middle of [B(1-band), B]; or ("blend")
            # on the expected cost blended into the argmax network's as the distributions commit,
            # towards B: the argmax ends below E[cost] (the leftover mass sits on wider
            # candidates), so the blend's balance puts it a little under B, inside the band
            with torch.no_grad():
                watched = float(self.expected_norm())
                if s.budget_control == "blend":
                    w = float(torch.stack([p.max() for p in self.sn.arch.probs()]).mean())
                    watched = (1 - w) * watched + w * self.choice_norm(self.sn.arch.argmax())
            self.mu += s.multiplier_lr / self.steps_per_epoch * (watched - self.cost_target())
        else:
            # dual ascent on the argmax architecture's cost, with a dead band: [B(1-band), B] for
            # the whole search (the first design), the band itself in the settle phase
            viol = self.choice_norm(self.sn.arch.argmax()) - 1.0
            if not settling:  # the first design: dead band [B(1-band), B]
                if viol > 0 or viol < -s.band:
                    self.mu += s.multiplier_lr / self.steps_per_epoch * viol
            elif abs(viol) > s.band:  # settling: the band, steps in proportion to mu
                side = 1 if viol > 0 else -1
                if self.settle_side and side != self.settle_side:
                    self.settle_scale /= 2  # jumped over the band: come back more slowly (bisection)
                self.settle_side = side
                n = max(1.0, (self._arch_phase()[1] + 1) * s.settle)
                self.mu += self.settle_scale * s.settle_gain * viol * max(abs(self.mu), SETTLE_MU_FLOOR) / n
            else:
                self.settled_at = self.step  # landed: no more architecture steps
        self.mu = max(-s.multiplier_max, min(s.multiplier_max, self.mu))
        with torch.no_grad():
            e_flops, e_params = self.sn.expected_cost()
        return {"kl": kl.item(), "ce": float(ce.detach()), "penalty": float(weight * e_norm.detach()),
                "multiplier": self.mu, "penalty_weight": weight,
                "expected_flops": float(e_flops), "expected_params": float(e_params)}

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def recalibrate(self, choice, batches: int) -> None:
        """Re-estimate the small BN statistics for one architecture (widths shared in search
        leave them a mix of many architectures)."""
        self.sn.set_widths(choice)
        bns = [m for m in self.anet.modules() if isinstance(m, AdjointBatchNorm2d)]
        saved = [m.small.momentum for m in bns]
        for m in bns:
            m.small.reset_running_stats()
            m.small.momentum = None  # cumulative average
        self.anet.train()
        self.data.train.set_epoch(self.epoch)
        for i, (x, _) in enumerate(self.data.train):
            if i >= batches:
                break
            self.anet.small(self.prep(x))
        for m, mom in zip(bns, saved):
            m.small.momentum = mom

    def evaluate(self, choice, recal_batches: int | None = None, eval_batches: int | None = None,
                 nets: tuple = ("big", "small")) -> dict:
        """Held-out top-1 and CE of ``nets`` with the small path at ``choice`` (its BatchNorm
        statistics re-estimated first); defaults: the config's recalibration and batch limits."""
        s, t = self.cfg.search, self.cfg.train
        self.recalibrate(choice, s.bn_recalibrate_batches if recal_batches is None else recal_batches)
        self.anet.eval()
        self.sn.set_widths(choice)
        if nets == ("big", "small"):
            fn = lambda x: dict(zip(("big", "small"), self.anet(self.prep(x))))
        else:
            fn = lambda x: {n: getattr(self.anet, n)(self.prep(x)) for n in nets}
        ev = evaluate(fn, self.data.holdout_eval, t.limit_batches if eval_batches is None else eval_batches, nets)
        self.anet.train()
        return ev

    # --- the loop ----------------------------------------------------------------------------
    def fit(self) -> Arch:
        run_epochs(self, seed_tag="search-epoch", desc="search")
        return self.finish()

    # dan.loop.run_epochs calls these
    def begin_epoch(self, epoch: int) -> None:
        self._holdout = self._holdout_batches(epoch)
        self._active = self.arch_active(epoch)
        self._tau = self.tau(epoch, self.step)
        self.anet.train()

    def train_step(self, x, y) -> dict:
        progress = self.step / max(1, self.total_steps)
        logs = {f"weights/{k}": v for k, v in self.weight_step(self.prep(x), y, progress).items()}
        if self._active and self.settled_at is None:
            xh, yh = next(self._holdout)
            self._tau = self.tau(self.epoch, self.step)
            logs.update({f"arch/{k}": v for k, v in self.arch_step(self.prep(xh), yh, progress, self._tau).items()})
        return logs

    def log_window(self, logs: dict, images_per_s: float, bar) -> None:
        self._log_step(logs, self._tau, images_per_s)

    def end_epoch(self) -> dict:
        choice = self.sn.arch.argmax()
        self.history.append(self.sn.widths_of(choice))
        self.last_eval = self.evaluate(choice)
        flops, params = self.sn.cost_of(choice)
        stats = distribution_stats(self.sn.arch.probs())
        with torch.no_grad():
            ef, ep = self.sn.expected_cost()
        return {"val/top1_big": self.last_eval["big"]["top1"],
                "val/top1_small_argmax": self.last_eval["small"]["top1"],
                "cost/argmax_flops": flops, "cost/argmax_params": params,
                "cost/argmax_over_budget": self.choice_norm(choice),
                "cost/expected_over_budget": float(self.expected_norm().detach()),
                "cost/budget": self.budget.value, "tau": self._tau, "multiplier": self.mu,
                "arch/mean_max_prob": stats["mean_max_prob"], "arch/mean_entropy": stats["mean_entropy"],
                "arch/settled": float(self.settled_at is not None)}

    def after_epoch(self) -> None:
        self._log_epoch()

    def _holdout_batches(self, epoch: int):
        """Held-out batches for the architecture steps, cycling (with new orders) if needed."""
        loader, k = self.data.holdout, 0
        while True:
            loader.set_epoch(epoch + 100_003 * k)
            for batch in loader:
                yield batch
            k += 1

    def _log_step(self, logs: dict, tau: float, ips: float) -> None:
        mon = self.monitor
        mon.scalars(self.step, logs)
        mon.scalars(self.step, {"search/tau": tau, "search/lr": self.w_opt.param_groups[0]["lr"],
                                "search/images_per_s": ips, "arch/multiplier": self.mu})
        flops, params = self.sn.cost_of(self.sn.arch.argmax())
        with torch.no_grad():
            ef, ep = self.sn.expected_cost()
        b = self.budget
        mon.scalars(self.step, {"cost/argmax_flops": flops, "cost/argmax_params": params,
                                "cost/expected_flops": float(ef), "cost/expected_params": float(ep),
                                f"cost/budget_{b.kind}": b.value,
                                f"cost/argmax_{b.kind}_over_budget": self.choice_norm(self.sn.arch.argmax())})
        if b.kind == "latency":
            with torch.no_grad():
                mon.scalars(self.step, {"cost/argmax_latency_ms": self.choice_cost(self.sn.arch.argmax()),
                                        "cost/expected_latency_ms": float(self.expected_norm()) * b.value})

    def _log_epoch(self) -> None:
        mon = self.monitor
        stats = distribution_stats(self.sn.arch.probs())
        mon.scalars(self.step, {f"entropy/{g.name}": e for g, e in zip(self.sn.groups, stats["entropy"])})
        mon.scalars(self.step, {f"max_prob/{g.name}": m for g, m in zip(self.sn.groups, stats["max_prob"])})
        for g, c, p in zip(self.sn.groups, self.sn.cands, self.sn.arch.probs()):
            counts = np.maximum(0, np.round(p.detach().cpu().numpy() * 1000)).astype(int)
            mon.histogram(f"widths/{g.name}", np.repeat(np.array(c, dtype=np.float64), counts), self.epoch)
        mon.image("widths/argmax_by_epoch", width_image(self.history, self.sn), self.epoch)

    # --- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {"version": CHECKPOINT_VERSION, "kind": "search", "model": self.anet.state_dict(),
                "arch": self.sn.arch.state_dict(), "optimizer": self.w_opt.state_dict(),
                "arch_optimizer": self.a_opt.state_dict(), "scheduler": self.sched.state_dict(),
                "multiplier": self.mu, "tau": self.tau(self.epoch), "epoch": self.epoch, "step": self.step,
                "settled_at": self.settled_at, "settle_side": self.settle_side, "settle_scale": self.settle_scale,
                "history": self.history, "last_eval": self.last_eval, "rng": rng_state(),
                "last_row": self.last_row, "config": self.cfg.to_dict()}

    def save(self, row: dict | None = None) -> None:
        """The checkpoint of the epoch that just ended, holding its metrics row."""
        if row is not None:
            self.last_row = {"epoch": self.epoch, **row}
        if self.dist.main:
            save_checkpoint(self.state(), os.path.join(self.run_dir, "checkpoints", "last.pt"))

    def restore(self) -> None:
        path = os.path.join(self.run_dir, "checkpoints", "last.pt")
        st = load_checkpoint(path, map_location=self.device)
        if st.get("kind") != "search":
            raise UserError(f"{path} is not a search checkpoint: resume it with the tool that wrote it")
        check_same_config(st["config"], self.cfg.to_dict(), path)
        self.anet.load_state_dict(st["model"])
        self.sn.arch.load_state_dict(st["arch"])
        self.w_opt.load_state_dict(st["optimizer"])
        self.a_opt.load_state_dict(st["arch_optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.mu, self.epoch, self.step = st["multiplier"], st["epoch"], st["step"]
        self.settled_at = st.get("settled_at")
        self.settle_side, self.settle_scale = st.get("settle_side", 0), st.get("settle_scale", 1.0)
        self.history = [list(h) for h in st["history"]]
        self.last_eval = st["last_eval"]
        self.last_row = st.get("last_row")
        set_rng_state(st["rng"])
        if self.dist.main:
            reconcile_metrics(self.run_dir, self.epoch, self.last_row)

    # --- the end ------------------------------------------------------------------------------
    def measured_latency(self, choice) -> dict:
        """The found network's latency, predicted and measured on this device (interleaved with the
        widest small network, so that a relative budget compares times taken together)."""
        from dan import latency

        b, lat = self.budget, self.latency
        widest = [len(c) - 1 for c in self.sn.cands]
        before = torch.get_num_threads()
        torch.set_num_threads(int(lat.device["threads"]))
        try:
            (found, top), level = latency.measure_networks(self.sn, [choice, widest], lat.device["batch"],
                                                           runtime=lat.device["runtime"], threads=lat.device["threads"],
                                                           **latency.FINAL)
        finally:
            torch.set_num_threads(before)
        # a relative budget is a fraction of the widest network measured alongside; an absolute
        # one is compared at the machine speed of the tables (a reference network scales it)
        measured = found / top * lat.predict(self.sn.widths_of(widest)) if b.relative else lat.at_reference(found, level)
        return {"budget_ms": b.value, "relative": b.relative, "band": b.band,
                "predicted_ms": lat.predict(self.sn.widths_of(choice)), "measured_ms": measured,
                "measured_raw_ms": found, "measured_widest_ms": top,
                "measured_over_budget": measured / b.value, "in_band": bool(b.lo <= measured <= b.hi),
                "device": lat.device}

    def finish(self) -> Arch:
        b = self.budget
        probs = [p.detach().cpu() for p in self.sn.arch.probs()]
        logp = [torch.log(p.double() + 1e-12).tolist() for p in probs]
        start = self.sn.arch.argmax()
        choice = repair(start, self.sn.cands, logp, self.choice_cost, b.lo, b.hi)
        a_flops, a_params = self.sn.cost_of(start)
        a_cost = self.choice_cost(start)
        stats = distribution_stats(probs)
        search_stats = {
            "method": "dan",
            "argmax_before_repair": {"flops": a_flops, "params": a_params,
                                     "over_budget": round(a_cost / b.value, 6),
                                     "in_band": bool(b.lo <= a_cost <= b.hi)},
            "mean_max_prob": round(stats["mean_max_prob"], 6),
            "mean_entropy": round(stats["mean_entropy"], 6),
            "max_prob": {g.name: round(v, 6) for g, v in zip(self.sn.groups, stats["max_prob"])},
            "entropy": {g.name: round(v, 6) for g, v in zip(self.sn.groups, stats["entropy"])},
            "epochs": self.epoch, "multiplier": self.mu,
            # the step at which the settle phase found the argmax inside the band and stopped the
            # architecture steps (None: it never did, and repair had the last word)
            "settled_at_step": self.settled_at,
        }
        fields = {}
        if b.kind == "latency":
            search_stats["argmax_before_repair"]["latency_ms"] = round(a_cost, 6)
            # the prediction put the network in the band; a measurement checks it. Off the band,
            # the prediction is corrected by the measured/predicted ratio of the network at hand
            # and repair runs again on the corrected costs (at most 3 times; NetAdapt measures each
            # proposal the same way)
            lat = self.measured_latency(choice)
            lat["measured_repairs"] = 0
            while not lat["in_band"] and lat["measured_repairs"] < 3:
                r = lat["measured_ms"] / lat["predicted_ms"]
                choice = repair(choice, self.sn.cands, logp, self.choice_cost, b.lo / r, b.hi / r)
                n, lat = lat["measured_repairs"] + 1, self.measured_latency(choice)
                lat["measured_repairs"] = n
            fields["latency"] = lat
        arch = self.sn.make_arch(
            self.sn.widths_of(choice), b, self.cfg, self.data.info,
            probabilities={g.name: [round(float(v), 6) for v in p] for g, p in zip(self.sn.groups, probs)},
            repaired=[g.name for g, a, c in zip(self.sn.groups, start, choice) if a != c], search=search_stats,
            **fields)
        if self.dist.enabled:  # every rank found the same architecture, or something is broken
            digest = hashlib.sha256(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()
            digests = distributed.gather(digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"ranks disagree on the architecture: {digests}")
            if self.dist.main:
                with open(os.path.join(self.run_dir, "ranks.json"), "w") as f:
                    json.dump({"world": self.dist.world, "arch_sha256": digests}, f, indent=2)
        if self.dist.main:
            arch.save(os.path.join(self.run_dir, "arch.json"))
            png = width_png(self.history, self.sn)
            with open(os.path.join(self.run_dir, "widths.png"), "wb") as f:
                f.write(png)
            self.monitor.flush()
        distributed.barrier()
        return arch


def check_paper_setting(cfg: Config, config_path: str, demo: str) -> None:
    """The bare ``tools/search.py --budget-flops 1.6G`` searches the paper's setting
    (``config_path``: ResNet-50, ImageNet, 224×224). When that data is not there, raise one
    :class:`UserError` naming the model, the budget range it allows and the two commands to use
    instead (the same config with ``--data``, or the CPU ``demo``)."""
    from dan.data import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, dataset_info

    try:
        dataset_info(cfg.data)
        return
    except UserError:
        pass
    size = cfg.data.image_size or 224
    info = DatasetInfo("imagefolder", 1000, 3, size, IMAGENET_MEAN, IMAGENET_STD)
    lo, hi = build_supernet(cfg, info).extremes()["flops"]
    raise UserError(
        f"no --config: the default is the paper's setting, {describe_model(cfg)} on ImageNet at {size}x{size} "
        f"(small network {format_count(lo)} to {format_count(hi)} FLOPs), and its data is not in "
        f"{cfg.data.data or 'data/imagenet'}: run `python tools/search.py --config {config_path} --data DIR "
        f"--budget-flops 1.6G` with DIR holding train/ and val/, or the CPU demo `{demo}`")


def describe_model(cfg: Config) -> str:
    """``resnet18_small(width=8) at 1x28x28``-style name of the config's base network."""
    args = ", ".join(f"{k}={v}" for k, v in (cfg.model.args or {}).items())
    return f"{cfg.model.space}({args})" if args else cfg.model.space


def distribution_stats(probs) -> dict:
    """Per group: the largest probability and the entropy (nats) of its width distribution, and
    their means over groups (a converged search has max_prob near 1 and entropy near 0)."""
    max_prob, entropy = [], []
    for p in probs:
        p = p.detach().double().cpu()
        max_prob.append(float(p.max()))
        entropy.append(float(-(p * torch.log(p.clamp_min(1e-12))).sum()))
    n = max(1, len(max_prob))
    return {"max_prob": max_prob, "entropy": entropy, "mean_max_prob": sum(max_prob) / n,
            "mean_entropy": sum(entropy) / n}


def width_figure(history, sn):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frac = np.array([[w / g.full for w, g in zip(row, sn.groups)] for row in history] or
                    [[0.0] * len(sn.groups)])
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(history) + 3), max(3, 0.22 * len(sn.groups) + 1.5)))
    im = ax.imshow(frac.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(sn.groups)))
    ax.set_yticklabels([g.name for g in sn.groups], fontsize=6)
    ax.set_xticks(range(len(history)))
    ax.set_xticklabels([str(i + 1) for i in range(len(history))], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title("argmax width / full width per group", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def width_png(history, sn) -> bytes:
    import matplotlib.pyplot as plt

    fig = width_figure(history, sn)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def width_image(history, sn) -> np.ndarray:
    """The width-by-epoch picture as a CHW uint8 array for TensorBoard."""
    import matplotlib.pyplot as plt

    fig = width_figure(history, sn)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return rgba[..., :3].transpose(2, 0, 1).copy()


def _search_data_defaults(cfg: Config) -> None:
    if not cfg.data.holdout:
        cfg.data.holdout = DEFAULT_HOLDOUT
    if cfg.search.arch_batch_size is None:
        cfg.search.arch_batch_size = max(1, cfg.data.batch_size // 2)
    cfg.data.holdout_batch_size = cfg.search.arch_batch_size


def search(cfg: Config, monitor: Monitor | None = None, *, resume: bool = False, data=None,
           model=None) -> Arch:
    """Run DAN search in ``cfg.run_dir`` and write ``arch.json``; see the module docstring.
    ``model``: search this network object instead of the one ``cfg.model`` names."""
    cfg = copy.deepcopy(cfg)
    _search_data_defaults(cfg)
    return start(cfg, resume, lambda: Searcher(cfg, monitor, data=data, model=model)).fit()  # checks before any file


def search_model(model, data, budget="25%", *, kind: str = "flops", cfg: Config | None = None,
                 out: str | None = None, monitor: Monitor | None = None, resume: bool = False) -> Arch:
    """DAN search over the widths of a network object: ``dan.search(model, data, budget="25%")``.

    Args:
        model: any ``nn.Module`` the conversion supports (it is copied, never changed).
        data: the data section of a config: a :class:`~dan.config.DataConfig`, a dict of its
            fields (``{"dataset": "imagefolder", "data": "~/pets"}``) or a dataset name.
        budget: ``"25%"`` of the widest small network, or an absolute count (``"1.6G"``, ``5e8``).
        kind: ``"flops"`` (multiply-accumulates) or ``"params"``.
        cfg: the other settings (training, search); default :class:`~dan.config.Config`.
        out: the run folder (default ``runs/search-<class name>``).
    Returns:
        The :class:`~dan.arch.Arch` written to ``<out>/arch.json``. Its ``space`` records the class
        name only: rebuild it with ``dan.build_adjoint(arch, model=model)``.
    """
    from dan.config import DataConfig

    if kind not in ("flops", "params"):
        raise UserError(f"kind must be 'flops' or 'params', got {kind!r}")
    cfg = copy.deepcopy(cfg) if cfg is not None else Config()
    if isinstance(data, str):
        data = {"dataset": data}
    if isinstance(data, dict):
        d = cfg.data.__dict__.copy()
        d.update(data)
        data = DataConfig(**d)
    if not isinstance(data, DataConfig):
        raise UserError("data must be a DataConfig, a dict of its fields or a dataset name")
    cfg.data = data
    cfg.model.space, cfg.model.args = models.object_space(model), {}
    cfg.search.budget_flops = budget if kind == "flops" else None
    cfg.search.budget_params = budget if kind == "params" else None
    cfg.out = out or cfg.out or os.path.join("runs", f"search-{type(model).__name__}")
    cfg.validate()
    return search(cfg, monitor, resume=resume, model=model)
