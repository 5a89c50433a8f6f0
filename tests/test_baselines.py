"""Width baselines (uniform, random, fixed, greedy one-shot): hand-made costs, the real supernet, the CLI."""

import json
import os
import random

import pytest

import dan
import search_spaces
from dan.adjoint import extract_small, to_adjoint
from dan.arch import build_adjoint, load_arch
from dan.baselines import BaselineError, greedy_choice, random_choice, uniform_widths
from dan.errors import UserError
from dan.monitor import Monitor
from dan.pick_widths import fixed_widths
from dan.search import search
from dan.supernet import Supernet
from tests.helpers import assert_user_error, run_tool, tiny_config


def _suite_supernet():
    base = search_spaces.create("resnet18_small", num_classes=10, width=8, in_channels=1)
    shape = (1, 1, 28, 28)
    return Supernet(to_adjoint(base, alpha=1, stem=0, input_shape=shape),
                    search_spaces.space_fractions("resnet18_small"), shape)


def test_uniform_by_hand():
    # cost = w0 * w1; f = 0.5 gives [4, 8] = 32, the middle of [30, 34]
    assert uniform_widths([8, 16], [1, 1], lambda w: w[0] * w[1], 30, 34)[0] == [4, 8]
    # quanta are kept: widths are multiples of 4
    widths, _ = uniform_widths([16, 32], [4, 4], lambda w: w[0] + w[1], 20, 28)
    assert all(w % 4 == 0 for w in widths) and 20 <= sum(widths) <= 28


@pytest.mark.parametrize("kind,rel", [("flops", 0.10), ("flops", 0.25), ("flops", 0.5), ("params", 0.25)])
def test_uniform_lands_in_band_one_fraction_up_to_one_channel(kind, rel):
    sn = _suite_supernet()
    idx = 0 if kind == "flops" else 1
    b = rel * sn.extremes()[kind][1]
    widths, f = uniform_widths([g.full for g in sn.groups], [g.quantum for g in sn.groups],
                               lambda w: sn.table.cost(w)[idx], 0.97 * b, 1.03 * b)
    assert 0.97 * b <= sn.table.cost(widths)[idx] <= 1.03 * b
    for g, w in zip(sn.groups, widths):  # every group within one channel of f · full
        assert abs(w - f * g.full) <= g.quantum + 1e-9, (g.name, w, f * g.full)


def test_random_is_seeded_in_band_and_gives_up():
    sn = _suite_supernet()
    b = 0.1 * sn.extremes()["flops"][1]
    cost = lambda w: sn.table.cost(w)[0]
    a, _ = random_choice(sn.cands, cost, 0.97 * b, 1.03 * b, random.Random(5))
    again, _ = random_choice(sn.cands, cost, 0.97 * b, 1.03 * b, random.Random(5))
    other, _ = random_choice(sn.cands, cost, 0.97 * b, 1.03 * b, random.Random(6))
    assert a == again and a != other
    assert 0.97 * b <= cost(sn.widths_of(a)) <= 1.03 * b
    with pytest.raises(BaselineError):
        random_choice([[1, 2]], lambda w: w[0], 5, 6, random.Random(0), max_draws=50)


def test_greedy_narrows_the_cheapest_loss_first():
    # cost = sum of widths; group 0 loses a lot of score when narrowed, group 1 almost nothing
    cands = [[1, 2, 3, 4], [1, 2, 3, 4]]
    weight = [10.0, 0.1]
    score = lambda ch: -sum(wt / (k + 1) for wt, k in zip(weight, ch))
    choice, trace = greedy_choice(cands, lambda w: sum(w), score, 4.9, 5.1)
    assert choice == [3, 0]  # group 1 narrowed to its narrowest, group 0 kept wide
    costs = [t["cost"] for t in trace]
    assert costs == sorted(costs, reverse=True) and costs[-1] == 5
    with pytest.raises(BaselineError):
        greedy_choice(cands, lambda w: sum(w), score, 0.5, 1.0)


def test_greedys_coarse_phase_moves_two_candidates_far_from_the_budget_then_one():
    cands = [list(range(1, 11)), list(range(1, 11))]  # cost = sum of widths, 20 at the widest
    weight = [10.0, 0.1]
    calls = {"fine": 0, "coarse": 0}

    def scorer(kind):
        def score(ch):
            calls[kind] += 1
            return -sum(wt / (k + 1) for wt, k in zip(weight, ch))
        return score

    choice, trace = greedy_choice(cands, lambda w: sum(w), scorer("fine"), 11.9, 12.1, far=1.3, far_step=2,
                                  far_score_fn=scorer("coarse"))
    # above 1.3 * 12.1 = 15.73 group 1 drops two candidates a round (20 -> 18 -> 16 -> 14), then one
    assert [t["cost"] for t in trace] == [20, 18, 16, 14, 13, 12]
    assert [t.get("step") for t in trace[1:]] == [2, 2, 2, 1, 1]
    assert choice == [9, 1]  # widths 10 and 2
    # the coarse rounds scored the start and two trials each; the fine phase rescored the current
    # architecture once on entering it, then two trials a round
    assert calls == {"coarse": 1 + 3 * 2, "fine": 1 + 2 * 2}
    with pytest.raises(ValueError):
        greedy_choice(cands, lambda w: sum(w), scorer("fine"), 11.9, 12.1, far=1.0)


