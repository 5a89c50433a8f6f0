"""DAN's supernet: candidate widths per group, architecture logits, expected cost, discretization.

The supernet is an adjoint network whose small path can take, for every searchable width group g,
one of the candidate widths ``w_g1 < … < w_gK`` (fractions of the group's full width from the
search space). The architecture is a categorical distribution per group, ``P_g = softmax(θ_g)``.

* **Sampling** (fresh Gumbel noise every step). A weight step samples one width per group
  (``argmax(θ + G)``, i.e. a draw from ``P_g``) and runs the small path on tensors sliced to it. An
  architecture step draws ``π_g = softmax((θ_g + G)/τ)`` over the ``arch_samples`` candidates with
  the largest ``θ + G`` (Gumbel top-k: a draw without replacement; TAS-style), runs ONE conv per
  layer at the widest of them and multiplies its output by the channel mask
  ``m_g[c] = Σ_k π_gk · [c < w_gk]`` (FBNetV2/TAS). ``arch_samples = 0`` mixes all candidates
  (FBNetV2 exactly, at the full width's cost).
* **Cost** (:class:`CostTable`). The layer table of ``dan.count`` on the big network, each layer
  mapped to its input and output groups. The cost of widths ``w`` is a pure function
  (``unit · w_in · w_out`` per dense conv, ``unit · q · w`` per grouped conv tied to one group,
  ``2·w`` per BatchNorm…), so the cost of a one-hot architecture equals ``dan.count`` of the
  network that retrain builds, exactly, and the expected cost under ``P`` is differentiable.
* **Discretization**: argmax per group, then :func:`repair` moves the fewest groups needed to land
  inside the budget band.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from dan.adjoint import AdjointNet, extract_big
from dan.cost import count_layers
from dan.errors import UserError

DENSE, TIED, FIXED = "dense", "tied", "fixed"


def candidate_widths(full: int, quantum: int, fractions) -> list[int]:
    """Candidate widths of a group: ``f · full`` for f in ``fractions``, rounded to a multiple of 8
    when the group is wide enough for 8 to separate the candidates (else of the group quantum)."""
    step = quantum
    if full % 8 == 0 and full // 8 >= len(fractions) and 8 % quantum == 0:
        step = 8
    widths = set()
    for f in fractions:
        w = max(step, int(round(f * full / step)) * step)
        widths.add(min(w, full))
    return sorted(widths)


@dataclass
class _Layer:
    """One layer of the cost table. A side (input or output channels) is a tuple of parts
    ``(index, coef, fixed)``: one group, the groups of a concatenation side by side, or a multiple
    of one group (a shuffle, a chunk: ``dan.graph.Segments``); ``index`` points into the searchable
    groups, or is -1 for a part of ``fixed`` width. The side's width is ``sum(coef · width)``."""

    name: str
    kind: str  # dense | tied | fixed (both sides fixed, or not a width-dependent layer)
    gin: tuple  # parts of the input side
    gout: tuple  # parts of the output side
    flops_unit: float  # flops = unit · a(w_in) · b(w_out) (see CostTable.cost)
    params_unit: float
    bias_unit: float  # bias / BN-affine params: unit · b(w_out)
    const_flops: float = 0.0
    const_params: float = 0.0


_UNIT = ((-1, 1.0, 1),)  # a side that does not scale with any width


def _side(widths, parts: tuple):
    """The width of one side of a layer: the sum over its parts."""
    total = 0
    for i, c, f in parts:
        total = total + c * (widths[i] if i >= 0 else f)
    return total


