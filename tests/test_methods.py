"""Comparison methods: exact ExpandNet contraction, low-rank truncation, and a few steps of each
method on synthetic data ending with a saved deployable network."""

import json
import os

import pytest
import torch
import torch.nn as nn

import dan
from dan.data import dataset_info
from dan.engine import train
from dan.models import build_model
from dan.methods import list_methods
from dan.methods.dropout import add_dropout
from dan.methods.expandnet import ExpandedConv, contract, expand, expand_ck, expand_cl, expand_linear
from dan.methods.lowrank import energy_rank, svt, truncate
from dan.monitor import Monitor
from tests.helpers import tiny_config


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("k,stride,padding,bias,first", [
    (3, 1, 1, True, False), (3, 2, 1, True, False), (3, 1, 0, False, False), (5, 2, 2, True, False),
    (3, 2, 1, True, True), (7, 1, 3, True, True)])
def test_cl_expansion_contracts_exactly(k, stride, padding, bias, first):
    conv = nn.Conv2d(3, 5, k, stride=stride, padding=padding, bias=bias)
    unit = expand_cl(conv, 4, first)
    _randomize(unit, k)
    x = torch.randn(2, 3, 11, 11)
    merged = unit.contract()
    assert merged.kernel_size == (k, k) and merged.stride == (stride, stride)
    assert torch.allclose(merged(x), unit(x), atol=1e-4)


@pytest.mark.parametrize("k,stride,padding", [(5, 1, 2), (5, 2, 2), (7, 2, 3), (7, 1, 0)])
def test_ck_expansion_contracts_exactly(k, stride, padding):
    conv = nn.Conv2d(4, 6, k, stride=stride, padding=padding, bias=True)
    unit = expand_ck(conv, 4)
    assert len(unit) == (k - 1) // 2 and all(c.kernel_size == (3, 3) for c in unit)
    _randomize(unit, k)
    x = torch.randn(2, 4, 13, 13)
    merged = unit.contract()
    assert merged.kernel_size == (k, k)
    assert torch.allclose(merged(x), unit(x), atol=1e-4)


def test_fc_expansion_contracts_exactly():
    unit = expand_linear(nn.Linear(7, 3), 4)
    _randomize(unit)
    x = torch.randn(5, 7)
    assert torch.allclose(unit.contract()(x), unit(x), atol=1e-4)


def test_whole_network_expand_and_contract():
    import search_spaces

    net = search_spaces.create("resnet18_small", num_classes=4, width=8).eval()
    big = expand(net, 4, "cl+fc").eval()
    assert any(isinstance(m, ExpandedConv) for m in big.modules())
    _randomize(big, 3)
    back = contract(big).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(back(x), big(x), atol=1e-3, rtol=1e-3)
    shape = (1, 3, 16, 16)
    assert dan.count(back, shape).params == dan.count(net, shape).params  # exactly the compact network
    assert dan.count(back, shape).flops == dan.count(net, shape).flops
    assert dan.count(big, shape).params > 4 * dan.count(net, shape).params


def test_lowrank_truncation_respects_the_energy_bound_and_shrinks():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=True)
    with torch.no_grad():  # a nearly rank-4 weight
        u, v = torch.randn(32, 4), torch.randn(4, 16 * 9)
        conv.weight.copy_((u @ v + 0.01 * torch.randn(32, 16 * 9)).view(32, 16, 3, 3))
    net = nn.Sequential(conv)
    small, ranks = truncate(net, 0.98)
    assert ranks["0"] <= 6
    x = torch.randn(2, 16, 8, 8)
    s = torch.linalg.svdvals(conv.weight.reshape(32, -1))
    r = ranks["0"]
    rel = (s[r:] ** 2).sum() / (s ** 2).sum()  # energy left out
    err = ((small(x) - net(x)).norm() / net(x).norm()).item()
    assert rel <= 0.02 + 1e-6
    assert err < 0.2
    assert dan.count(small, (1, 16, 8, 8)).params < dan.count(net, (1, 16, 8, 8)).params / 3
    assert energy_rank(torch.tensor([3.0, 1.0, 0.0]), 0.9) == 1
    w = torch.randn(8, 4, 3, 3)
    before = torch.linalg.svdvals(w.reshape(8, -1))
    svt(w, 0.5)
    after = torch.linalg.svdvals(w.reshape(8, -1))
    assert torch.allclose(after, (before - 0.5).clamp_min(0), atol=1e-4)


