"""The adjoint loss and the λ(t) schedules (paper Def. 1 and Table 13).

``L = CE(y, p) + λ(t) · KL(p ‖ q)`` with p, q the softmax outputs of the big and the small network,
``KL(p‖q) = Σ_i p_i log((p_i + ε)/(q_i + ε))``, ε = 1e-6 as in the paper's code, averaged over the
batch. ``t`` is training progress in [0, 1]; the default ``λ(t) = c · min(4t², 1)`` is zero at the
start (the big network is not yet a reliable teacher) and reaches c at half of training.

>>> lam = schedule("quadratic", c=1.0)
>>> lam(0.0), lam(0.25), lam(0.75)
(0.0, 0.25, 1.0)
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
import torch.nn.functional as F

from dan.errors import UserError

EPS = 1e-6

_SCHEDULES: dict[str, Callable[[float], float]] = {
    "quadratic": lambda t: min(4.0 * t * t, 1.0),
    "cos": lambda t: 1.0 - math.cos(t),  # the paper's "1 − cos(t)" (reaches 0.46 at t = 1)
    "linear": lambda t: t,
    "exp": lambda t: math.exp(t) - 1.0,
    "constant": lambda t: 1.0,
}

SCHEDULES = tuple(_SCHEDULES)


def schedule(name: str = "quadratic", c: float = 1.0) -> Callable[[float], float]:
    """λ(t) = c · f(t) for one of the paper's functions f; t is clamped to [0, 1]."""
    if name not in _SCHEDULES:
        raise UserError(f"unknown λ schedule '{name}': choose one of {', '.join(SCHEDULES)}")
    f = _SCHEDULES[name]
    return lambda t: c * f(min(max(float(t), 0.0), 1.0))


def kl_divergence(big_logits: torch.Tensor, small_logits: torch.Tensor, eps: float = EPS,
                  detach_teacher: bool = False) -> torch.Tensor:
    """Batch mean of ``Σ_i p_i log((p_i+ε)/(q_i+ε))`` (the paper's ε-smoothed KL(p‖q))."""
    p = F.softmax(big_logits.float(), dim=1)
    if detach_teacher:
        p = p.detach()
    q = F.softmax(small_logits.float(), dim=1)
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=1).mean()


def check_loss_inputs(big_logits, small_logits, lam) -> None:
    """Refuse what :func:`adjoint_loss` cannot weigh, in one line that says what to pass: logits that
    are not two tensors of one shape (an audit's big and small networks of other class counts were
    PyTorch's "The size of tensor a (10) must match ..."), a ``lam`` that is not a number (``"x"`` was
    a TypeError from inside the product) or not a finite weight >= 0 (NaN made a NaN loss silently)."""
    if not (isinstance(big_logits, torch.Tensor) and isinstance(small_logits, torch.Tensor)):
        raise UserError(f"adjoint_loss takes the logits as tensors, got a {type(big_logits).__name__} and a "
                        f"{type(small_logits).__name__}: pass the two outputs of an adjoint network "
                        f"(big, small = anet(x))")
    if big_logits.shape != small_logits.shape:
        raise UserError(f"adjoint_loss: big_logits has shape {tuple(big_logits.shape)} and small_logits "
                        f"{tuple(small_logits.shape)}: the two networks' logits must have one shape (batch, classes): "
                        f"pass the two outputs of one adjoint network (big, small = anet(x)), whose small network "
                        f"shares the big one's classifier")
    if isinstance(lam, torch.Tensor) and lam.numel() == 1:
        return  # (a tensor's value is not read here: that would wait for the device every step)
    if not isinstance(lam, numbers.Real):
        raise UserError(f"adjoint_loss: lam must be a number, the KL term's weight lambda(t) (e.g. "
                        f"dan.schedule('quadratic')(t)), got a {type(lam).__name__} ({str(lam)[:40]!r})")
    if not (math.isfinite(lam) and lam >= 0):
        raise UserError(f"adjoint_loss: lam must be a finite weight >= 0 (the KL term's lambda(t)), got {lam}")


def adjoint_loss(big_logits: torch.Tensor, small_logits: torch.Tensor, target: torch.Tensor,
                 lam: float, *, eps: float = EPS, detach_teacher: bool = False,
                 label_smoothing: float = 0.0, return_terms: bool = False):
    """The adjoint loss ``CE(y, p) + lam · KL(p ‖ q)``.

    Args:
        big_logits, small_logits: (N, C) logits of the big and the small network.
        target: (N,) class indices.
        lam: the weight λ(t) of the KL term (see :func:`schedule`).
        detach_teacher: stop the KL gradient from reaching the big network (by default it
            reaches both networks, as in the paper).
        return_terms: also return ``(ce, kl)`` (detached) for logging.

    Returns:
        A scalar tensor (and the terms when asked).
    """
    check_loss_inputs(big_logits, small_logits, lam)
    ce = F.cross_entropy(big_logits, target, label_smoothing=label_smoothing)
    kl = kl_divergence(big_logits, small_logits, eps, detach_teacher)
    loss = ce + lam * kl
    if return_terms:
        return loss, ce.detach(), kl.detach()
    return loss
