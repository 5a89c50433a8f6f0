"""The search's last step (dan/refine.py): held-out swaps at equal cost, by hand and on a real search."""

import os

import pytest

from dan.arch import load_arch
from dan.errors import UserError
from dan.loop import check_same_config
from dan.monitor import Monitor
from dan.refine import refine_choice
from dan.search import search
from tests.helpers import run_tool, tiny_config

CANDS = [[1, 2, 3, 4]] * 3
COST = lambda ch: sum(CANDS[i][k] for i, k in enumerate(ch))  # noqa: E731


def test_refine_swaps_width_to_where_the_score_gains_and_stays_in_band():
    # the score wants group 0 wide and group 2 narrow; the band allows cost 6 or 7 only
    calls = []

    def score(ch):
        calls.append(tuple(ch))
        return 2 * ch[0] - ch[2] + 0.5 * ch[1]

    choice, trace = refine_choice([1, 1, 2], CANDS, COST, score, 6, 7, rounds=10)
    assert choice == [3, 1, 0]  # group 0 widest, group 2 narrowest, group 1 holds the rest of the budget
    assert all(6 <= t["cost"] <= 7 for t in trace)
    scores = [t["score"] for t in trace]
    assert scores == sorted(scores) and scores[-1] > scores[0]
    assert trace[-1]["moves"] == []  # it stopped because nothing improved, not because rounds ran out
    # a round scores the one-candidate moves (at most 2 x 3 groups) and at most `top` swaps
    assert all(t["trials"] <= 2 * 3 + 8 for t in trace[1:])
    assert sum(t["trials"] for t in trace) == len(calls)  # every trial scored once


def test_refine_keeps_a_local_optimum_and_an_out_of_band_start():
    score = lambda ch: -abs(ch[0] - 1) - abs(ch[1] - 1) - abs(ch[2] - 1)  # best at [1, 1, 1]  # noqa: E731
    choice, trace = refine_choice([1, 1, 1], CANDS, COST, score, 5, 7, rounds=5)
    assert choice == [1, 1, 1] and len(trace) == 2 and trace[1]["moves"] == []
    choice, trace = refine_choice([3, 3, 3], CANDS, COST, score, 5, 7, rounds=5)  # cost 12: not in band
    assert choice == [3, 3, 3] and len(trace) == 1
    choice, trace = refine_choice([1, 1, 2], CANDS, COST, lambda ch: 2 * ch[0] - ch[2], 6, 7, rounds=1)
    assert len(trace) == 2 and trace[1]["moves"]  # rounds bound the moves


def test_refine_settings_are_checked_and_resumable():
    cfg = tiny_config("/tmp/x")
    cfg.set("search.refine_rounds", -1)
    with pytest.raises(UserError, match="search.refine_rounds"):
        cfg.validate()
    saved = tiny_config("/tmp/x").to_dict()
    now = tiny_config("/tmp/x")
    now.set("search.refine_rounds", 4)  # changes the search's last step only
    check_same_config(saved, now.to_dict(), "last.pt")
    # a key an older checkpoint lacks counts as its default; a changed one still refuses
    del saved["search"]["refine_batches"]
    check_same_config(saved, tiny_config("/tmp/x").to_dict(), "last.pt")
    now.set("search.tau_min", 0.5)
    with pytest.raises(UserError, match="search.tau_min"):
        check_same_config(saved, now.to_dict(), "last.pt")


def test_search_refines_and_the_tool_refines_a_finished_search_alike(tmp_path):
    s = str(tmp_path / "s")
    cfg = tiny_config(s, **{"train.epochs": 2, "train.limit_batches": 3, "search.budget_flops": "30%",
                            "search.refine_rounds": 2, "search.refine_batches": 2,
                            "search.refine_recal_batches": 2})
    arch = search(cfg, Monitor(s, tensorboard=False))
    b = arch.budget["flops"]
    r = arch.search["refine"]
    assert 0.97 * b <= arch.small["flops"] <= 1.03 * b
    assert 1 <= r["rounds"] <= 2 and r["heldout_ce_after"] <= r["heldout_ce_before"]
    assert r["over_budget_after"] == pytest.approx(arch.small["flops"] / b, abs=1e-6)
    for name, (before, after) in r["moved"].items():
        assert arch.widths[name] == after != before
    # the same step from the search's checkpoint: the same widths
    f = str(tmp_path / "f")
    p = run_tool("baseline.py", "refine", "--supernet", os.path.join(s, "checkpoints", "last.pt"), "--out", f,
                 "--rounds", "2", "--eval-batches", "2", "--recal-batches", "2", "--quiet")
    assert p.returncode == 0, p.stderr
    again = load_arch(os.path.join(f, "arch.json"))
    assert again.search["method"] == "refine" and again.search["in_band"]
    assert again.widths == arch.widths and again.budget == arch.budget
