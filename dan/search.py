"""DAN search: widths of the small network under a FLOPs or params budget.

``search(cfg, monitor)`` runs, per epoch, alternating steps on two disjoint parts of the
*training* data (the test split is never seen):

1. **Weight step** (training split): every group's width is drawn uniformly from its candidates
   (SPOS; ``weight_sampling: distribution`` draws it from the architecture distribution instead,
   which biases the supernet towards the architecture the search already prefers), the small
   path runs on tensors sliced to it, and the weights take a step on the adjoint loss
   ``CE(y, p) + λ(t)·KL(p‖q)`` (``weight_sampling: sandwich`` adds ``λ(t)·KL(p‖q_min)`` of the
   narrowest small network, p detached: BigNAS's sandwich rule with in-place distillation; its
   top slice is the big network itself, which the widest small network equals but for its
   BatchNorms, and which every step already trains on the labels).
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
steps, a 25 % one was at 1.01 B twenty steps before it ended at 0.84 B), so after the first time
the argmax network is inside the band (the landing) an architecture step that takes it out of the
band again is undone (``settle_until: guarded``, the default): the distributions go on committing
to the last step, and the search ends on a committed architecture that met its budget, not wherever
the last flip left it. With ``settle_snap < 1`` (off by default: measured, it did not retrain
better) an argmax that has not landed that far through the settle phase is landed by repair's move
made on the logits (:func:`settle_snap`), and the guarded steps go on around it. By default
(``settle_vernier: 0.5``, the vernier) such an argmax is left to the search's own steps instead, the
cost penalty reaching only the groups whose one-candidate moves cannot jump over the band
(:func:`penalty_frozen`) and the settle steps restarted at full size; with ``settle_hold`` (off
by default) those other groups also take no architecture step, where otherwise the accuracy
objective alone moves them, with no cost against it (``settle_hold_while: above``: only while the
argmax is above the band). Ablations: ``landed`` stops the architecture
steps at the landing (the default until the fifteenth session: it committed less, 0.63 against 0.71
at 25 %), ``end`` keeps them going unguarded, the multiplier moving only while the argmax is outside
the band (it left the band again in 3 of 3 seeds).
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

import contextlib
import copy
import itertools
import math
import os

import torch
import torch.nn.functional as F

from dan import distributed, models
from dan.arch import Arch
from dan.budget import Budget, resolve_budget  # noqa: F401 (re-exported: dan.search.Budget)
from dan.cost import format_count
from dan.checkpoint import rng_state, save_checkpoint, set_rng_state
from dan.config import SEARCH_HOLDOUT, Config, check_tau_decay
from dan.config import check_search_config  # noqa: F401 (dan.search.check_search_config)
from dan.data import build_data, build_user_data, dataset_info
from dan.data.code import as_splits, object_name
from dan.engine import amp_dtype, build_optimizer, build_scheduler, evaluate, resolve_device
from dan.loop import (check_out_from_file, load_states, optimizer_step, read_run_checkpoint, run_epochs, start,
                      start_and_fit, steps_per_epoch)
from dan.errors import UserError
from dan.layers import channels_last_runs
from dan.loss import adjoint_loss, kl_divergence, schedule
from dan.methods.base import check_sections
from dan.models import input_shape
from dan.monitor import Monitor, owned_monitor
from dan.search_control import SETTLE_MU_FLOOR, BudgetCost, SearchControl  # noqa: F401 (dan.search.SETTLE_MU_FLOOR)
from dan.seed import kept_rng_state, seed_everything
from dan.search_result import (distribution_stats, epoch_row, finish, log_epoch, log_step,  # noqa: F401
                               repaired_argmax, width_figure, width_png)
from dan.supernet import Supernet, build_supernet

CHECKPOINT_VERSION = 1
# The defaults a search fills (:meth:`Config.resolve`); these names stay importable from here.
DEFAULT_HOLDOUT = SEARCH_HOLDOUT


def narrowest_kl(sn: Supernet, anet, big: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The sandwich rule's bottom slice: ``KL(p‖q)`` of the narrowest small network with the big
    network's logits ``big`` detached (in-place distillation: the big network learns from the labels
    and the sampled small network, as in a plain adjoint step, and is not pulled towards the
    narrowest network's predictions). Leaves the small path at the narrowest widths."""
    sn.set_widths(sn.extreme_choices()[0])
    return kl_divergence(big.detach(), anet.small(x))