def test_the_batchnorm_after_a_factorized_conv_folds_on_deploy():
    # before, lowrank's deployed network kept every BatchNorm after a factorized conv (the folding
    # matched plain convs only), so its latency was measured with them
    from dan.deploy import deploy_form
    from dan.methods.common import traced
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1), net[1].running_var.uniform_(0.5, 2), net[1].weight.uniform_(0.5, 2)
    small, _ = truncate(traced(net).eval(), 0.5)  # as the method does: its network is traced
    assert any(type(m).__name__ == "Factorized" for m in small.modules())
    folded = deploy_form(small, "contiguous")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(folded(x), small(x), atol=1e-5)


def test_dropout_inserts_classifier_and_channel_dropout():
    import search_spaces

    net = add_dropout(search_spaces.create("resnet18_small", num_classes=4, width=8), 0.3, 0.1)
    kinds = [type(m) for m in net.modules()]
    assert nn.Dropout in kinds and kinds.count(nn.Dropout2d) == 8  # the conv1-bn1-relu of 8 blocks
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(net(x), net(x))


TRAINED_METHODS = ["standard", "standard-small", "dropout", "kd", "expandnet", "lowrank", "ksanc"]


@pytest.mark.parametrize("method", TRAINED_METHODS)
def test_each_method_trains_and_saves_its_network(tmp_path, method):
    out = str(tmp_path / method)
    # standard-small: the AN small network trained alone (methods.standard.network = small)
    cfg = tiny_config(out, **{"train.method": method.split("-")[0], "train.epochs": 1, "train.limit_batches": 3,
                              "train.latency_batches": [1]})
    cfg.methods = {"dropout": {"rate": 0.3, "channel_rate": 0.1}, "kd": {"teacher_epochs": 1},
                   "expandnet": {"ratio": 2}, "lowrank": {"tau": 0.05, "prox_every": 1, "energy": 0.9},
                   "ksanc": {"teacher_epochs": 1, "ce": 0.5},
                   "standard": {"network": "small" if method == "standard-small" else "big"}}
    summary = train(cfg, Monitor(out, tensorboard=False))
    meta = json.load(open(summary.files["meta"]))
    base = method in ("standard", "dropout")  # the base network itself is deployed: model.*, not small.*
    assert os.path.basename(summary.files["meta"]) == ("model.json" if base else "small.json")
    assert os.path.isfile(os.path.join(out, "model.pt" if base else "small.pt"))
    assert not os.path.exists(os.path.join(out, "small.pt" if base else "model.pt"))
    deployed = summary.rows[{"standard": "big", "dropout": "big", "lowrank": "lowrank"}.get(method, "small")]
    if method == "standard-small":
        assert set(summary.rows) == {"small"}
    assert deployed["top1"] is not None and deployed["flops"] > 0
    assert meta["params"] == deployed["params"]
    scripted = torch.jit.load(summary.files["torchscript"])
    assert scripted(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    if method in ("kd", "expandnet", "ksanc", "standard-small"):  # AN's small network at alpha = 4
        anet = dan.to_adjoint(build_model(cfg.model, dataset_info(cfg.data)), alpha=4,
                              input_shape=(1, 3, 16, 16))
        assert deployed["flops"] == dan.count(dan.extract_small(anet), (1, 3, 16, 16)).flops
    if method in ("kd", "ksanc"):
        assert os.path.isfile(os.path.join(out, "teacher", "summary.json"))
        assert summary.rows["big"]["top1"] is not None
    if method == "lowrank":
        assert summary.rows["lowrank"]["params"] < summary.rows["big"]["params"]
        ranks = json.load(open(os.path.join(out, "summary.json")))["lowrank_ranks"]
        assert ranks and all(1 <= r <= full for r, full in ranks.values())
        assert any(r < full for r, full in ranks.values())


def test_lowrank_says_when_nothing_was_compressed(tmp_path):
    out = str(tmp_path / "lr")
    cfg = tiny_config(out, **{"train.method": "lowrank", "train.epochs": 1, "train.limit_batches": 2,
                              "train.latency_batches": [1]})
    cfg.methods = {"lowrank": {"tau": 0.0, "energy": 1.0}}
    with pytest.warns(UserWarning, match="lowrank: no conv became smaller"):  # a warning, not a print
        summary = train(cfg, Monitor(out, tensorboard=False))
    assert summary.rows["lowrank"]["params"] == summary.rows["big"]["params"]
    # best.pt follows the network the deployable is cut from (there was none, and best_top1 -1)
    assert os.path.isfile(os.path.join(out, "checkpoints", "best.pt")) and summary.extra["best_top1"] >= 0


def test_every_registered_method_is_trained_by_a_test():
    """A method added to the registry must join the training test above (adjoint has its own)."""
    trained = {m.split("-")[0] for m in TRAINED_METHODS} | {"adjoint"}
    assert set(list_methods()) == trained


def test_reproduce_dry_run_lists_the_suite(tmp_path):
    from PIL import Image

    from tests.helpers import run_tool

    p = run_tool("reproduce.py", "--suite", "fashion-mnist", "--dry-run", "--out", str(tmp_path / "suite"))
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith("[todo]")]
    assert len(lines) == 39  # 13 runs x 3 seeds
    for key in ("standard", "dropout", "adjoint a=2", "adjoint a=4", "adjoint a=8", "adjoint a=4 b=0.5",
                "small alone", "kd",
                "dan search", "dan (a=4 FLOPs)", "expandnet", "lowrank", "ksanc"):
        assert any(f"] {key}" in l for l in lines), key
    assert "--budget-flops" in p.stdout and "methods.kd.teacher=" in p.stdout
    # each run is the library command it starts (python -m dan <command>), never tools/
    commands = [l.split(": ", 1)[1] for l in lines]
    assert sum(c.startswith("python -m dan train --config ") for c in commands) == 33  # 11 per seed
    assert sum(c.startswith("python -m dan search --config ") for c in commands) == 3
    assert sum(c.startswith("python -m dan retrain ") for c in commands) == 3
    # the paper's comparison: DAN's retrain starts from scratch like every other row
    assert all("--init scratch" in c for c in commands if c.startswith("python -m dan retrain "))
    assert "tools/" not in p.stdout
    # a suite on an image folder plans with the folder given (its classes are read there), not the
    # config's own path: `--suite imagenet --data DIR` refused even its dry run
    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / split / c / "0.png")
    p = run_tool("reproduce.py", "--suite", "imagenet", "--dry-run", "--data", str(root), "--out", str(tmp_path / "in"))
    assert p.returncode == 0 and f"--data {root}" in p.stdout, p.stderr[-2000:]
    assert not os.path.exists(tmp_path / "suite")  # a dry run starts nothing
    # without the data its dry run lists the runs too (the search's budget counted when it runs)
    p = run_tool("reproduce.py", "--suite", "imagenet", "--dry-run", "--out", str(tmp_path / "in2"), cwd=str(tmp_path))
    assert p.returncode == 0 and "counted from the data when the suite runs" in p.stdout, p.stderr[-2000:]
    assert not os.path.exists(tmp_path / "in2")


