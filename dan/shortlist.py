"""The last step of a DAN search by short fine-tunes: a shortlist of widths drawn from the search's
final distributions, each fine-tuned briefly from the supernet and scored on the held-out split;
the best one is kept (issue 9).

Why not the supernet's own scores: the tenth session found that among good widths the supernet's
held-out cross-entropy (what :mod:`dan.refine` and the greedy baseline rank by) orders the
retrained networks no better than chance (8 of 15 pairs), because a weight-sharing supernet trained
for a few epochs scores its sub-networks at 76-80 % where the retrained ones reach 88 %. The
nineteenth session measured a cheaper proxy that starts as the retrain does: each network cut from
the supernet, trained for 150 batches with the retrain's recipe (adjoint loss, the search's
optimizer, warm-up and cosine squeezed into those batches) on the search's weight split, then
scored on its held-out split. Its DAN − uniform difference followed the retrained one at r = 0.43
(10 % FLOPs, ten seeds) and r = 0.67 (25 %, seven seeds); the supernet's own ranking had shown
none. This module ranks the search's likeliest widths by it. Measured (docs/search-history.md, 25 % FLOPs,
five seeds, 6 candidates) it retrained level with the search's own answer (−0.00 on average): the
fine-tune ranks the search's likely widths, but not as the 3-epoch retrain does. Off by default.

The candidates: the search's answer (the repaired argmax) first, then draws from the final
distributions (each group its own draw), each repaired into the band by the search's own repair
and kept when new. No image of the held-out split is trained on: the split is the search's own
(the same seed and fraction), whose images only ever drove the architecture logits.

:func:`draw_shortlist` is pure (tested with hand-made costs); :func:`finetune_score` runs one short
adjoint retrain in a folder of its own (``<out>/shortlist/cK``) and returns its held-out score.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
from typing import Callable, Sequence

from dan.arch import load_arch
from dan.supernet import repair


def draw_shortlist(start: Sequence[int], probs: Sequence[Sequence[float]], cost_fn: Callable[[list], float],
                   lo: float, hi: float, k: int, rng: random.Random, *, tries: int = 50) -> list[list[int]]:
    """``start`` (the search's in-band answer) and up to ``k - 1`` other in-band choices drawn from
    ``probs`` (per group, the probabilities of its candidates), each draw repaired into
    ``[lo, hi]`` by :func:`dan.supernet.repair`; at most ``tries * k`` draws, duplicates dropped."""
    logp = [[math.log(p + 1e-12) for p in ps] for ps in probs]
    cands = [list(range(len(ps))) for ps in probs]  # repair only needs how many candidates each has
    found = [list(start)]
    seen = {tuple(start)}
    for _ in range(tries * k):
        if len(found) >= k:
            break
        draw = [rng.choices(range(len(ps)), weights=ps)[0] for ps in probs]
        choice = repair(draw, cands, logp, cost_fn, lo, hi)
        if lo <= cost_fn(choice) <= hi and tuple(choice) not in seen:
            seen.add(tuple(choice))
            found.append(choice)
    return found


def finetune_config(search_cfg, arch_path: str, supernet: str, steps: int, out: str):
    """The config of one candidate's short fine-tune: the retrain's recipe (adjoint, the search's
    optimizer and learning rate) from ``supernet`` cut to the candidate, ``steps`` batches of the
    search's weight split, evaluated on as many batches of its held-out split (no latency timing)."""
    from dan.config import SEARCH_HOLDOUT
    from dan.retrain import retrain_config

    base = copy.deepcopy(search_cfg)
    holdout = base.data.holdout or SEARCH_HOLDOUT  # the search's split: same seed, same fraction
    base.train.epochs, base.train.limit_batches = 1, steps
    base.train.latency_batches, base.train.init_from = [], supernet
    return retrain_config(arch_path, "adjoint", base, validation=holdout, out=out, init="supernet")


def finetune_score(search_cfg, arch, supernet: str, steps: int, folder: str) -> dict:
    """Fine-tune ``arch`` (a :class:`dan.arch.Arch`) from ``supernet`` for ``steps`` batches in
    ``folder`` and return the small network's held-out ``{"top1", "ce"}``."""
    from dan.engine import train
    from dan.monitor import Monitor

    run = os.path.join(folder, "run")
    done = os.path.join(run, "summary.json")
    path = os.path.join(folder, "arch.json")
    if os.path.isfile(done) and os.path.isfile(path) and load_arch(path).widths == arch.widths:
        # scored by an earlier, interrupted shortlist of the same search (the same widths here)
        with open(done) as f:
            small = json.load(f)["networks"]["small"]
        return {"top1": small["top1"], "ce": small["ce"]}
    if os.path.isdir(run):  # a fine-tune of ours that was stopped part-way (or of other widths): again
        shutil.rmtree(run)
    os.makedirs(folder, exist_ok=True)
    arch.save(path)
    cfg = finetune_config(search_cfg, path, supernet, steps, run)
    summary = train(cfg, Monitor(None, console=False, tensorboard=False, enabled=False))
    small = summary.rows["small"]
    return {"top1": small["top1"], "ce": small["ce"]}


def shortlist_found(searcher, start: list, supernet: str, k: int, steps: int, folder: str,
                    log=None) -> tuple[list, dict]:
    """The shortlist of a :class:`~dan.search.Searcher` that ended on ``start`` (its in-band answer):
    ``start`` and ``k - 1`` draws from its final distributions, each fine-tuned from ``supernet``
    (its weights as they ended) for ``steps`` batches in ``<folder>/c<i>`` and scored on the held-out
    split. Returns the best (held-out top-1, then CE, then the earlier: the search's answer first)
    and the statistics ``arch.json`` keeps."""
    from dan.checkpoint import check_no_links
    from dan.seed import derive

    sn, cfg, b = searcher.sn, searcher.cfg, searcher.budget
    probs = [p.detach().cpu().double().tolist() for p in sn.arch.probs()]
    rng = random.Random(derive(cfg.seed, "shortlist"))
    choices = draw_shortlist(start, probs, searcher.cost.of, b.lo, b.hi, k, rng)
    scored = []
    for i, choice in enumerate(choices):
        arch = sn.make_arch(sn.widths_of(choice), b, cfg, searcher.data.info)
        # its run folder is removed and written: not through a link below the search's (or --out's) folder
        check_no_links(os.path.join(folder, f"c{i}", "run"), os.path.dirname(os.path.abspath(folder)))
        score = finetune_score(cfg, arch, supernet, steps, os.path.join(folder, f"c{i}"))
        scored.append({"widths": sn.widths_of(choice), "heldout_top1": score["top1"],
                       "heldout_ce": round(score["ce"], 6),
                       "over_budget": round(searcher.cost.of(choice) / b.value, 6)})
        if log:
            log(f"shortlist {i}: held-out top-1 {100 * score['top1']:.2f}% (CE {score['ce']:.4f}), "
                f"{scored[-1]['over_budget']:.3f} of the budget")
    best = min(range(len(scored)), key=lambda i: (-scored[i]["heldout_top1"], scored[i]["heldout_ce"], i))
    choice = choices[best]
    return choice, {"steps": steps, "picked": best, "in_band": bool(b.lo <= searcher.cost.of(choice) <= b.hi),
                    "over_budget": scored[best]["over_budget"], "candidates": scored}