class CostTable:
    """FLOPs and params of the small network as a function of the searchable groups' widths."""

    def __init__(self, anet: AdjointNet, input_shape: tuple, searchable: list):
        index = {g.name: i for i, g in enumerate(searchable)}
        groups = {g.name: g for g in anet.groups}
        self.searchable = searchable
        self.layers: list[_Layer] = []
        big = count_layers(extract_big(anet), input_shape)
        self.big_flops, self.big_params = big.flops, big.params

        def side(names):  # -> (parts, full width)
            named = names if isinstance(names, tuple) else ((names, 1),)
            parts = tuple((index.get(n, -1), float(c), groups[n].full) for n, c in named)
            return parts, int(sum(c * groups[n].full for n, c in named))

        modules = dict(anet.body.named_modules())
        for l in big.layers:
            if l.name not in anet.layer_groups:  # parameters outside any width group: constant
                self.layers.append(_Layer(l.name, FIXED, (), (), 0, 0, 0, l.flops, l.params))
                continue
            gi_names, go_names, mult = anet.layer_groups[l.name]
            gi, fin = side(gi_names)
            go, fout = side(go_names)
            if isinstance(modules.get(l.name), nn.Conv1d):  # along the channels (ECA): MACs per channel
                self.layers.append(_Layer(l.name, TIED, _UNIT, go, l.flops / fout, 0, 0, const_params=l.params))
                continue
            if l.kind in ("bn", "other"):  # per-channel parameters (BN and LN affine, layer scale)
                self.layers.append(_Layer(l.name, DENSE, _UNIT, go, 0, 0, l.params / fout))
                continue
            tied = l.groups > 1
            if tied:  # grouped conv tied to one group: q inputs per group stay, the groups narrow;
                # MACs and weights per output channel are constant (q·k²·H·W and q·k²). (Until
                # 2026-12-06 the MACs were divided by q too: every grouped conv with q > 1 —
                # ResNeXt, RegNet — was counted at 1/q of its MACs; depthwise convs, q = 1, were right.)
                flops_unit = l.flops / fout
                params_unit = l.weight_params / fout
                self.layers.append(_Layer(l.name, TIED, _UNIT, go, flops_unit, params_unit,
                                          l.bias_params / fout))
                continue
            in_units = fin * mult  # features per input channel (flatten)
            flops_unit = l.flops / (in_units * l.c_out) * mult
            params_unit = l.weight_params / (fin * fout)
            self.layers.append(_Layer(l.name, DENSE, gi, go, flops_unit, params_unit,
                                      l.bias_params / fout))

    # -- exact cost of integer widths ----------------------------------------------------------
    def cost(self, widths: list) -> tuple[int, int]:
        """(flops, params) for integer widths of the searchable groups (in their order)."""
        flops = params = 0.0
        for l in self.layers:
            if l.kind == FIXED:
                flops += l.const_flops
                params += l.const_params
                continue
            b = _side(widths, l.gout)
            if l.kind == TIED:
                flops += l.flops_unit * b
                params += l.params_unit * b + l.bias_unit * b + l.const_params
                continue
            a = _side(widths, l.gin)
            flops += l.flops_unit * a * b
            params += l.params_unit * a * b + l.bias_unit * b
        return int(round(flops)), int(round(params))

    # -- expected cost under a distribution (differentiable) -----------------------------------
    def expected(self, probs: list, cands: list) -> tuple[torch.Tensor, torch.Tensor]:
        """E[flops], E[params] when group i takes width ``cands[i][k]`` with prob ``probs[i][k]``."""
        mean = [p @ c for p, c in zip(probs, cands)]
        second = [p @ (c * c) for p, c in zip(probs, cands)]
        flops = torch.zeros((), dtype=torch.float64)
        params = torch.zeros((), dtype=torch.float64)
        for l in self.layers:
            if l.kind == FIXED:
                flops = flops + l.const_flops
                params = params + l.const_params
                continue
            b = _side(mean, l.gout)
            if l.kind == TIED:
                flops = flops + l.flops_unit * b
                params = params + (l.params_unit + l.bias_unit) * b + l.const_params
                continue
            # E[a·b] = sum over input and output parts of E[a_i·b_j]: independent groups multiply
            # their means; the same group on both sides gives E[w²], not E[w]²
            ab = 0.0
            for i, ci, fi in l.gin:
                for j, cj, fj in l.gout:
                    if i >= 0 and i == j:
                        ab = ab + ci * cj * second[i]
                    else:
                        ab = ab + ci * cj * (mean[i] if i >= 0 else fi) * (mean[j] if j >= 0 else fj)
            flops = flops + l.flops_unit * ab
            params = params + l.params_unit * ab + l.bias_unit * b
        return flops, params