def test_standard_rejects_an_unknown_network(tmp_path):
    from dan.errors import UserError

    cfg = tiny_config(str(tmp_path / "x"), **{"train.method": "standard"})
    cfg.methods = {"standard": {"network": "tiny"}}
    with pytest.raises(UserError, match="methods.standard.network"):
        train(cfg, Monitor(str(tmp_path / "x"), tensorboard=False))


def test_claim_verdicts_follow_the_seed_noise():
    from dan.report import verdict

    assert verdict([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], True, 0.0)[2] == "**supported**"
    assert verdict([0.80, 0.81, 0.82], [0.90, 0.91, 0.92], True, 0.0)[2] == "**not supported**"
    assert verdict([0.90, 0.92, 0.88], [0.905, 0.89, 0.91], True, 0.0)[2] == "within seed noise"
    assert verdict([0.895, 0.896, 0.897], [0.90, 0.901, 0.902], True, 0.01)[2] == "**supported**"  # within a point
    assert verdict([0.30, 0.31, 0.29], [0.40, 0.41, 0.39], False, 0.0)[2] == "**supported**"  # lower CE
    assert verdict([0.9], [], True, 0.0)[2] == "not run"


def test_paired_verdicts_use_the_spread_of_the_differences():
    """The search suite's paired verdict: mean of per-seed differences against 2 stdev/sqrt(n).
    (+0.3, +0.2, +0.4): mean 0.3, se 0.1/sqrt(3) = 0.0577, so supported, though the two groups'
    own spreads (1 point) would leave an unpaired comparison within seed noise."""
    from dan.report import paired_verdict, verdict

    d, se, v = paired_verdict([0.3, 0.2, 0.4])
    assert (round(d, 6), round(se, 4), v) == (0.3, 0.0577, "**supported**")
    assert verdict([88.3, 87.2, 89.4], [88.0, 87.0, 89.0], True, 0.0)[2] == "within seed noise"
    assert paired_verdict([0.3, -0.2, 0.4])[2] == "within seed noise"  # mean 0.167, se 0.186
    assert paired_verdict([-0.3, -0.2, -0.4])[2] == "**not supported**"
    # one seed has no spread to test a difference against: no verdict ("supported (one seed)" read as one)
    assert paired_verdict([0.1])[2] == "cannot be tested (one seed: no standard error)"
    assert paired_verdict([])[2] == "not run"