class Searcher:
    def __init__(self, cfg: Config, monitor: Monitor | None = None, *, data=None, model=None, dry_run=False):
        # every field checked and the search's defaults filled, before any data is loaded; a
        # resolved config comes back equal, and the caller's is not changed
        cfg = cfg.resolve("search")
        self.cfg, s = cfg, cfg.search
        self.run_dir = cfg.run_dir
        self.monitor = monitor or Monitor(self.run_dir)
        self.device = resolve_device(cfg.device)
        # the network and the budget are checked before any image is loaded
        info = data.info if data is not None else dataset_info(cfg.data)
        self.input_shape = input_shape(info)
        seed_everything(cfg.seed)
        self.sn = build_supernet(cfg, info, model=model)
        extremes, self.latency = self.sn.extremes(), None
        self.extremes = extremes  # the space's cost range (a latency's added below), which a dry run's plan says
        # a FLOPs or params budget is checked before any image is loaded; a latency budget needs this
        # device's latency model (cached; minutes to build for a large network), built after the data's
        # checks: a broken evaluation image was found after a ResNet-50's 15 minutes of tables
        self.budget = resolve_budget(s, extremes if s.budget_latency is None else {  # a latency's text only
            **extremes, "latency": (0.0, math.inf)}, describe_model(cfg))
        self.data = data if data is not None else build_data(cfg.data, seed=cfg.seed, device=self.device,
                                                             log=self.monitor.info)
        if s.budget_latency is not None:  # a dry run takes a cached table only (None without one)
            self.latency = latency_model(s, self.sn, extremes, self.monitor.console, self.monitor.info, not dry_run)
            if self.latency is not None:
                self.budget = resolve_budget(s, extremes, describe_model(cfg))
        self.dist = distributed.info()
        if self.dist.enabled:
            self.data.shard(self.dist.rank, self.dist.world)
        self.anet = self.sn.anet.to(self.device)
        self.sn.arch.to(self.device)
        self.cl = cfg.train.channels_last and channels_last_runs(self.anet, self.sn.input_shape, self.device)
        if self.cl:
            self.anet.to(memory_format=torch.channels_last)
        self.train_anet = distributed.wrap(self.anet, self.device)  # DDP when distributed
        self.amp = amp_dtype(cfg.train.amp, self.device)  # CUDA only: bf16 autocast for both steps
        if self.amp == torch.float16:
            self.amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else None  # no scaler in search
        t = cfg.train
        self.steps_per_epoch = steps_per_epoch(self.data.train, t.limit_batches)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.w_opt = build_optimizer(self.anet.parameters(), t)
        self.sched = build_scheduler(self.w_opt, t, self.steps_per_epoch)
        self.a_opt = torch.optim.Adam(self.sn.arch.parameters(), lr=s.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=s.arch_weight_decay)
        self.lam = schedule(cfg.adjoint.schedule, cfg.adjoint.c)
        self.control = SearchControl(s, self.steps_per_epoch, self.total_steps)  # tau, mu, settle phase
        self.cost = BudgetCost(self.budget, self.sn, self.latency)
        self.epoch, self.step = 0, 0
        self.history: list[list[int]] = []  # argmax widths per epoch
        self.last_eval: dict = {}
        self.last_row: dict | None = None
        self._tau = self.control.tau(0)

    # --- helpers -----------------------------------------------------------------------------
    @property
    def model(self):
        """The supernet's weights (what the loop checks before a checkpoint)."""
        return self.anet

    def prep(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.cl and x.ndim == 4 else x

    # --- one step of each kind ----------------------------------------------------------------
    def weight_step(self, x, y, progress: float) -> dict:
        sampling = self.cfg.search.weight_sampling
        # the same draw on every rank (same seeds)
        self.sn.set_widths(self.sn.sample_hard(uniform=sampling != "distribution"))
        lam = self.lam(progress)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            big, small = self.train_anet(x)
            kl_min = narrowest_kl(self.sn, self.anet, big, x) if sampling == "sandwich" else 0.0
        loss, ce, kl = adjoint_loss(big, small, y, lam, detach_teacher=self.cfg.adjoint.detach_teacher,
                                    label_smoothing=self.cfg.train.label_smoothing, return_terms=True)
        loss = loss + lam * kl_min
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
        frozen = penalty_frozen(self)
        e_norm = self.cost.expected_over(frozen)
        weight = self.control.penalty_weight(self.step, float(e_norm.detach()))
        loss = ce + lam * kl + weight * e_norm.float()
        params, held = list(self.sn.arch.parameters()), held_groups(self, frozen)
        for i, (prm, g) in enumerate(zip(params, torch.autograd.grad(loss, params))):
            prm.grad = None if i in held else g  # settle_hold: Adam skips a held group
        distributed.average_gradients(params)  # the same logits on every rank
        logit_step(self)
        self.a_opt.zero_grad(set_to_none=True)
        self.sn.clear_masks()
        with torch.no_grad():
            self.control.update(
                self.step, expected=lambda: float(self.cost.expected_over()),
                argmax=lambda: self.cost.over(self.sn.arch.argmax()),
                committed=lambda: float(torch.stack([p.max() for p in self.sn.arch.probs()]).mean()))
        with torch.no_grad():
            e_flops, e_params = self.sn.expected_cost()
        return {"kl": kl.item(), "ce": float(ce.detach()), "penalty": float(weight * e_norm.detach()),
                "multiplier": self.control.mu, "penalty_weight": weight, "undone": self.control.undone,
                "expected_flops": float(e_flops), "expected_params": float(e_params)}

    # --- evaluation ---------------------------------------------------------------------------
    def recalibrate(self, choice, batches: int) -> None:
        """The small BatchNorm statistics re-estimated at ``choice`` on ``batches`` training batches."""
        self.data.train.set_epoch(self.epoch)
        self.sn.recalibrate(choice, itertools.islice(self.data.train, batches), self.prep)

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
        self._holdout = cycle_batches(self.data.holdout, epoch)
        self._active = self.control.arch_active(epoch)
        self._tau = self.control.tau(epoch, self.step)
        self.anet.train()

    def train_step(self, x, y) -> dict:
        progress = self.step / max(1, self.total_steps)
        logs = {f"weights/{k}": v for k, v in self.weight_step(self.prep(x), y, progress).items()}
        if self._active and not self.control.arch_steps_over():
            xh, yh = arch_batch(self, x, y)
            self._tau = self.control.tau(self.epoch, self.step)
            logs.update({f"arch/{k}": v for k, v in self.arch_step(self.prep(xh), yh, progress, self._tau).items()})
        return logs

    def log_window(self, logs: dict, images_per_s: float, bar) -> None:
        log_step(self, logs, self._tau, images_per_s)

    def end_epoch(self) -> dict:
        return epoch_row(self)

    def after_epoch(self) -> None:
        log_epoch(self)

    # --- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {"version": CHECKPOINT_VERSION, "kind": "search", "model": self.anet.state_dict(),
                "arch": self.sn.arch.state_dict(), "optimizer": self.w_opt.state_dict(),
                "arch_optimizer": self.a_opt.state_dict(), "scheduler": self.sched.state_dict(),
                **self.control.state(), "tau": self.control.tau(self.epoch), "epoch": self.epoch, "step": self.step,
                "history": self.history, "last_eval": self.last_eval, "rng": rng_state(),
                "last_row": self.last_row, "config": self.cfg.to_dict(), "data_info": self.data.record()}

    def save(self, row: dict | None = None) -> None:
        """The checkpoint of the epoch that just ended, holding its metrics row."""
        if row is not None:
            self.last_row = {"epoch": self.epoch, **row}
        if self.dist.main:
            save_checkpoint(self.state(), os.path.join(self.run_dir, "checkpoints", "last.pt"))

    def restore(self) -> None:
        path = os.path.join(self.run_dir, "checkpoints", "last.pt")
        st = read_run_checkpoint(path, self.cfg, self.device, "search", self.data, self.monitor.info)
        load_states(path, st, {"model": self.anet, "arch": self.sn.arch, "optimizer": self.w_opt,
                               "arch_optimizer": self.a_opt, "scheduler": self.sched})
        self.control.load(st)
        self.epoch, self.step = st["epoch"], st["step"]
        self.history = [list(h) for h in st["history"]]
        self.last_eval, self.last_row = st["last_eval"], st.get("last_row")
        set_rng_state(st["rng"])

    def finish(self) -> Arch:
        return finish(self)


