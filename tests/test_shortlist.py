"""The shortlist last step (dan/shortlist.py): in-band draws from the search's distributions, each
fine-tuned from the supernet and scored on the held-out split."""

import os
import random

from dan.arch import load_arch
from dan.monitor import Monitor
from dan.search import search
from dan.shortlist import draw_shortlist
from tests.helpers import run_tool, tiny_config


def test_the_shortlist_starts_with_the_search_answer_and_draws_distinct_in_band_widths():
    cost = lambda ch: sum(ch)  # noqa: E731
    probs = [[0.1, 0.2, 0.3, 0.4]] * 4
    found = draw_shortlist([3, 3, 1, 1], probs, cost, 7, 9, 5, random.Random(0))
    assert found[0] == [3, 3, 1, 1] and len(found) == 5
    assert len({tuple(c) for c in found}) == 5 and all(7 <= cost(c) <= 9 for c in found)
    # committed distributions give nothing new: the search's answer alone
    onehot = [[0.0, 0.0, 0.0, 1.0]] * 2 + [[0.0, 1.0, 0.0, 0.0]] * 2
    assert draw_shortlist([3, 3, 1, 1], onehot, cost, 7, 9, 5, random.Random(0)) == [[3, 3, 1, 1]]
    # a draw out of the band is repaired into it by the most probable move
    far = draw_shortlist([2, 2, 2, 2], [[0.97, 0.01, 0.01, 0.01]] * 4, cost, 7, 9, 3, random.Random(1))
    assert all(7 <= cost(c) <= 9 for c in far) and len(far) == 3


def test_the_tool_fine_tunes_each_candidate_on_the_held_out_split_and_keeps_the_best(tmp_path):
    s = str(tmp_path / "s")
    cfg = tiny_config(s, **{"train.epochs": 2, "train.limit_batches": 3, "search.budget_flops": "30%"})
    found = search(cfg, Monitor(s, tensorboard=False))
    out = str(tmp_path / "f")
    args = ["shortlist", "--supernet", os.path.join(s, "checkpoints", "last.pt"), "--out", out,
            "--candidates", "3", "--steps", "2", "--quiet"]
    p = run_tool("baseline.py", *args)
    assert p.returncode == 0, p.stderr
    arch = load_arch(os.path.join(out, "arch.json"))
    st = arch.search
    assert st["method"] == "shortlist" and st["in_band"] and 1 <= len(st["candidates"]) <= 3
    # the search's answer comes first
    assert load_arch(os.path.join(out, "shortlist", "c0", "arch.json")).widths == found.widths
    best = max(st["candidates"], key=lambda c: (c["heldout_top1"], -c["heldout_ce"]))
    assert st["candidates"][st["picked"]]["heldout_top1"] == best["heldout_top1"]
    for k in range(len(st["candidates"])):
        with open(os.path.join(out, "shortlist", f"c{k}", "run", "config.yaml")) as f:
            text = f.read()
        assert "eval_split: holdout" in text and "init_from:" in text and "last.pt" in text
    # an interrupted shortlist is finished from its scored candidates: nothing is fine-tuned again
    os.remove(os.path.join(out, "arch.json"))
    stamp = os.path.getmtime(os.path.join(out, "shortlist", "c0", "run", "summary.json"))
    p = run_tool("baseline.py", *args)
    assert p.returncode == 0, p.stderr
    assert os.path.getmtime(os.path.join(out, "shortlist", "c0", "run", "summary.json")) == stamp
    assert load_arch(os.path.join(out, "arch.json")).widths == arch.widths


def test_a_search_with_the_shortlist_option_picks_as_the_tool_does(tmp_path, monkeypatch):
    import pytest

    from dan.errors import UserError

    s = str(tmp_path / "s")
    cfg = tiny_config(s, **{"train.epochs": 2, "train.limit_batches": 3, "search.budget_flops": "30%",
                            "search.shortlist": 3, "search.shortlist_steps": 2})
    arch = search(cfg, Monitor(s, tensorboard=False))
    st = arch.search["shortlist"]
    assert st["in_band"] and st["steps"] == 2 and 1 <= len(st["candidates"]) <= 3
    assert [arch.widths[n] for n in arch.widths if n in arch.probabilities] == st["candidates"][st["picked"]]["widths"]
    f = str(tmp_path / "f")
    p = run_tool("baseline.py", "shortlist", "--supernet", os.path.join(s, "checkpoints", "last.pt"), "--out", f,
                 "--candidates", "3", "--steps", "2", "--quiet")
    assert p.returncode == 0, p.stderr
    assert load_arch(os.path.join(f, "arch.json")).widths == arch.widths
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="one process"):
        search(tiny_config(str(tmp_path / "d"), **{"search.shortlist": 3}), Monitor(None, tensorboard=False))