def test_a_compression_claim_is_not_tested_when_nothing_was_compressed():
    from dan.suite import claims_table

    def row(top1, params):
        return {"top1": top1, "params": [params] * len(top1)}

    std = row([0.900, 0.902, 0.904], 176_000)
    uncompressed = {"standard": std, "lowrank": row([0.905, 0.906, 0.907], 176_000)}
    line = [x for x in claims_table(uncompressed) if x.startswith("| Compression-aware")][0]
    assert "not tested: lowrank was not compressed (176,000 vs 176,000 params)" in line
    compressed = {"standard": std, "lowrank": row([0.898, 0.899, 0.900], 90_000)}
    line = [x for x in claims_table(compressed) if x.startswith("| Compression-aware")][0]
    assert line.endswith("| **supported** |")


def test_results_page_keeps_hand_written_notes(tmp_path):
    from dan.report import NOTES_MARK
    from dan.suite import plan, write_results

    runs = plan("fashion-mnist", str(tmp_path / "suite"), seeds=1)
    md = tmp_path / "results.md"
    write_results(runs, str(md), str(tmp_path / "fig"), "# R")
    assert NOTES_MARK in md.read_text() and "not run" in md.read_text()
    md.write_text(md.read_text() + "\nWhat we chose and why.\n")
    write_results(runs, str(md), str(tmp_path / "fig"), "# R again")
    text = md.read_text()
    assert text.startswith("# R again") and text.count(NOTES_MARK) == 1 and "What we chose and why." in text


