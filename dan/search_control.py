"""What steers a DAN search's architecture steps: the temperature schedule, the budget multiplier μ
and the settle phase (see :mod:`dan.search` for the method), and the costs they are steered by
(:class:`BudgetCost`: an architecture's cost in the budget's unit, and its expectation).

:class:`SearchControl` holds no tensors and reads no data: it is told the step, the costs over the
budget and how committed the distributions are, and it answers τ, the penalty weight, and whether
the architecture steps are over. Kept apart from :class:`~dan.search.Searcher` so the control law
can be read, tested and changed without the training loop around it.
"""

from __future__ import annotations

import math
from typing import Callable

# The settle phase's multiplier steps are in proportion to max(|mu|, this): near mu = 0 a purely
# relative step crawls, and an argmax committed below the band needs mu < 0 (a reward for cost)
# to widen a group (with a floor of 0.05, seed 0 at 10 % ended at mu 0.02 and 0.93 B).
SETTLE_MU_FLOOR = 0.25


class SearchControl:
    """τ, μ and the settle phase of one search (``s``: the config's search section)."""

    def __init__(self, s, steps_per_epoch: int, total_steps: int):
        self.s, self.steps_per_epoch, self.total_steps = s, steps_per_epoch, total_steps
        self.mu = 0.0
        self.settled_at: int | None = None  # the settle-phase step at which the argmax first landed
        self.settle_side = 0  # the side of the band the argmax was last on in the settle phase (-1, +1)
        self.settle_scale = 1.0  # halved each time the argmax jumps across the band (regrown: settle_regrow)
        self.undone = 0  # architecture steps undone after the landing (settle_until "guarded")
        self.snapped: list[str] | None = None  # groups the deadline's landing moved (settle_snap)
        self.vernier_from: int | None = None  # the step the vernier deadline started (settle_vernier)

    # --- schedule ------------------------------------------------------------------------------
    def arch_phase(self) -> tuple[int, int]:
        """(first architecture step, steps from it to the last one)."""
        first = math.ceil(self.s.warmup_epochs) * self.steps_per_epoch
        return first, self.total_steps - first - 1

    def tau(self, epoch: int, step: int | None = None) -> float:
        """Temperature of the architecture step ``step`` (global) in ``epoch``."""
        s = self.s
        if s.tau_anneal == "epoch":
            k = max(0, epoch - math.ceil(s.warmup_epochs))
            return max(s.tau_min, s.tau0 * s.tau_decay ** k)
        first, span = self.arch_phase()
        if step is None:
            step = max(first, epoch * self.steps_per_epoch)
        frac = min(1.0, max(0.0, (step - first) / max(1.0, span * (1.0 - s.settle))))  # settle holds tau_min
        return s.tau0 * (min(s.tau_min, s.tau0) / s.tau0) ** frac

    def settling(self, step: int) -> bool:
        """Whether architecture step ``step`` (global) is in the final settle phase."""
        s = self.s
        if s.settle <= 0 or s.tau_anneal != "step":
            return False
        first, span = self.arch_phase()
        return step >= first + span * (1.0 - s.settle)

    def snap_due(self, step: int) -> bool:
        """Whether architecture step ``step`` (global) is past the settle phase's deadline for the
        landing (``settle_snap``) with the argmax never landed and no landing tried yet."""
        s = self.s
        if s.settle_snap >= 1.0 or self.settled_at is not None or self.snapped is not None:
            return False
        return self._past(step, s.settle_snap)

    def _past(self, step: int, frac: float) -> bool:
        """Whether ``step`` is in the settle phase, ``frac`` of the way through it or further."""
        if not self.settling(step):
            return False
        first, span = self.arch_phase()
        return step >= first + span * (1.0 - self.s.settle + self.s.settle * frac)

    def fine_only(self, step: int) -> bool:
        """Whether the cost penalty reaches only the fine groups at ``step``: ``settle_fine`` in the
        settle phase, or from the vernier's deadline on (``settle_vernier``: the argmax not landed
        that far through the settle phase). The first step past that deadline starts the vernier:
        the settle steps restart at full size (the bisection had frozen them)."""
        s = self.s
        if s.settle_fine and self.settling(step):
            return True
        if self.vernier_from is None and s.settle_vernier < 1.0 and self.settled_at is None \
                and self._past(step, s.settle_vernier):
            self.vernier_from, self.settle_scale, self.settle_side = step, 1.0, 0
        return self.vernier_from is not None

    def arch_active(self, epoch: int) -> bool:
        return epoch >= math.ceil(self.s.warmup_epochs)

    def arch_steps_over(self) -> bool:
        """Whether the settle phase has ended the architecture steps (landed, settle_until "landed")."""
        return self.settled_at is not None and self.s.settle_until == "landed"

    def guarding(self) -> bool:
        """Whether an architecture step that takes the argmax out of the band is to be undone
        (landed, settle_until "guarded")."""
        return self.settled_at is not None and self.s.settle_until == "guarded"

    # --- the multiplier ------------------------------------------------------------------------
    def cost_target(self) -> float:
        """Where the multiplier drives the watched cost, over the budget: the middle of
        [1 − band, 1] for the expected cost, the budget itself for the blend."""
        return 1.0 if self.s.budget_control == "blend" else 1.0 - self.s.band / 2

    def control(self, step: int) -> str:
        """What the multiplier watches at ``step``: the config's choice, the argmax when settling."""
        return "argmax" if self.settling(step) else self.s.budget_control

    def penalty_weight(self, step: int, expected: float) -> float:
        """The weight of E[cost]/B in the architecture loss (μ, plus the proportional term)."""
        if self.control(step) == "argmax":
            return self.mu
        return self.mu + self.s.multiplier_p * (expected - self.cost_target())  # PI: reacts at once

    def update(self, step: int, expected: Callable[[], float], argmax: Callable[[], float],
               committed: Callable[[], float]) -> None:
        """Move μ after the architecture step ``step``. The costs are over the budget, taken after
        the step: ``expected()`` E[cost], ``argmax()`` the argmax network's, ``committed()`` the
        mean largest probability (asked only when the control law needs them)."""
        s = self.s
        control = self.control(step)
        if control in ("expected", "blend"):
            # dual ascent on the expected cost towards the middle of [B(1-band), B]; or ("blend")
            # on the expected cost blended into the argmax network's as the distributions commit,
            # towards B: the argmax ends below E[cost] (the leftover mass sits on wider
            # candidates), so the blend's balance puts it a little under B, inside the band
            watched = expected()
            if s.budget_control == "blend":
                w = committed()
                watched = (1 - w) * watched + w * argmax()
            self.mu += s.multiplier_lr / self.steps_per_epoch * (watched - self.cost_target())
        else:
            # dual ascent on the argmax architecture's cost, with a dead band: [B(1-band), B] for
            # the whole search (the first design), the band itself in the settle phase
            viol = argmax() - 1.0
            if not self.settling(step):  # the first design: dead band [B(1-band), B]
                if viol > 0 or viol < -s.band:
                    self.mu += s.multiplier_lr / self.steps_per_epoch * viol
            elif abs(viol) > s.band:  # settling: the band, steps in proportion to mu
                side = 1 if viol > 0 else -1
                if s.settle_sign_reset and self.vernier_from is not None and self.mu * side < 0:
                    self.mu = 0.0  # the penalty pushed the argmax further out: start from none
                if self.settle_side and side != self.settle_side:
                    self.settle_scale /= 2  # jumped over the band: come back more slowly (bisection)
                elif self.settle_side:  # still on the same side: regrow (off at settle_regrow 1)
                    self.settle_scale = min(1.0, self.settle_scale * s.settle_regrow)
                self.settle_side = side
                n = max(1.0, (self.arch_phase()[1] + 1) * s.settle)
                self.mu += self.settle_scale * s.settle_gain * viol * max(abs(self.mu), SETTLE_MU_FLOOR) / n
            elif self.settled_at is None:
                self.settled_at = step  # landed: no more architecture steps, unless settle_until "end"
        self.mu = max(-s.multiplier_max, min(s.multiplier_max, self.mu))

    # --- checkpoints (the keys the search checkpoint has always used) ---------------------------
    def state(self) -> dict:
        return {"multiplier": self.mu, "settled_at": self.settled_at, "settle_side": self.settle_side,
                "settle_scale": self.settle_scale, "settle_undone": self.undone, "settle_snapped": self.snapped,
                "settle_vernier_from": self.vernier_from}

    def load(self, st: dict) -> None:
        self.mu = st["multiplier"]
        self.settled_at = st.get("settled_at")
        self.settle_side, self.settle_scale = st.get("settle_side", 0), st.get("settle_scale", 1.0)
        self.undone = st.get("settle_undone", 0)
        self.snapped = st.get("settle_snapped")
        self.vernier_from = st.get("settle_vernier_from")


