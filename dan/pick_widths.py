"""``arch.json`` files for the width baselines, written like a search's so retrain treats them alike.

:func:`baseline_arch` picks the widths of one baseline (:mod:`dan.baselines`) for a search config
and its budget:

* ``uniform``, ``random`` and ``fixed`` (widths the user gives: a hand-made pattern, a paper's
  pruned widths, or a recorded search's answer whose folder is gone) need only the network's cost
  table (no data, no training);
* ``greedy`` needs a trained supernet: the ``checkpoints/last.pt`` of a DAN search. It restores the
  search (weights, data split, seed) and scores every trial architecture on the *held-out* part of
  the training split: small BatchNorm statistics re-estimated for that architecture on
  ``recal_batches`` training batches, then the cross-entropy on the first ``eval_batches``
  held-out batches (cross-entropy, not top-1: on a few thousand images top-1 moves in steps too
  coarse to rank one-candidate moves). The test split is never seen. Far above the budget (cost
  over ``coarse_above`` times it) a move narrows a group by ``coarse_step`` candidates and is
  scored on half the held-out batches: with 16 candidates per group the one-candidate slimming of
  a width-8 ResNet-18 to 10 % took about 130 rounds of 12 trials (25 min); the coarse phase does
  the first two thirds of the way in half the rounds at half the cost each.
"""

from __future__ import annotations

import copy
import os
import random

from dan.arch import Arch
from dan.baselines import BaselineError, greedy_choice, random_choice, uniform_widths
from dan.budget import resolve_budget
from dan.config import Config
from dan.errors import UserError

METHODS = ("uniform", "random", "fixed", "greedy", "refine", "shortlist")


def baseline_arch(cfg: Config, method: str, *, supernet: str | None = None, recal_batches: int = 4,
                  eval_batches: int = 8, coarse_above: float = 1.5, coarse_step: int = 2, rounds: int = 8,
                  candidates: int = 6, steps: int = 150, out: str | None = None, widths: dict | None = None,
                  log=None) -> Arch:
    """The :class:`Arch` of baseline ``method`` under the budget in ``cfg.search``.

    Args:
        cfg: a search config (model, data, budget); for ``greedy`` the search's own config is used
            and only the budget is taken from ``cfg`` when it names one.
        method: ``uniform``, ``random`` (seeded by ``cfg.seed``), ``greedy`` or ``refine`` (the
            search's own answer refined by held-out swaps, :mod:`dan.refine`: what
            ``search.refine_rounds`` does at the end of a search, for a search that ran without it).
        supernet: ``greedy`` and ``refine``: the ``checkpoints/last.pt`` of a finished or stopped DAN
            search (``refine`` keeps that search's budget).
        rounds: ``refine`` only: its most rounds.
        widths: ``fixed`` only: channels per group (every searchable group; others at full width),
            checked against the network and the budget band (:func:`fixed_widths`).
        candidates, steps, out: ``shortlist`` only (:mod:`dan.shortlist`): how many widths are
            fine-tuned for ``steps`` batches each, in ``<out>/shortlist/c<k>``.
        coarse_above, coarse_step: ``greedy`` only: above ``coarse_above`` times the budget, moves
            of ``coarse_step`` candidates scored on half the held-out batches (step 1: none).
    Returns:
        the architecture, with ``search = {"method": ..., ...}`` saying how it was chosen.
    """
    if method not in METHODS:
        raise UserError(f"unknown baseline '{method}': choose one of {', '.join(METHODS)}")
    if method == "greedy":
        return _greedy(cfg, supernet, recal_batches, eval_batches, coarse_above, coarse_step, log)
    if method == "refine":
        return _refine(supernet, rounds, recal_batches, eval_batches, log)
    if method == "shortlist":
        return _shortlist(supernet, candidates, steps, out, log)
    from dan.data import dataset_info
    from dan.search import check_search_config, describe_model
    from dan.seed import derive
    from dan.supernet import build_supernet

    check_search_config(cfg.search)
    info = dataset_info(cfg.data)
    sn = build_supernet(cfg, info)
    budget = resolve_budget(cfg.search, sn.extremes(), describe_model(cfg))
    idx = 0 if budget.kind == "flops" else 1
    cost_fn = lambda widths: sn.table.cost(list(widths))[idx]
    try:
        if method == "fixed":
            widths, extra = fixed_widths(sn, widths), {}
        elif method == "uniform":
            widths, f = uniform_widths([g.full for g in sn.groups], [g.quantum for g in sn.groups], cost_fn,
                                       budget.lo, budget.hi)
            extra = {"fraction": round(f, 6)}
        else:
            rng = random.Random(derive(cfg.seed, "random-widths"))
            choice, draws = random_choice(sn.cands, cost_fn, budget.lo, budget.hi, rng)
            widths, extra = sn.widths_of(choice), {"draws": draws}
    except BaselineError as e:
        raise UserError(f"{method} widths: {e}: choose another budget") from e
    cost = cost_fn(widths)
    if method == "fixed" and not budget.lo <= cost <= budget.hi:
        raise UserError(f"fixed widths: {budget.kind} {cost:,} is outside the budget's band [{budget.lo:,.0f}, "
                        f"{budget.hi:,.0f}]: give widths inside it, or the budget they were chosen for")
    stats = {"method": method, "in_band": bool(budget.lo <= cost <= budget.hi),
             "over_budget": round(cost / budget.value, 6), **extra}
    if supernet is not None:  # its retrain starts from it, as DAN's does (it was accepted and ignored)
        stats["supernet"] = _inherited_supernet(supernet, cfg, info)
    return sn.make_arch(widths, budget, cfg, info, search=stats)