def cycle_batches(loader, epoch: int):
    """The loader's batches for ``epoch`` without end: when they run out, again in a new order
    (the architecture steps' held-out batches)."""
    k = 0
    while True:
        loader.set_epoch(epoch + 100_003 * k)
        yield from loader
        k += 1


def latency_model(s, sn, extremes: dict, progress: bool, say=None, measure: bool = True):
    """The latency model of the supernet's space on this device (:mod:`dan.latency`, cached), for
    the search section ``s``; adds the narrowest and widest networks' predictions to ``extremes``.
    ``say``: where the line announcing a measurement goes (:func:`dan.latency.build`). Without
    ``measure`` (a dry run: :mod:`dan.dry_run`) the cached model only, or None when there is none."""
    if s.latency_batch < 1 or (s.latency_threads is not None and s.latency_threads < 1):
        raise UserError("search.latency_batch and search.latency_threads must be >= 1")
    resolve_budget(s, {**extremes, "latency": (0.0, math.inf)})  # the text, before measuring
    from dan import latency

    if measure:
        model = latency.build(sn, batch=s.latency_batch, threads=s.latency_threads, runtime=s.latency_runtime,
                              progress=progress, remeasure_busy=True, say=say)
    else:
        model = latency.cached(sn, batch=s.latency_batch, threads=s.latency_threads, runtime=s.latency_runtime)[1]
        if model is None:
            return None
    narrowest, widest = (model.predict(sn.widths_of(c)) for c in sn.extreme_choices())
    # the least predicted latency: not always the narrowest network's (latency is not monotone in
    # width; an audit's 0.65 ms budget was refused while the search had found a 0.645 ms network).
    # The widest stays the top: a relative budget is a share of the widest network's time.
    extremes["latency"] = (latency_floor(model, narrowest, least_latency(model, sn), widest), widest)
    return model