class ArchParams(nn.Module):
    """Architecture logits, one vector per searchable group (zeros: uniform)."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(k)) for k in sizes])

    def probs(self) -> list[torch.Tensor]:
        return [torch.softmax(t, 0) for t in self.logits]

    def argmax(self) -> list[int]:
        return [int(torch.argmax(t)) for t in self.logits]


class Supernet:
    """Binds an adjoint network, its candidate widths, the logits and the cost table."""

    def __init__(self, anet: AdjointNet, fractions, input_shape: tuple):
        self.anet = anet
        self.groups = anet.searchable_groups()
        if not self.groups:
            raise UserError("the network has no searchable width group")
        self.cands = [candidate_widths(g.full, g.quantum, fractions) for g in self.groups]
        self.cand_tensors = [torch.tensor(c, dtype=torch.float64) for c in self.cands]
        self.arch = ArchParams([len(c) for c in self.cands])
        self.table = CostTable(anet, input_shape, self.groups)
        self.input_shape = input_shape
        self.deploy_layout = None  # the layout its extracted networks deploy in (dan.latency.small_network)

    # -- widths of the small path --------------------------------------------------------------
    def set_widths(self, choice: list[int]) -> None:
        """Hard widths: candidate index per group; no masks."""
        for g, c, k in zip(self.groups, self.cands, choice):
            g.width, g.mask = c[k], None

    def widths_of(self, choice: list[int]) -> list[int]:
        return [c[k] for c, k in zip(self.cands, choice)]

    def sample_hard(self, uniform: bool = False) -> list[int]:
        """One candidate per group, drawn from softmax(θ) with Gumbel noise (argmax(θ + G)), or
        uniformly when ``uniform`` (the logits are ignored)."""
        with torch.no_grad():
            if uniform:
                return [int(torch.randint(len(c), (1,))) for c in self.cands]
            return [int(torch.argmax(t + _gumbel(t.shape, t.device))) for t in self.arch.logits]

    def extreme_choices(self) -> list[list[int]]:
        """The narrowest and the widest choice (every group's first and last candidate)."""
        return [[0] * len(self.cands), [len(c) - 1 for c in self.cands]]

    def set_soft(self, tau: float, samples: int) -> None:
        """Soft channel masks for an architecture step (differentiable in θ)."""
        for g, c, t in zip(self.groups, self.cands, self.arch.logits):
            noisy = t + _gumbel(t.shape, t.device)
            if samples and samples < len(c):
                idx = torch.topk(noisy.detach(), samples).indices
            else:
                idx = torch.arange(len(c), device=t.device)
            pi = torch.softmax(noisy[idx] / tau, 0)
            widths = torch.tensor([c[int(i)] for i in idx], device=t.device)
            width = int(widths.max())
            channel = torch.arange(width, device=t.device)
            g.width = width
            g.mask = (pi[:, None] * (channel[None, :] < widths[:, None]).to(pi.dtype)).sum(0)

    def clear_masks(self) -> None:
        for g in self.groups:
            g.mask = None

    # -- cost --------------------------------------------------------------------------------
    @torch.no_grad()
    def recalibrate(self, choice: list[int], batches, prep=lambda x: x) -> None:
        """Re-estimate the small path's BatchNorm statistics at ``choice`` from the images of
        ``batches`` (an iterable of (x, y); widths shared in search leave them a mix of many
        architectures). Leaves the network in training mode."""
        from dan.layers import AdjointBatchNorm2d

        self.set_widths(choice)
        bns = [m for m in self.anet.modules() if isinstance(m, AdjointBatchNorm2d)]
        saved = [m.small.momentum for m in bns]
        for m in bns:
            m.small.reset_running_stats()
            m.small.momentum = None  # cumulative average
        self.anet.train()
        for x, _ in batches:
            self.anet.small(prep(x))
        for m, mom in zip(bns, saved):
            m.small.momentum = mom

    def cost_inputs(self, frozen=()):
        """(probabilities, candidate widths) per group, what an expected cost is computed from: the
        probabilities in double, those of the groups in ``frozen`` detached (no gradient to them)."""
        probs = [p.detach().double() if i in frozen else p.double() for i, p in enumerate(self.arch.probs())]
        return probs, [c.to(p.device) for c, p in zip(self.cand_tensors, probs)]

    def expected_cost(self, frozen=()):
        """E[FLOPs], E[params] under the width distributions (no gradient to the groups in ``frozen``)."""
        return self.table.expected(*self.cost_inputs(frozen))

    def cost_of(self, choice: list[int]) -> tuple[int, int]:
        return self.table.cost(self.widths_of(choice))

    def extremes(self) -> dict:
        lo, hi = (self.cost_of(c) for c in self.extreme_choices())
        return {"flops": (lo[0], hi[0]), "params": (lo[1], hi[1])}

    # -- the result as data --------------------------------------------------------------------
    def make_arch(self, widths: list, budget, cfg, info, **fields):
        """The :class:`dan.arch.Arch` of the small network with ``widths`` (one per searchable
        group, in order; fixed groups stay full) for the search config ``cfg`` and data ``info``.
        ``fields`` fills the optional fields (probabilities, repaired, search). Search and the
        width baselines write their ``arch.json`` through here, so retrain treats them alike."""
        from dan.arch import Arch

        flops, params = self.table.cost(list(widths))
        all_widths = {g.name: g.full for g in self.anet.groups}
        all_widths.update({g.name: int(w) for g, w in zip(self.groups, widths)})
        space_args = dict(cfg.model.args, num_classes=info.num_classes, in_channels=info.in_channels)
        return Arch(space=cfg.model.space, space_args=space_args, input_shape=list(self.input_shape),
                    num_classes=info.num_classes, widths=all_widths, small={"flops": flops, "params": params},
                    big={"flops": self.table.big_flops, "params": self.table.big_params},
                    budget={budget.kind: budget.value, "relative": budget.relative, "band": budget.band},
                    seed=cfg.seed, adjoint={"stem": cfg.search.stem, "unmasked": list(cfg.adjoint.unmasked)},
                    candidates={g.name: c for g, c in zip(self.groups, self.cands)},
                    config=cfg.to_dict(), **fields)


def build_supernet(cfg, info, model=None) -> Supernet:
    """The supernet of a search config: the base network of ``cfg.model`` (or a copy of ``model``)
    converted to an adjoint network (stem ``cfg.search.stem``; the groups ``cfg.adjoint.unmasked``
    names kept at full width, unsearched: an audit found them searched, the paper's ResNet-50
    setting ``unmasked: [layer1]`` among them), candidate fractions from the config or the space."""
    import search_spaces
    from dan.adjoint import to_adjoint
    from dan.models import build_model, check_classes, input_shape

    shape = input_shape(info)
    base = copy.deepcopy(model) if model is not None else build_model(cfg.model, info)
    if model is not None:
        check_classes(base, info, f"the model ({type(model).__name__})")
    anet = to_adjoint(base, alpha=1, stem=cfg.search.stem, unmasked=tuple(cfg.adjoint.unmasked), input_shape=shape,
                      copy_model=False)
    fractions = tuple(cfg.search.fractions or search_spaces.space_fractions(cfg.model.space))
    if not fractions or any(not (isinstance(f, (int, float)) and 0 < f <= 1) for f in fractions):
        raise UserError(f"search.fractions must be numbers in (0, 1], got {list(fractions)}")
    return Supernet(anet, fractions, shape)


def _gumbel(shape, device) -> torch.Tensor:
    u = torch.rand(shape, device=device).clamp_(1e-10, 1.0 - 1e-10)
    return -torch.log(-torch.log(u))


def repair(choice: list[int], cands: list, logp: list, cost_fn, lo: float, hi: float,
           max_moves: int = 200) -> list[int]:
    """Move the fewest groups until ``lo <= cost_fn(choice) <= hi``.

    A move sets one group to another of its candidates. When one move can land inside the band,
    the most probable such move is taken; otherwise the move that brings the cost closest to the
    band's middle per unit of log-probability lost is taken, and the search goes on. Where no one
    move lands or comes closer (coarse candidates: a space of a few groups can have in-band
    networks that no single move reaches), two groups are moved at once (:func:`_pair_move`).
    ``logp[i][k]`` is the log-probability of candidate k of group i. Returns the new choice (the
    input choice when it is already inside the band; every move that does not land brings the cost
    closer to the band's middle, so where none is left the choice is the nearest reached).
    """
    choice = list(choice)
    target = 0.5 * (lo + hi)
    for _ in range(max_moves):
        cur = cost_fn(choice)
        if lo <= cur <= hi:
            break
        landing, landing_dlp = None, -math.inf
        step, step_score = None, 0.0
        moves = []  # (group, candidate, cost change, log-probability change) of every single move
        for i, c in enumerate(cands):
            for k in range(len(c)):
                if k == choice[i]:
                    continue
                new = cost_fn(choice[:i] + [k] + choice[i + 1:])
                dlp = logp[i][k] - logp[i][choice[i]]
                moves.append((i, k, new - cur, dlp))
                if lo <= new <= hi:
                    if dlp > landing_dlp:
                        landing, landing_dlp = (i, k), dlp
                    continue
                gain = abs(cur - target) - abs(new - target)
                score = gain / (1e-6 + max(0.0, -dlp))
                if gain > 0 and score > step_score:
                    step, step_score = (i, k), score
        move = [landing or step] if landing or step else _pair_move(choice, moves, cost_fn, lo, hi)
        if not move:
            break
        for i, k in move:
            choice[i] = k
    return choice


def _pair_move(choice: list[int], moves: list, cost_fn, lo: float, hi: float, exact: int = 256) -> list:
    """Two single moves of different groups made together: the most probable pair that lands in
    the band, else the one that brings the cost closest to the band's middle (if any comes closer).
    Pairs are ranked by their costs' sum (a conv between two moved groups makes the true cost
    differ from it), and the ``exact`` best-ranked are costed exactly."""
    cur, target = cost_fn(choice), 0.5 * (lo + hi)
    if not moves:
        return []
    g, d, lp = (np.array([m[j] for m in moves], dtype=np.float64) for j in (0, 2, 3))
    i, j = np.triu_indices(len(moves), 1)
    keep = g[i] != g[j]
    i, j = i[keep], j[keep]
    far = np.abs(cur + d[i] + d[j] - target)  # the estimated distance from the band's middle
    ranked = np.lexsort((-(lp[i] + lp[j]), far))[:exact]  # nearest estimate first, then the more probable
    best, best_far = [], abs(cur - target)
    landing, landing_lp = [], -math.inf
    for r in ranked:
        a, b = moves[i[r]], moves[j[r]]
        trial = list(choice)
        trial[a[0]], trial[b[0]] = a[1], b[1]
        new = cost_fn(trial)
        if lo <= new <= hi and a[3] + b[3] > landing_lp:
            landing, landing_lp = [(a[0], a[1]), (b[0], b[1])], a[3] + b[3]
        elif abs(new - target) < best_far:
            best, best_far = [(a[0], a[1]), (b[0], b[1])], abs(new - target)
    return landing or best