def test_baseline_tool_writes_an_arch_that_retrains(tmp_path):
    u = str(tmp_path / "u")
    common = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--set", "model.args.width=8",
              "--set", "data.synthetic_size=256", "--budget-flops", "20%", "--quiet"]
    p = run_tool("baseline.py", "uniform", *common, "--out", u)
    assert p.returncode == 0, p.stderr
    arch = load_arch(os.path.join(u, "arch.json"))
    assert arch.search["method"] == "uniform" and arch.search["in_band"]
    net = extract_small(build_adjoint(arch))
    assert dan.count(net, tuple(arch.input_shape)).flops == arch.small["flops"]
    # an existing arch.json is never overwritten
    before = open(os.path.join(u, "arch.json")).read()
    assert_user_error(run_tool("baseline.py", "uniform", *common, "--out", u), "exists")
    assert open(os.path.join(u, "arch.json")).read() == before
    r = str(tmp_path / "r")
    # retrained as `retrain.py <folder>`: the folder's arch.json
    p = run_tool("retrain.py", u, "--epochs", "1", "--limit-batches", "2", "--quiet",
                 "--no-tensorboard", "--set", "train.latency_batches=[1]", "--out", r)
    assert p.returncode == 0, p.stderr
    assert json.load(open(os.path.join(r, "summary.json")))["networks"]["small"]["flops"] == arch.small["flops"]


def test_fixed_widths_checks_every_group():
    sn = _suite_supernet()
    given = {g.name: g.full // 2 for g in sn.groups}
    assert fixed_widths(sn, dict(given, fc=10)) == [g.full // 2 for g in sn.groups]  # fc at its own width
    for bad, what in [(dict(given, fc=5), "fixed at 10"), (dict(given, conv9=4), "not a group"),
                      ({k: v for k, v in given.items() if k != "conv1"}, "no width for conv1"),
                      (dict(given, conv1=0), "conv1 = 0"), (dict(given, conv1=9), "conv1 = 9"),
                      (dict(given, conv1=2.0), "conv1 = 2.0"), (dict(given, conv1=True), "conv1 = True"),
                      ([4, 4], "JSON object")]:
        with pytest.raises(UserError, match=what):
            fixed_widths(sn, bad)


def test_fixed_baseline_rewrites_an_arch_from_its_widths(tmp_path):
    common = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--set", "model.args.width=8",
              "--set", "data.synthetic_size=256", "--quiet"]
    u, f = str(tmp_path / "u"), str(tmp_path / "f")
    assert run_tool("baseline.py", "uniform", *common, "--budget-flops", "20%", "--out", u).returncode == 0
    p = run_tool("baseline.py", "fixed", *common, "--budget-flops", "20%", "--widths", os.path.join(u, "arch.json"),
                 "--out", f)
    assert p.returncode == 0, p.stderr
    a, b = load_arch(os.path.join(u, "arch.json")), load_arch(os.path.join(f, "arch.json"))
    assert (a.widths, a.small, a.budget) == (b.widths, b.small, b.budget)
    assert dict(a.config, out=None) == dict(b.config, out=None)
    assert b.search["method"] == "fixed" and b.search["in_band"]
    # widths outside the budget's band, or a file that is not JSON: exit 2, nothing written
    assert_user_error(run_tool("baseline.py", "fixed", *common, "--budget-flops", "60%", "--widths",
                               os.path.join(u, "arch.json"), "--out", str(tmp_path / "x")), "outside the budget")
    bad = tmp_path / "w.json"
    bad.write_text("{conv1: 4")
    assert_user_error(run_tool("baseline.py", "fixed", *common, "--budget-flops", "20%", "--widths", str(bad),
                               "--out", str(tmp_path / "y")), "not valid JSON")
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")


def test_greedy_from_a_search_checkpoint(tmp_path):
    s = str(tmp_path / "s")
    cfg = tiny_config(s, **{"train.epochs": 2, "train.limit_batches": 3, "search.budget_flops": "30%"})
    searched = search(cfg, Monitor(s, tensorboard=False))
    g = str(tmp_path / "g")
    p = run_tool("baseline.py", "greedy", "--supernet", os.path.join(s, "checkpoints", "last.pt"), "--out", g,
                 "--eval-batches", "2", "--recal-batches", "2", "--quiet")
    assert p.returncode == 0, p.stderr
    arch = load_arch(os.path.join(g, "arch.json"))
    b = arch.budget["flops"]
    assert b == searched.budget["flops"]
    assert 0.97 * b <= arch.small["flops"] <= 1.03 * b
    assert arch.search["method"] == "greedy" and arch.search["rounds"] > 0
    assert arch.config["data"] == searched.config["data"]  # same recipe when retrained
    assert not os.path.exists(os.path.join(s, "arch.json.tmp"))
    assert_user_error(run_tool("baseline.py", "greedy", "--out", str(tmp_path / "x")), "supernet")
    # uniform --supernet: its retrain starts from that supernet, as DAN's does (it was accepted and ignored)
    from dan.pick_widths import baseline_arch
    from dan.retrain import retrain_base, retrain_config

    ckpt = os.path.join(s, "checkpoints", "last.pt")
    u = baseline_arch(cfg, "uniform", supernet=ckpt)
    assert u.search["supernet"] == os.path.abspath(ckpt)
    u.save(str(tmp_path / "u.json"))
    assert retrain_config(str(tmp_path / "u.json"), "adjoint", retrain_base(u)).train.init_from == os.path.abspath(ckpt)
    other = tiny_config(s, **{"data.num_classes": 7, "search.budget_flops": "30%"})
    with pytest.raises(dan.UserError, match="checkpoint of num_classes 4, this network has 7"):
        baseline_arch(other, "uniform", supernet=ckpt)
