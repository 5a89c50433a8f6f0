"""Budgets of the small network: ``--budget-flops`` / ``--budget-params``, absolute or relative.

A budget is read once, against the cost range of the search space's small network (narrowest to
widest candidate widths), and carries the tolerance band the discretized network must land in.

>>> b = resolve_budget(type("S", (), {"budget_flops": "25%", "budget_params": None, "band": 0.03})(),
...                    {"flops": (10, 1000), "params": (1, 50)})
>>> (b.kind, b.value, b.relative, b.lo, b.hi)
('flops', 250, 0.25, 242.5, 257.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dan.cost import format_count, parse_count
from dan.errors import UserError


@dataclass
class Budget:
    kind: str  # flops | params
    value: int
    relative: float | None  # the fraction of the widest small network, when given as "NN%"
    band: float

    @property
    def lo(self) -> float:
        return self.value * (1 - self.band)

    @property
    def hi(self) -> float:
        return self.value * (1 + self.band)


def resolve_budget(scfg, extremes: dict, what: str = "this search space") -> Budget:
    """Read ``--budget-flops`` / ``--budget-params`` (absolute or ``NN%`` of the widest small
    network) and check it is feasible for ``what`` (named in the error)."""
    given = [(k, v) for k, v in (("flops", scfg.budget_flops), ("params", scfg.budget_params)) if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one budget: --budget-flops (e.g. 1.6G or 25%) or --budget-params "
                        "(e.g. 1.8M or 40%)")
    kind, text = given[0]
    lo, hi = extremes[kind]
    relative = None
    if isinstance(text, str) and text.strip().endswith("%"):
        try:
            relative = float(text.strip()[:-1]) / 100.0
        except ValueError:
            raise UserError(f"cannot read the budget '{text}': write e.g. 25%")
        if not (math.isfinite(relative) and 0 < relative <= 1):
            raise UserError(f"budget '{text}' must be a percentage in (0%, 100%], e.g. 25%")
        value = int(round(relative * hi))
    else:
        value = parse_count(text)
    if not (isinstance(scfg.band, (int, float)) and 0 < scfg.band < 0.5):
        raise UserError(f"search.band must be in (0, 0.5), got {scfg.band}")
    if value < lo or value > hi:
        raise UserError(
            f"budget {format_count(value)} {kind} is infeasible: the small network of {what} "
            f"ranges from {format_count(lo)} to {format_count(hi)} {kind} "
            f"({100 * lo / hi:.1f}% to 100% of the widest); choose a budget in that range")
    return Budget(kind, value, relative, scfg.band)
