"""Latency model: exact expectation, cache keys, hand-checked statistics, the tool's errors."""

import random

import pytest
import torch

from dan import latency
from tests.helpers import assert_user_error, run_tool
from tests.test_search import supernet


def test_spearman_by_hand():
    assert latency.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert latency.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their mean rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5)
    assert latency.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)


def _fake_timer(monkeypatch):
    """Deterministic 'timings' so the algebra can be checked exactly: entry k takes 0.01·(1+k mod 7)."""
    def fake(fns, **kw):
        return [0.01 * (1 + k % 7) + 0.001 * k for k in range(len(fns))], 1.0
    monkeypatch.setattr(latency, "time_calls", fake)


def test_expected_latency_is_exact_on_one_hot_and_the_mean_over_architectures(monkeypatch, tmp_path):
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _fake_timer(monkeypatch)
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=8)
    model = latency.build(sn, threads=1, cache=False, progress=False)
    assert model.layers and all(l.exact_out >= 0 for l in model.layers if l.kind == "conv")
    rng = random.Random(0)
    for _ in range(5):
        choice = [rng.randrange(len(c)) for c in sn.cands]
        one_hot = [torch.nn.functional.one_hot(torch.tensor(k), len(c)).double() for k, c in zip(choice, sn.cands)]
        assert float(model.expected(one_hot, sn.cand_tensors)) == pytest.approx(model.predict(sn.widths_of(choice)))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in sn.arch.logits:
            t.copy_(torch.randn(t.shape, generator=g))
    probs = [p.double() for p in sn.arch.probs()]
    e = model.expected(probs, sn.cand_tensors)
    draws = [model.predict(sn.widths_of([int(torch.multinomial(p, 1, generator=g)) for p in probs]))
             for _ in range(3000)]
    assert sum(draws) / len(draws) == pytest.approx(float(e.detach()), rel=0.02)
    e.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in sn.arch.logits)


def test_tables_are_cached_per_device_threads_and_batch(monkeypatch, tmp_path):
    monkeypatch.setenv("DAN_CACHE", str(tmp_path))
    _, sn = supernet("resnet18_small", (1, 3, 16, 16), width=4)
    first = latency.build(sn, threads=1, progress=False)  # measured for real
    assert first.reference_ms > 0 and first.w_lut > 0
    assert all(v > 0 for l in first.layers for row in l.ms for v in row)

    def refuse(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr(latency, "measure_tables", refuse)
    again = latency.build(sn, threads=1, progress=False)
    assert again.to_dict() == first.to_dict()
    with pytest.raises(AssertionError, match="measured again"):
        latency.build(sn, threads=2, progress=False)  # another thread count: another table
    with pytest.raises(AssertionError, match="measured again"):
        latency.build(sn, threads=1, batch=4, progress=False)


def test_the_tool_refuses_bad_flags_in_one_line():
    assert_user_error(run_tool("latency.py", "--samples", "1"), "--samples")