def latency_floor(model, narrowest: float, least: float, widest: float) -> float:
    """The least latency a budget is checked against: the least predicted (``least``; ``narrowest``
    and ``widest``: the extreme networks' predictions), but not below the narrowest network's share
    of the widest's time as the table's calibration measured the two (``fit["extremes_ms"]``), put
    on the predicted widest's scale and less the same margin. An ONNX Runtime fit with a large
    negative intercept predicted a RegNet's narrowest network at 0.0066 ms, a seventh of its
    measured time, and an audit's budget of 5 % was taken and ended at 207 % of it. A share, not the
    measured milliseconds: a fit can be off in scale too (the floor above the predicted widest made
    every budget infeasible), and a relative budget is a share of the predicted widest."""
    measured = (getattr(model, "fit", None) or {}).get("extremes_ms")  # (none: an older table)
    floor = min(narrowest, least)
    if not (isinstance(measured, (list, tuple)) and len(measured) == 2 and
            all(isinstance(v, (int, float)) and v > 0 for v in measured)) or widest <= 0:
        return floor
    margin = least / narrowest if 0 < least <= narrowest else 1.0  # (the one non-monotone widths give)
    share = min(1.0, measured[0] / measured[1])
    return max(floor, widest * share * margin)


def least_latency(model, sn, sweeps: int = 4) -> float:
    """A low predicted latency of the space: from the narrowest choice, single-group moves that
    lower the prediction, taken greedily (a few sweeps over the groups; prediction only)."""
    choice = sn.extreme_choices()[0]
    best = model.predict(sn.widths_of(choice))
    for _ in range(sweeps):
        moved = False
        for g, cands in enumerate(sn.cands):
            for k in range(len(cands)):
                trial = choice[:g] + [k] + choice[g + 1:]
                ms = model.predict(sn.widths_of(trial))
                if ms < best:
                    best, choice, moved = ms, trial, True
        if not moved:
            break
    return best


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


