"""The adjoint loss against a direct formula, and the λ(t) schedules of the paper."""

import math

import pytest
import torch

import dan
from dan.loss import SCHEDULES, schedule


def direct(big, small, y, lam, eps=1e-6):
    total = 0.0
    for i in range(big.shape[0]):
        p = [math.exp(v) for v in big[i].tolist()]
        q = [math.exp(v) for v in small[i].tolist()]
        zp, zq = sum(p), sum(q)
        p = [v / zp for v in p]
        q = [v / zq for v in q]
        ce = -math.log(p[int(y[i])])
        kl = sum(pi * math.log((pi + eps) / (qi + eps)) for pi, qi in zip(p, q))
        total += ce + lam * kl
    return total / big.shape[0]


def test_loss_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    big, small = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    y = torch.randint(0, 5, (6,), generator=g)
    for lam in (0.0, 0.3, 1.0, 2.5):
        got = dan.adjoint_loss(big.double(), small.double(), y, lam).item()
        assert got == pytest.approx(direct(big.double(), small.double(), y, lam), rel=1e-5)


def test_kl_is_zero_for_equal_outputs_and_gradient_reaches_both():
    big = torch.randn(4, 3, requires_grad=True)
    small = big.detach().clone().requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0])
    loss, ce, kl = dan.adjoint_loss(big, small, y, 1.0, return_terms=True)
    assert kl.abs().item() < 1e-6
    small2 = torch.randn(4, 3, requires_grad=True)
    loss = dan.adjoint_loss(big, small2, y, 1.0) - torch.nn.functional.cross_entropy(big, y)
    loss.backward()
    assert big.grad.abs().sum() > 0 and small2.grad.abs().sum() > 0
    big.grad = None
    dan.adjoint_loss(big, small2, y, 1.0, detach_teacher=True).backward()
    ce_only = torch.autograd.grad(torch.nn.functional.cross_entropy(big, y), big)[0]
    assert torch.allclose(big.grad, ce_only, atol=1e-7)


def test_schedules():
    q = schedule("quadratic", c=2.0)
    assert q(0) == 0 and q(0.25) == pytest.approx(0.5) and q(0.5) == 2.0 and q(1) == 2.0
    assert schedule("cos")(1.0) == pytest.approx(1 - math.cos(1.0))
    assert schedule("linear")(0.3) == pytest.approx(0.3)
    assert schedule("exp")(1.0) == pytest.approx(math.e - 1)
    assert schedule("constant", c=0.7)(0.0) == 0.7
    assert schedule("linear")(2.0) == 1.0  # t is clamped to [0, 1]
    assert set(SCHEDULES) == {"quadratic", "cos", "linear", "exp", "constant"}
    with pytest.raises(dan.UserError):
        schedule("sigmoid")


@pytest.mark.parametrize("lam", [float("nan"), float("inf"), -1.0])
def test_a_lambda_that_is_not_a_weight_is_refused(lam):
    logits = torch.randn(4, 3)
    with pytest.raises(dan.UserError, match="lam must be a finite weight >= 0"):
        dan.adjoint_loss(logits, logits, torch.zeros(4, dtype=torch.long), lam)
