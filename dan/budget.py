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
    kind: str  # flops | params | latency
    value: int | float  # a count, or milliseconds for a latency
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
    given = [(k, v) for k, v in (("flops", scfg.budget_flops), ("params", scfg.budget_params),
                                 ("latency", getattr(scfg, "budget_latency", None))) if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one budget: --budget-flops (e.g. 1.6G or 25%), --budget-params "
                        "(e.g. 1.8M or 40%) or --budget-latency (e.g. 2.5ms or 40%)")
    kind, text = given[0]
    if kind not in extremes:
        raise UserError("a latency budget needs this device's latency model: only tools/search.py takes "
                        "--budget-latency; give --budget-flops or --budget-params here")
    lo, hi = extremes[kind]
    relative = None
    if isinstance(text, str) and text.strip().endswith("%"):
        try:
            relative = float(text.strip()[:-1]) / 100.0
        except ValueError:
            raise UserError(f"cannot read the budget '{text}': write e.g. 25%")
        if not (math.isfinite(relative) and 0 < relative <= 1):
            raise UserError(f"budget '{text}' must be a percentage in (0%, 100%], e.g. 25%")
        value = relative * hi if kind == "latency" else int(round(relative * hi))
    elif kind == "latency":
        value = parse_ms(text)
    else:
        value = parse_count(text)
    if not (isinstance(scfg.band, (int, float)) and 0 < scfg.band < 0.5):
        raise UserError(f"search.band must be in (0, 0.5), got {scfg.band}")
    # feasible when its band reaches the space's range: a budget just below the narrowest network
    # (118,303 against 118,304 FLOPs) was refused though the narrowest lands inside its band
    if value * (1 + scfg.band) < lo or value * (1 - scfg.band) > hi:
        fmt = (lambda v: f"{v:.3g} ms") if kind == "latency" else (lambda v: f"{format_count(v)} {kind}")
        if kind != "latency" and format_count(value) in (format_count(lo), format_count(hi)):
            fmt = lambda v: f"{int(v):,} {kind}"  # "118.30K is infeasible: ranges from 118.30K" said nothing
        raise UserError(
            f"budget {fmt(value)} is infeasible (±{100 * scfg.band:g}% band): the small network of {what} ranges from {fmt(lo)} "
            f"to {fmt(hi)} ({100 * lo / hi:.1f}% to 100% of the widest)"
            + (" as predicted on this device" if kind == "latency" else "") + "; choose a budget in that range"
            + (_share_hint(text) if relative is None and kind != "latency" and value <= 100 else ""))
    return Budget(kind, value, relative, scfg.band)


def _share_hint(text) -> str:
    """A bare number up to 100 given as a FLOPs or params budget: the share of the widest it may mean."""
    try:
        x = float(text)
    except (TypeError, ValueError):
        return ""
    share = 100 * x if 0 < x <= 1 else x
    return f" (a share of the widest is written with %: {share:g}%)" if 0 < share <= 100 else ""


def parse_ms(text) -> float:
    """A latency in milliseconds: ``2.5ms``, ``2.5 ms``, ``800us``, ``0.002s`` or a bare number (ms)."""
    t = str(text).strip().lower().replace(" ", "")
    scale = 1.0
    for unit, s in (("ms", 1.0), ("us", 1e-3), ("µs", 1e-3), ("s", 1e3)):
        if t.endswith(unit):
            t, scale = t[: -len(unit)], s
            break
    try:
        v = float(t) * scale
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"cannot read the latency budget '{text}': write e.g. 2.5ms, 800us or 40%")
    return v