def search(cfg: Config, monitor: Monitor | None = None, *, resume: bool = False, data=None,
           model=None) -> Arch:
    """Run DAN search in ``cfg.run_dir`` and write ``arch.json``; see the module docstring.
    ``model``: search this network object instead of the one ``cfg.model`` names."""
    cfg = checked_search_config(cfg, resume)
    with owned_monitor(monitor, cfg.run_dir) as mon:  # one it makes is closed when the search ends
        return start_and_fit(cfg, resume, lambda: Searcher(cfg, mon, data=data, model=model),  # checks first
                             least=narrowest)


def checked_search_config(cfg: Config, resume: bool) -> Config:
    """The search's resolved config (a new one: config.yaml and the checkpoint hold it), its
    ``methods`` sections checked (saved with the search and read by a later ``train.py --method``)
    and, on a resume, :func:`check_extension` (on a fresh start :func:`dan.config.check_tau_decay`):
    what :func:`search` and its dry run (:func:`dan.dry_run.plan_search`) check before the run's own checks."""
    cfg = cfg.resolve("search")
    check_sections(cfg.methods)
    if resume:
        check_extension(cfg)
    else:  # a resumed run keeps its own tau_decay, which an older DAN may have ignored (check_tau_decay)
        check_tau_decay(cfg)
    return cfg


# The resumable changes that give a finished search another answer (its arch.json rewritten)
ANSWER_CHANGES = ("train.epochs", "search.refine_rounds", "search.refine_batches", "search.refine_recal_batches",
                  "search.shortlist", "search.shortlist_steps")


def check_extension(cfg: Config) -> None:
    """Refuse to give a finished search another answer (more epochs, another last step) while a
    retrain inside its folder was made from the present one: an audit's ``--resume --epochs 4``
    rewrote the arch.json and supernet a finished ``retrain-adjoint/`` came from, without a word."""
    run_dir = cfg.run_dir
    if not os.path.isfile(os.path.join(run_dir, "arch.json")):
        return
    retrains = sorted(n for n in os.listdir(run_dir) if n.startswith("retrain-")
                      and os.path.isdir(os.path.join(run_dir, n, "checkpoints")))
    if not retrains:
        return
    try:
        saved = Config.from_file(os.path.join(run_dir, "config.yaml")).to_dict()
    except UserError:
        return  # the checkpoint's own check names what differs
    now = cfg.to_dict()
    changed = [k for k in ANSWER_CHANGES if _get(saved, k) != _get(now, k)]
    if changed:
        raise UserError(f"{run_dir} holds {', '.join(retrains)}, made from this search's arch.json, which "
                        f"resuming with another {changed[0]} would rewrite: copy the search folder and resume the "
                        f"copy, or move the retrain out first")


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


@contextlib.contextmanager
def narrowest(sr: Searcher):
    """The supernet's small path at its narrowest widths, then as it was: the memory check's
    estimate (``dan.loop.check_memory``) is then the least of any weight step, whose widths are
    drawn at or above them."""
    was = [(g.width, g.mask) for g in sr.sn.groups]
    sr.sn.set_widths(sr.sn.extreme_choices()[0])
    try:
        yield
    finally:
        for g, (width, mask) in zip(sr.sn.groups, was):
            g.width, g.mask = width, mask