class BudgetCost:
    """Costs in the budget's unit (multiply-accumulates, parameters or predicted ms) of the
    supernet ``sn``'s architectures: one architecture's, and the expectation under the width
    distributions (differentiable in the logits). ``over`` variants divide by the budget."""

    def __init__(self, budget, sn, latency=None):
        self.budget, self.sn, self.latency = budget, sn, latency

    def norm(self, flops, params):
        """FLOPs or params (whichever the budget counts) over the budget."""
        return (flops if self.budget.kind == "flops" else params) / self.budget.value

    def expected_over(self, frozen=()):
        """E[cost]/B under the current distributions, a tensor with gradients to the logits (none
        to the groups whose indices are in ``frozen``: their probabilities enter detached)."""
        if self.budget.kind == "latency":
            return self.latency.expected(*self.sn.cost_inputs(frozen)) / self.budget.value
        return self.norm(*self.sn.expected_cost(frozen))

    def coarse_groups(self, choice, band: float) -> set[int]:
        """The groups one of whose one-candidate moves from ``choice`` changes the cost by at least
        the band's width (2·band·B): a move that could jump over the band. Empty if every group
        is that coarse (then no group can land the argmax alone, and none is singled out)."""
        base, width = self.of(choice), 2 * band * self.budget.value
        coarse = set()
        for i, c in enumerate(choice):
            for j in (c - 1, c + 1):
                if 0 <= j < len(self.sn.cands[i]) and abs(self.of(choice[:i] + [j] + choice[i + 1:]) - base) >= width:
                    coarse.add(i)
                    break
        return set() if len(coarse) == len(choice) else coarse

    def of(self, choice) -> float:
        """The cost of one architecture (candidate indices per group)."""
        if self.budget.kind == "latency":
            return self.latency.predict(self.sn.widths_of(choice))
        flops, params = self.sn.cost_of(choice)
        return flops if self.budget.kind == "flops" else params

    def over(self, choice) -> float:
        return self.of(choice) / self.budget.value