def test_a_wrong_teacher_or_methods_section_is_refused_before_any_file(tmp_path):
    # a typo's section was kept and never read (a teacher trained from scratch instead), methods.kd=5
    # was a TypeError, a missing teacher said "start without --resume" and left a folder behind
    for methods, match in (({"dk": {"teacher": "x"}}, "unknown config section 'methods.dk'"),
                           ({"kd": 5}, "'methods.kd' must be a mapping"),
                           ({"kd": {"teacher": str(tmp_path / "none")}}, "no checkpoint at .*none.*finished training run"),
                           ({"kd": {"teacher_epochs": 0}}, "methods.kd.teacher_epochs"),
                           ({"ksanc": {"disc_hidden": 0}}, "methods.ksanc.disc_hidden"),  # an IndexError after
                           ({"ksanc": {"disc_lr": -1.0}}, "methods.ksanc.disc_lr"),       # the teacher trained
                           ({"ksanc": {"lambda_b": -1.0}}, "methods.ksanc.lambda_b"),
                           # a TypeError in kd's range check (the fuzz audit, seed 5011)
                           ({"kd": {"temperature": None}}, "'methods.kd.temperature' must be float, got None")):
        cfg = tiny_config(str(tmp_path / "r"), **{"train.method": next(iter(methods)).replace("dk", "kd"),
                                                  "train.limit_batches": 1})
        cfg.methods = methods
        with pytest.raises(dan.UserError, match=match):
            train(cfg)
        assert not (tmp_path / "r").exists()


def test_a_section_of_a_method_not_run_is_checked_too(tmp_path):
    # a config kept for a later --method kd (methods.kd.temprature, lowrank's energy 2) trained the
    # adjoint method without a word and failed only in the later run
    from dan.search import search
    for methods, match in (({"kd": {"temprature": 2.0}}, "unknown config key 'methods.kd.temprature'"),
                           ({"lowrank": {"energy": 2.0}}, "methods.lowrank: .*energy in"),
                           ({"expandnet": {"mode": "cl+ck"}}, "methods.expandnet.mode"),
                           ({"standard": {"network": "mid"}}, "methods.standard.network")):
        cfg = tiny_config(str(tmp_path / "r"), **{"train.limit_batches": 1})
        cfg.methods = methods
        with pytest.raises(dan.UserError, match=match):
            train(cfg)
        cfg.search.budget_flops = "50%"
        with pytest.raises(dan.UserError, match=match):
            search(cfg)
        assert not (tmp_path / "r").exists()


def test_method_options_that_would_change_nothing_are_refused_or_applied(tmp_path):
    import torch.nn.functional as F

    from dan.methods.expandnet import expand
    from dan.methods.kd import kd_loss
    from dan.errors import UserError

    # methods.adjoint.alpha=8 was kept and never read (the run trained alpha 4)
    cfg = tiny_config(str(tmp_path / "a"))
    cfg.methods = {"adjoint": {"alpha": 8}}
    with pytest.raises(UserError, match="methods.adjoint takes no options .*--alpha"):
        train(cfg, Monitor(str(tmp_path / "a"), tensorboard=False))
    # kd's CE takes train.label_smoothing as every other method's does
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    _, ce, _ = kd_loss(s, t, y, 4.0, 0.9, label_smoothing=0.3)
    assert torch.isclose(ce, F.cross_entropy(s, y, label_smoothing=0.3))
    # expandnet's ck mode on a network of 3x3 convs expanded nothing, silently
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.zeros(1, 3, 8, 8))
    with pytest.raises(UserError, match="expands convs with kernels above 3x3, and this network has none"):
        expand(net, 4, "ck")


def test_count_reads_a_kd_run_whose_teacher_lives_elsewhere(tmp_path):
    from tests.helpers import run_tool

    teacher = str(tmp_path / "t")
    train(tiny_config(teacher, **{"train.method": "standard", "train.epochs": 1, "train.latency_batches": []}),
          Monitor(teacher, tensorboard=False))
    kd = str(tmp_path / "kd")
    cfg = tiny_config(kd, **{"train.method": "kd", "train.epochs": 1, "train.latency_batches": []})
    cfg.methods = {"kd": {"teacher": teacher}}
    train(cfg, Monitor(kd, tensorboard=False))
    p = run_tool("count.py", kd)  # was "dan.count counts a torch.nn.Module, got a NoneType"
    assert p.returncode == 0 and "== small:" in p.stdout, p.stderr