def search_model(model, data, budget="25%", *, kind: str = "flops", cfg: Config | dict | str | None = None,
                 out: str | None = None, monitor: Monitor | None = None, resume: bool = False) -> Arch:
    """DAN search over the widths of a network object: ``dan.search(model, data, budget="25%")``.

    Args:
        model: any ``nn.Module`` the conversion supports (it is copied, never changed).
        data: the data section of a config: a :class:`~dan.config.DataConfig`, a dict of its
            fields (``{"dataset": "imagefolder", "data": "~/pets"}``) or a dataset name (your own
            ``"package.module:function"`` among them); or your own ``(train, test)`` torch Datasets
            (:mod:`dan.data.code` says what their items are; the other data settings are
            ``cfg.data``'s, and ``resume=True`` needs the same objects again: one on other lengths is refused).
        budget: ``"25%"`` of the widest small network, or an absolute count (``"1.6G"``, ``5e8``;
            a latency: ``"2.5ms"``).
        kind: ``"flops"`` (multiply-accumulates), ``"params"`` or ``"latency"`` (batch-1 time on
            this machine, as ``tools/search.py --budget-latency``).
        cfg: the other settings (training, search): a :class:`~dan.config.Config`, a dict of its
            sections (``{"train": {"epochs": 2}}``) or a YAML config's path (as ``--config``);
            default :class:`~dan.config.Config`.
        out: the run folder (default ``runs/search-<class name>``).
    Returns:
        The :class:`~dan.arch.Arch` written to ``<out>/arch.json``. Its ``space`` records the class
        name only: rebuild it with ``dan.build_adjoint(arch, model=model)``.
    """
    from dan.adjoint import check_network
    from dan.config import DataConfig

    check_network(model, "dan.search searches")  # before the config and the data are read
    if kind not in ("flops", "params", "latency"):
        raise UserError(f"kind must be 'flops', 'params' or 'latency', got {kind!r}")
    from_file = os.fspath(cfg) if isinstance(cfg, (str, os.PathLike)) else None
    cfg = api_config(cfg)
    splits = None
    if isinstance(data, (tuple, list)):  # your own Datasets, as objects
        splits = as_splits(data, object_name(data[0]) if len(data) == 2 else "data")
        data = {"dataset": splits.name}
    if isinstance(data, str):
        data = {"dataset": data}
    if isinstance(data, dict):  # checked as a config's data section: a misspelt key names the known ones
        data = Config.from_dict({"data": {**cfg.data.__dict__, **data}}).data
    if not isinstance(data, DataConfig):
        raise UserError("data must be a DataConfig, a dict of its fields or a dataset name")
    cfg.data = data
    cfg.model.space, cfg.model.args = models.object_space(model), {}
    cfg.search.budget_flops = budget if kind == "flops" else None
    cfg.search.budget_params = budget if kind == "params" else None
    cfg.search.budget_latency = budget if kind == "latency" else None
    if out is None and from_file:  # the file's out (dan.loop.check_out_from_file)
        check_out_from_file(cfg.out, from_file)
    cfg.out = out or cfg.out or os.path.join("runs", f"search-{type(model).__name__}")
    cfg.validate()
    models.trust(cfg.data.dataset)  # a package.module:function dataset named in this call
    # the caller's random generators as they were (the run seeds them; your Datasets' items drawn
    # while the data is checked may draw from them too)
    with kept_rng_state():
        built = None
        if splits is not None:  # loaders over them, as the search's resolved config says
            rcfg = cfg.resolve("search")
            built = build_user_data(splits, rcfg.data, seed=rcfg.seed, device=resolve_device(rcfg.device))
        return search(cfg, monitor, resume=resume, model=model, data=built)


def api_config(cfg) -> Config:
    """A new :class:`Config` of what ``dan.search(..., cfg=)`` was given: a config (copied), a dict
    of its sections (:meth:`Config.from_dict`: a misspelt key is named) or a YAML file's path (read as
    ``tools/search.py --config`` reads it); the defaults for None. An audit's notebook passed
    ``cfg={"train": {"epochs": 2}}`` and ``cfg="x.yaml"``: both were AttributeErrors."""
    if cfg is None:
        return Config()
    if isinstance(cfg, Config):
        return copy.deepcopy(cfg)
    if isinstance(cfg, dict):
        return Config.from_dict(copy.deepcopy(cfg))
    if isinstance(cfg, (str, os.PathLike)):
        path = os.fspath(cfg)
        if not os.path.isfile(path):
            raise UserError(f"cfg {path} is no file: pass a YAML config's path (configs/*.yaml), a dict of its "
                            f"sections or a dan.config.Config")
        return Config.from_file(path)
    raise UserError(f"cfg must be a dan.config.Config, a dict of its sections ({{'train': {{'epochs': 2}}}}) or a "
                    f"YAML config's path, got a {type(cfg).__name__}")