def _inherited_supernet(supernet: str, cfg: Config, info) -> str:
    """The search checkpoint a uniform, random or fixed architecture's retrain starts from (its
    ``search.supernet``, as greedy's): a DAN search of the same model and data, else a UserError."""
    import os

    from dan.checkpoint import check_same_task, load_named

    path, state = load_named(supernet, "--supernet", "pass runs/<search>/checkpoints/last.pt of a DAN search")
    if state.get("kind") != "search":
        raise UserError(f"{path} is not a search checkpoint: pass runs/<search>/checkpoints/last.pt")
    check_same_task(state, {"space": cfg.model.space, "num_classes": info.num_classes,
                            "in_channels": info.in_channels}, path)
    return os.path.abspath(path)


def fixed_widths(sn, given) -> list[int]:
    """The widths of ``sn``'s searchable groups, in order, from ``given`` (group name -> channels:
    every searchable group named, each a whole number of its quantum between one quantum and its
    full width; a fixed group, e.g. ``fc``, may be named at its own width, as arch.json lists it)."""
    if not isinstance(given, dict) or not given:
        raise UserError("fixed widths: give a JSON object of group name -> channels (or an arch.json)")
    groups = {g.name: g for g in sn.groups}
    fixed = {g.name: g.full for g in sn.anet.groups if g.name not in groups}
    odd = [n for n in given if n not in groups and not (n in fixed and given[n] == fixed[n])]
    if odd:
        n = odd[0]
        what = f"is fixed at {fixed[n]}" if n in fixed else "is not a group of this network"
        raise UserError(f"fixed widths: '{n}' {what}; its searchable groups are {', '.join(groups)}")
    missing = [n for n in groups if n not in given]
    if missing:
        raise UserError(f"fixed widths: no width for {', '.join(missing)}: name every searchable group")
    out = []
    for g in sn.groups:
        w = given[g.name]
        if isinstance(w, bool) or not isinstance(w, int) or not g.quantum <= w <= g.full or w % g.quantum:
            raise UserError(f"fixed widths: {g.name} = {w!r}: give a multiple of {g.quantum} from {g.quantum} "
                            f"to {g.full}")
        out.append(w)
    return out


def _restore(method: str, supernet: str | None, cfg: Config | None = None):
    """The DAN search whose ``checkpoints/last.pt`` is ``supernet``, restored (its own config; the
    budget of ``cfg`` when it names one). Returns ``(searcher, budget)``."""
    from dan.checkpoint import load_named
    from dan.monitor import Monitor
    from dan.search import Searcher, describe_model

    if not supernet:
        raise UserError(f"{method} needs a trained supernet: pass the checkpoints/last.pt of a DAN search")
    supernet, state = load_named(supernet, "--supernet", "pass a DAN search's checkpoints/last.pt (or its folder)")
    if state.get("kind") != "search":
        raise UserError(f"{supernet} is not a search checkpoint: pass runs/<search>/checkpoints/last.pt")
    scfg = Config.from_dict(state["config"])
    scfg.out = os.path.dirname(os.path.dirname(os.path.abspath(supernet)))
    if cfg is not None and (cfg.search.budget_flops is not None or cfg.search.budget_params is not None):
        scfg.search.budget_flops, scfg.search.budget_params = cfg.search.budget_flops, cfg.search.budget_params
    searcher = Searcher(copy.deepcopy(scfg), Monitor(None, console=False, tensorboard=False, enabled=False))
    searcher.restore()
    return searcher, resolve_budget(scfg.search, searcher.sn.extremes(), describe_model(scfg))


