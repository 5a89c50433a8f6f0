"""``lowrank``: compression-aware training (Alvarez & Salzmann, NeurIPS 2017).

The base network is trained with a nuclear-norm regularizer on every conv (weight N×C×k×k seen as
Θ ∈ R^{N × C·k·k}) by proximal gradient: every ``prox_every`` optimizer steps,
``Θ ← U·diag(max(σ − lr·τ·prox_every, 0))·Vᵀ`` (singular-value soft-thresholding with the step's
learning rate). At the end every conv keeps the smallest rank r with
``Σ_{i≤r} σ_i² ≥ energy · Σ σ_i²`` and becomes a ``k×k conv C→r`` followed by a ``1×1 conv r→N``
(bias on the second) when that is smaller. The dense network ("big") and the truncated one
("lowrank", the deployable) are both evaluated, counted and timed: accuracy before and after
truncation.

Config (``methods.lowrank``): ``tau`` (default 1e-3), ``energy`` (0.98), ``prox_every`` (10),
``min_size`` (convs with fewer weights are left alone; 0). The paper's exact constants are not
public.

The scale of ``tau`` depends on the optimizer. With SGD a step moves a weight by lr times its
gradient, and a small τ such as the default fits. With Adam a step moves each weight by about lr whatever the
gradient's scale, so the threshold needs τ of order 1: on the Fashion-MNIST suite (Adam, lr 0.003,
3 epochs) τ = 0.002 left every conv at full rank; τ = 1 keeps about 61K of 176K parameters, and
the truncation costs about 2 points (docs/results.md). ``summary.json`` records the rank kept per conv
(``lowrank_ranks``), and a run where no conv got smaller says so on stderr.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from dan.errors import UserError
from dan.methods.common import method_config, traced
from dan.methods.registry import register_method
from dan.methods.standard import Standard


@dataclass
class LowRankConfig:
    tau: float = 1e-3
    energy: float = 0.98
    prox_every: int = 10
    min_size: int = 0

    def check(self):
        if self.tau < 0 or not 0 < self.energy <= 1 or self.prox_every < 1 or self.min_size < 0:
            raise UserError("methods.lowrank: tau >= 0, energy in (0, 1], prox_every >= 1, min_size >= 0")


def _convs(net: nn.Module, min_size: int = 0):
    return [(n, m) for n, m in net.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and m.weight.numel() >= min_size
            and min(m.out_channels, m.weight[0].numel()) > 1]


@torch.no_grad()
def svt(weight: torch.Tensor, threshold: float) -> None:
    """Singular-value soft-thresholding of a conv weight, in place."""
    n = weight.shape[0]
    theta = weight.reshape(n, -1)
    u, s, vh = torch.linalg.svd(theta, full_matrices=False)
    s = (s - threshold).clamp_min_(0)
    weight.copy_(((u * s) @ vh).reshape(weight.shape))


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i≤r} σ_i² ≥ energy · Σ σ_i² (at least 1)."""
    e = (s * s).cumsum(0)
    if e[-1] <= 0:
        return 1
    return int(torch.searchsorted(e / e[-1], torch.tensor(energy, dtype=e.dtype)).item()) + 1


class Factorized(nn.Sequential):
    """k×k conv C→r then 1×1 conv r→N: the truncated form of one conv."""


@torch.no_grad()
def truncate(net: nn.Module, energy: float, min_size: int = 0) -> tuple[nn.Module, dict]:
    """A copy of ``net`` with each conv replaced by its energy-truncated factorization when that has
    fewer parameters; returns the network and the rank kept per conv."""
    net = copy.deepcopy(net)
    ranks = {}
    for name, m in _convs(net, min_size):
        n, c, kh, kw = m.weight.shape
        u, s, vh = torch.linalg.svd(m.weight.reshape(n, -1), full_matrices=False)
        r = min(energy_rank(s, energy), len(s))
        ranks[name] = r
        if r * (c * kh * kw + n) >= n * c * kh * kw:
            continue  # the factorization would not be smaller
        first = nn.Conv2d(c, r, (kh, kw), m.stride, m.padding, m.dilation, bias=False,
                          device=m.weight.device, dtype=m.weight.dtype)
        second = nn.Conv2d(r, n, 1, bias=m.bias is not None, device=m.weight.device, dtype=m.weight.dtype)
        first.weight.copy_((s[:r, None] * vh[:r]).reshape(r, c, kh, kw))
        second.weight.copy_(u[:, :r].reshape(n, r, 1, 1))
        if m.bias is not None:
            second.bias.copy_(m.bias)
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, Factorized(first, second))
    return net, ranks


@register_method("lowrank")
class LowRank(Standard):
    config = LowRankConfig
    outputs = ("big",)
    deployed = "lowrank"

    def build(self):
        self.lcfg = method_config(self.cfg, "lowrank", LowRankConfig)
        self.outputs, self.deployed = ("big",), "lowrank"
        self.model = traced(self.base_network()).to(self.device)
        return self.model

    def after_step(self, step: int) -> None:
        c = self.lcfg
        if (step + 1) % c.prox_every or c.tau == 0:
            return
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else self.cfg.train.lr
        for _, m in _convs(self.model, c.min_size):
            svt(m.weight, lr * c.tau * c.prox_every)

    def networks(self):
        small, self.ranks = truncate(self.model.eval(), self.lcfg.energy, self.lcfg.min_size)
        if not any(isinstance(m, Factorized) for m in small.modules()):
            warnings.warn(f"lowrank: no conv became smaller at energy {self.lcfg.energy} (every one kept "
                          f"(nearly) full rank): raise methods.lowrank.tau (of order 1 with Adam) or lower "
                          f"methods.lowrank.energy", stacklevel=2)
        return {"big": self.model, "lowrank": small.eval()}

    def summary_extra(self) -> dict:
        full = {n: min(m.weight.shape[0], m.weight[0].numel()) for n, m in _convs(self.model, self.lcfg.min_size)}
        return {"lowrank_ranks": {n: [r, full[n]] for n, r in getattr(self, "ranks", {}).items()}}
