"""The last step of a DAN search: the found widths refined by held-out swaps at equal cost (issue 9).

The Gumbel search ends on a committed distribution whose argmax (repaired into the band) is a good
architecture, but its choices between neighbouring widths are settled by a few noisy gradient
steps. AutoSlim, BigNAS and OFA pick their final widths on the trained supernet by held-out
accuracy instead; at 10 % of the FLOPs the suite's greedy slimming, which does only that, beat
uniform widths by more than DAN did (docs/search.md). :func:`refine_choice` does the same
scoring from DAN's answer instead of from the widest network: a local search over *swaps*, one
group one candidate wider and another one to three narrower, that keeps the cost inside the band.

Each round scores every single one-candidate widening and narrowing (``2·groups`` trials), ranks
the in-band swaps by the sum of their two parts' score changes (the first-order estimate), scores
the best ``top`` swaps exactly and takes the best exact one if it beats the current architecture;
in-band single moves are candidates too (their score is exact already). It stops after ``rounds``
rounds or when no candidate improves. A round costs at most ``2·groups + top`` scorings.

:func:`refine_found` wires it to a :class:`~dan.search.Searcher`: the score is minus the small
network's cross-entropy on the held-out part of the training split (BatchNorm statistics
re-estimated per trial), the same score the greedy baseline uses; the test split is never seen.
Pure in ``cost_fn``/``score_fn``, so it is tested with hand-made functions.

Off by default (``search.refine_rounds: 0``): measured in the search suite (docs/search.md, its
"refine" ablation) it lowered the supernet's held-out CE of the found architecture in every seed
(by 2-9 %) but not the retrained network's test error (−0.17 points at 10 % FLOPs, −0.05 at 25 %,
within seed noise): among good architectures the supernet's ranking does not survive retraining.
"""

from __future__ import annotations

from typing import Callable, Sequence


def refine_choice(choice: Sequence[int], cands: Sequence[Sequence[int]], cost_fn: Callable[[list], float],
                  score_fn: Callable[[list], float], lo: float, hi: float, rounds: int, *, top: int = 8,
                  max_narrow: int = 3, log: Callable[[str], None] | None = None) -> tuple[list[int], list[dict]]:
    """Swap widths while the score (higher is better) improves and the cost stays in ``[lo, hi]``.

    ``choice`` holds candidate indices per group (``cands[i]`` are group i's widths); ``cost_fn``
    and ``score_fn`` take such a list of indices. Returns ``(choice, trace)``; the trace has one dict per
    round (``moves``: the groups and index changes taken, ``cost``, ``score``, ``trials``), the
    first for the starting point. A starting point outside the band is returned unchanged.
    """
    choice = list(choice)
    cost = cost_fn(choice)
    score = score_fn(choice)
    trace = [{"round": 0, "moves": [], "cost": cost, "score": score, "trials": 1}]
    if not lo <= cost <= hi:
        return choice, trace
    for r in range(1, rounds + 1):
        trials = 0
        exact: dict[tuple, tuple[float, float]] = {}  # choice -> (cost, score)

        def scored(ch):
            nonlocal trials
            key = tuple(ch)
            if key not in exact:
                trials += 1
                exact[key] = (cost_fn(ch), score_fn(ch))
            return exact[key]

        moved = lambda ch, i, d: ch[:i] + [ch[i] + d] + ch[i + 1:]
        up = {i: scored(moved(choice, i, +1))[1] - score for i in range(len(cands)) if choice[i] < len(cands[i]) - 1}
        down = {j: scored(moved(choice, j, -1))[1] - score for j in range(len(cands)) if choice[j] > 0}
        options = []  # (estimated change, trial)
        for key, (c, s) in exact.items():  # single moves that stay in the band: exact already
            if lo <= c <= hi:
                options.append((s - score, list(key)))
        for i, du in up.items():
            for j, dd in down.items():
                if i == j:
                    continue
                for k in range(1, min(max_narrow, choice[j]) + 1):
                    trial = moved(moved(choice, i, +1), j, -k)
                    if lo <= cost_fn(trial) <= hi:
                        options.append((du + k * dd, trial))
        options.sort(key=lambda o: -o[0])
        for _, trial in options[:top]:
            scored(trial)
        landing = [(s, c, list(key)) for key, (c, s) in exact.items() if lo <= c <= hi]
        best = max(landing) if landing else None
        if best is None or best[0] <= score:
            trace.append({"round": r, "moves": [], "cost": cost, "score": score, "trials": trials})
            break
        moves = [[i, b - a] for i, (a, b) in enumerate(zip(choice, best[2])) if a != b]
        score, cost, choice = best
        trace.append({"round": r, "moves": moves, "cost": cost, "score": score, "trials": trials})
        if log:
            log(f"refine round {r}: " + ", ".join(f"group {i} {d:+d}" for i, d in moves)
                + f", cost {cost:,.0f}, score {score:.4f} ({trials} trials)")
    return choice, trace


def refine_found(searcher, choice: list[int], log=None) -> tuple[list[int], dict]:
    """``choice`` (in the band) refined on ``searcher``'s supernet by its config's ``search.refine_*``
    settings. Returns the choice and the statistics ``arch.json`` records under
    ``search.refine``."""
    s, b, sn = searcher.cfg.search, searcher.budget, searcher.sn

    def score(ch):  # small path only: the big network does not change between trials
        ev = searcher.evaluate(ch, s.refine_recal_batches, s.refine_batches, nets=("small",))
        return -ev["small"]["ce"]

    new, trace = refine_choice(choice, sn.cands, searcher.cost.of, score, b.lo, b.hi,
                               s.refine_rounds, log=log)
    stats = {"rounds": len(trace) - 1, "trials": sum(t["trials"] for t in trace),
             "heldout_ce_before": round(-trace[0]["score"], 6), "heldout_ce_after": round(-trace[-1]["score"], 6),
             "over_budget_before": round(trace[0]["cost"] / b.value, 6),
             "over_budget_after": round(searcher.cost.of(new) / b.value, 6),
             "moved": {g.name: [sn.cands[i][a], sn.cands[i][c]] for i, (g, a, c) in
                       enumerate(zip(sn.groups, choice, new)) if a != c},
             "recal_batches": s.refine_recal_batches, "eval_batches": s.refine_batches}
    return new, stats