def logit_step(sr: Searcher) -> None:
    """The optimizer step of the architecture logits. After the landing under ``settle_until:
    guarded`` a step that takes the argmax network out of the band is undone (the logits and the
    optimizer's moments restored), so the distributions go on committing only in ways that keep the
    landed budget: with ``end`` the steps after the landing widened a 25 % seed-0 search from 0.98
    to 1.31 B within 80 steps, and the multiplier brought it back only to 0.88 B."""
    if sr.control.snap_due(sr.step):
        settle_snap(sr)
        if sr.control.arch_steps_over():  # "landed": no step after the landing
            return
    if not sr.control.guarding():
        sr.a_opt.step()
        return
    params = list(sr.sn.arch.parameters())
    saved = [p.detach().clone() for p in params]
    moments = copy.deepcopy(sr.a_opt.state_dict())
    sr.a_opt.step()
    with torch.no_grad():
        if abs(sr.cost.over(sr.sn.arch.argmax()) - 1.0) > sr.cfg.search.band:
            for p, v in zip(params, saved):
                p.copy_(v)
            sr.a_opt.load_state_dict(moments)
            sr.control.undone += 1


def penalty_frozen(sr: Searcher) -> set[int]:
    """The groups the cost penalty does not reach at this architecture step: under
    ``search.settle_fine`` in the settle phase, or past the vernier's deadline
    (``search.settle_vernier``, :meth:`SearchControl.fine_only`), those whose one-candidate move
    could jump over the band (:meth:`BudgetCost.coarse_groups`); otherwise none."""
    if not sr.control.fine_only(sr.step):
        return set()
    return sr.cost.coarse_groups(sr.sn.arch.argmax(), sr.cfg.search.band)


def arch_batch(sr: Searcher, x, y):
    """The images the next architecture step scores widths on (``search.arch_data``): the first
    ``arch_batch_size`` of the weight step's own batch ``x, y`` ("train"), or the held-out split's
    next batch ("holdout", the default)."""
    s = sr.cfg.search
    if s.arch_data == "train":
        return x[: s.arch_batch_size], y[: s.arch_batch_size]
    return next(sr._holdout)


def held_groups(sr: Searcher, frozen: set[int]) -> set[int]:
    """The groups no architecture step moves (``search.settle_hold``): those the penalty does not
    reach (``frozen``), always or (``settle_hold_while: above``) only while the argmax network
    costs more than the band's upper edge; otherwise none."""
    s = sr.cfg.search
    if not (s.settle_hold and frozen):
        return set()
    if s.settle_hold_while == "above" and sr.cost.of(sr.sn.arch.argmax()) <= sr.budget.hi:
        return set()
    return frozen


def settle_snap(sr: Searcher) -> None:
    """The settle phase's deadline (``search.settle_snap``): the argmax, never inside the band so
    far, is landed there by repair's move (:func:`dan.supernet.repair`: the fewest groups, the most
    probable landing), made on the logits: in each moved group the new candidate's logit and Adam
    moments are swapped with the old argmax's, so the group's distribution keeps its shape with the
    new candidate on top. The landing counts from this step (``settled_at``) and the moved groups
    are recorded (``control.snapped``, arch.json's ``search.settle_snapped``); a move that does not
    land (no combination of widths is in the band) is recorded as an empty list and not tried again."""
    b, arch = sr.budget, sr.sn.arch
    _, _, start, choice = repaired_argmax(sr)  # the move the search's end would make (dan.search_result)
    sr.control.snapped = []
    if not b.lo <= sr.cost.of(choice) <= b.hi:
        return
    with torch.no_grad():
        for i, (old, new) in enumerate(zip(start, choice)):
            if old == new:
                continue
            t = arch.logits[i]
            for v in [t] + [m for m in sr.a_opt.state.get(t, {}).values() if torch.is_tensor(m) and m.shape == t.shape]:
                v[[old, new]] = v[[new, old]].clone()
            sr.control.snapped.append(sr.sn.groups[i].name)
    if arch.argmax() == choice:
        sr.control.settled_at = sr.step