def _refine(supernet: str | None, rounds: int, recal_batches: int, eval_batches: int, log) -> Arch:
    from dan.refine import refine_found
    from dan.search_result import repaired_argmax

    searcher, budget = _restore("refine", supernet)
    s = searcher.cfg.search
    s.refine_rounds, s.refine_recal_batches, s.refine_batches = rounds, recal_batches, eval_batches
    sn = searcher.sn
    start = repaired_argmax(searcher)[3]  # as the search ended
    choice, stats = refine_found(searcher, start, log=log)
    stats = {"method": "refine", "supernet": os.path.abspath(supernet), "in_band":
             bool(budget.lo <= searcher.cost.of(choice) <= budget.hi), **stats}
    return sn.make_arch(sn.widths_of(choice), budget, searcher.cfg, searcher.data.info, search=stats)


def _greedy(cfg: Config, supernet: str | None, recal_batches: int, eval_batches: int, coarse_above: float,
            coarse_step: int, log) -> Arch:
    searcher, budget = _restore("greedy", supernet, cfg)
    idx = 0 if budget.kind == "flops" else 1
    sn = searcher.sn
    cost_fn = lambda widths: sn.table.cost(list(widths))[idx]

    def scorer(batches):  # small path only: the big network does not change between trials
        return lambda choice: -searcher.evaluate(choice, recal_batches, batches, nets=("small",))["small"]["ce"]

    if coarse_step < 1 or coarse_above <= 1:
        raise UserError("greedy: the coarse step must be >= 1 and the coarse threshold > 1 (times the budget)")
    try:
        choice, trace = greedy_choice(sn.cands, cost_fn, scorer(eval_batches), budget.lo, budget.hi, log=log,
                                      far=coarse_above, far_step=coarse_step,
                                      far_score_fn=scorer(max(1, eval_batches // 2)) if coarse_step > 1 else None)
    except BaselineError as e:
        raise UserError(f"greedy widths: {e}: choose another budget") from e
    cost = cost_fn(sn.widths_of(choice))
    stats = {"method": "greedy", "supernet": os.path.abspath(supernet), "rounds": len(trace) - 1,
             "in_band": bool(budget.lo <= cost <= budget.hi), "over_budget": round(cost / budget.value, 6),
             "heldout_ce": round(-trace[-1]["score"], 6), "recal_batches": recal_batches,
             "eval_batches": eval_batches, "coarse_above": coarse_above, "coarse_step": coarse_step,
             "coarse_rounds": sum(1 for t in trace[1:] if t["step"] > 1)}
    return sn.make_arch(sn.widths_of(choice), budget, searcher.cfg, searcher.data.info, search=stats)


def _shortlist(supernet: str | None, k: int, steps: int, out: str | None, log) -> Arch:
    """The search's answer and ``k - 1`` draws from its final distributions, each fine-tuned from
    the supernet for ``steps`` batches and scored on the held-out split; the best is kept
    (:func:`dan.shortlist.shortlist_found`, what ``search.shortlist`` does at the end of a search)."""
    from dan.search_result import repaired_argmax
    from dan.shortlist import shortlist_found

    if not out:
        raise UserError("shortlist needs --out: its fine-tunes run in <out>/shortlist")
    searcher, budget = _restore("shortlist", supernet)
    sn = searcher.sn
    start = repaired_argmax(searcher)[3]  # as the search ended
    choice, stats = shortlist_found(searcher, start, os.path.abspath(supernet), k, steps,
                                    os.path.join(out, "shortlist"), log=log)
    stats = {"method": "shortlist", "supernet": os.path.abspath(supernet), **stats}
    return sn.make_arch(sn.widths_of(choice), budget, searcher.cfg, searcher.data.info, search=stats)
