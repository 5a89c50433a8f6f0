"""Config.resolve (defaults filled and fields checked once, up front, without changing the input) and
retrain_config (one retrain config for tools/retrain.py and tuning), each against the code it
replaced: a run folder written before keeps the same config.yaml, so it stays resumable."""

import copy
import json
import os

import pytest
import torch
import torch.nn as nn

import dan
from dan.config import Config
from dan.deploy import load_deployable, save_deployable
from dan.retrain import retrain_base, retrain_config
from tests.helpers import tiny_config


def test_search_defaults_by_hand_and_the_input_unchanged():
    cfg = tiny_config("unused")  # batch_size 32, holdout 0, arch_batch_size unset
    before = cfg.to_dict()
    s = cfg.resolve("search")
    assert cfg.to_dict() == before  # pure
    assert (s.data.holdout, s.search.arch_batch_size, s.data.holdout_batch_size) == (1 / 3, 16, 16)
    assert s.resolve("search").to_dict() == s.to_dict()  # resolving again changes nothing
    cfg.set("data.holdout", 0.25)
    cfg.set("search.arch_batch_size", 8)
    s = cfg.resolve("search")
    assert (s.data.holdout, s.search.arch_batch_size, s.data.holdout_batch_size) == (0.25, 8, 8)
    cfg.set("data.batch_size", 1)
    cfg.set("search.arch_batch_size", None)
    assert cfg.resolve("search").search.arch_batch_size == 1  # never 0


def _old_search_data_defaults(cfg):
    """What Searcher.__init__ did to its config until resolve replaced it (dan/search.py)."""
    if not cfg.data.holdout:
        cfg.data.holdout = 1 / 3
    if cfg.search.arch_batch_size is None:
        cfg.search.arch_batch_size = max(1, cfg.data.batch_size // 2)
    cfg.data.holdout_batch_size = cfg.search.arch_batch_size


@pytest.mark.parametrize("overrides", [{}, {"data.holdout": 0.2}, {"search.arch_batch_size": 5},
                                       {"data.batch_size": 7, "data.holdout_batch_size": 3}])
def test_a_search_resolves_to_the_config_old_runs_stored(overrides):
    cfg = tiny_config("unused", **overrides)
    old = copy.deepcopy(cfg)
    _old_search_data_defaults(old)
    assert cfg.resolve("search").to_dict() == old.to_dict()


def test_train_and_tune_fill_nothing():
    cfg = tiny_config("unused", **{"data.batch_size": 48})
    for kind in ("train", "tune"):
        assert cfg.resolve(kind).to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="unknown kind"):
        cfg.resolve("serach")


@pytest.mark.parametrize("key,value,kind,fragment", [
    ("search.budget_control", "median", "train", "search.budget_control"),
    ("search.tau0", float("nan"), "search", "search.tau0"),
    ("search.settle", 1.0, "tune", "search.settle"),
    ("train.eval_split", "holdout", "train", "data.holdout > 0"),
    ("train.method", "standard", "retrain", "model.arch"),
])
def test_resolve_names_the_bad_key_before_anything_is_built(key, value, kind, fragment):
    cfg = tiny_config("unused")
    cfg.set(key, value)
    with pytest.raises(dan.UserError, match=fragment.replace(".", r"\.")):
        cfg.resolve(kind)


@pytest.fixture(scope="module")
def arch_path(tmp_path_factory):
    """A valid arch.json without training: the uniform baseline at 40 % of the FLOPs, whose
    config is a resolved search config (as a search's is)."""
    from dan.pick_widths import baseline_arch

    cfg = tiny_config("unused", **{"search.budget_flops": "40%", "data.train_subset": 200}).resolve("search")
    arch = baseline_arch(cfg, "uniform")
    path = str(tmp_path_factory.mktemp("s") / "arch.json")
    arch.save(path)
    return path


def test_retrain_config_of_the_tool_is_what_the_tool_built(arch_path):
    """tools/retrain.py without --config and without flags, old code against the library."""
    arch = dan.load_arch(arch_path)
    base = retrain_base(arch)
    new = retrain_config(arch_path, "adjoint", base)
    old = Config.from_dict(arch.config)  # tools/retrain.py until this change
    old.data.holdout, old.data.train_subset = 0.0, None
    old.model.space = arch.space
    old.model.args = {k: v for k, v in arch.space_args.items() if k not in ("num_classes", "in_channels")}
    old.train.method = "adjoint"
    old.adjoint.arch, old.model.arch = arch_path, None
    old.out = os.path.join(os.path.dirname(arch_path), "retrain-adjoint")
    assert new.to_dict() == old.to_dict()
    assert new.data.train_subset is None and new.train.eval_split == "test"
    # the paper's recipe has a folder of its own: README's two commands run one after the other
    assert retrain_config(arch_path, "adjoint", base, init="scratch").out == old.out + "-scratch"
    std = retrain_config(arch_path, "standard", base, out="elsewhere")
    assert (std.model.arch, std.adjoint.arch, std.out) == (arch_path, None, "elsewhere")
    assert base.to_dict() == retrain_base(arch).to_dict()  # the base is not changed


def test_widths_picked_on_a_supernet_retrain_from_it_as_dans_do(arch_path, tmp_path):
    # greedy/refine/shortlist record the supernet they were picked on; their arch.json is written
    # elsewhere, and the retrain started from scratch while DAN's own started from that supernet
    arch = dan.load_arch(arch_path)
    supernet = tmp_path / "search" / "checkpoints" / "last.pt"
    supernet.parent.mkdir(parents=True)
    supernet.write_bytes(b"a checkpoint")
    arch.search = {"method": "greedy", "supernet": str(supernet)}
    path = str(tmp_path / "greedy" / "arch.json")
    os.makedirs(os.path.dirname(path))
    arch.save(path)
    base = retrain_base(arch)
    assert retrain_config(path, "adjoint", base).train.init_from == str(supernet)
    assert retrain_config(path, "adjoint", base, init="scratch").train.init_from is None
    os.remove(supernet)  # gone: from scratch, as before (--init supernet says it is missing)
    assert retrain_config(path, "adjoint", base).train.init_from is None


def test_retrain_config_of_a_trial_is_what_tuning_built(arch_path):
    """A tuning trial's retrain, old hand-built config (dan/tune.py) against the library."""
    from dan.tune.objective import trial_retrain_config
    from dan.tune import spec_from_dict

    spec = spec_from_dict({"params": {"adjoint.c": {"type": "float", "low": 0.5, "high": 2.0}},
                           "retrain_epochs": 3, "validation": 0.2})
    scfg = Config.from_dict(dan.load_arch(arch_path).config)  # the trial's resolved search config
    new = trial_retrain_config(scfg, spec, arch_path, "trial-0007")
    old = copy.deepcopy(scfg)
    old.out = os.path.join("trial-0007", "retrain")
    old.train.epochs = 3
    old.train.method = "adjoint"
    old.train.eval_split = "holdout"
    old.data.holdout = 0.2
    old.data.holdout_batch_size = None
    old.adjoint.arch = arch_path
    assert new.to_dict() == old.to_dict()
    assert new.data.train_subset == 200  # a trial retrains on its subset
    assert new.train.init_from is None  # from scratch: the supernet trained on its validation images


def test_retrain_config_refuses_an_unknown_method(arch_path):
    with pytest.raises(dan.UserError, match="adjoint or standard"):
        retrain_config(arch_path, "kd", Config())


def test_a_latency_searched_arch_deploys_in_the_layout_its_search_measured_fastest(arch_path, tmp_path):
    d = json.load(open(arch_path))
    d["budget"] = {"latency": 1.0, "relative": 0.5, "band": 0.03}
    d["latency"] = {"budget_ms": 1.0, "memory_format": "contiguous"}
    path = str(tmp_path / "arch.json")
    json.dump(d, open(path, "w"))
    base = retrain_base(dan.load_arch(path))
    assert retrain_config(path, "adjoint", base, init="scratch").train.deploy_memory_format == "contiguous"
    base.train.deploy_memory_format = "channels_last"  # the user's choice wins
    assert retrain_config(path, "adjoint", base, init="scratch").train.deploy_memory_format == "channels_last"
    # an arch.json of a FLOPs search says nothing: the files stay channels-last
    assert retrain_config(arch_path, "adjoint", retrain_base(dan.load_arch(arch_path)),
                          init="scratch").train.deploy_memory_format is None
    cfg = tiny_config("unused")
    cfg.set("train.deploy_memory_format", "nhwc")
    with pytest.raises(dan.UserError, match=r"train\.deploy_memory_format"):
        cfg.resolve("train")


@pytest.mark.parametrize("fmt", ["channels_last", "contiguous"])
def test_the_deployable_files_store_the_weights_in_the_chosen_layout(tmp_path, fmt):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    net = net.to(memory_format=torch.channels_last)  # as trained channels-last
    meta = save_deployable(net, str(tmp_path), (1, 1, 12, 12), memory_format=fmt)
    assert meta["memory_format"] == fmt == json.load(open(tmp_path / "small.json"))["memory_format"]
    x = torch.randn(2, 1, 12, 12)
    for f in ("small.pt", "small.pt2"):
        loaded = load_deployable(str(tmp_path / f))
        with torch.no_grad():
            assert torch.allclose(loaded(x), net(x), atol=1e-5)
        convs = [p for p in loaded.state_dict().values() if p.ndim == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last if fmt == "channels_last"
                                                 else torch.contiguous_format) for p in convs)


def test_a_budget_whose_band_reaches_the_space_is_feasible_and_a_refusal_tells_the_numbers_apart():
    from types import SimpleNamespace

    from dan.budget import resolve_budget

    def scfg(flops, band=0.03):
        return SimpleNamespace(budget_flops=flops, budget_params=None, budget_latency=None, band=band)

    # just below the narrowest network: its band holds it (was refused)
    assert resolve_budget(scfg(118_000), {"flops": (118_304, 500_000)}).value == 118_000
    with pytest.raises(dan.UserError, match="infeasible"):
        resolve_budget(scfg(110_000), {"flops": (118_304, 500_000)})
    # a refusal whose rounded numbers would read alike gives them whole
    with pytest.raises(dan.UserError, match="budget 118,303 flops is infeasible .* ranges from 118,304 flops"):
        resolve_budget(scfg(118_303, band=1e-6), {"flops": (118_304, 500_000)})


def test_a_retrain_of_a_latency_search_times_the_batch_its_budget_is_for(arch_path, tmp_path):
    # an audit's --latency-batch 4 search: its retrain timed batches 1 and 64 only, beside a budget
    # line that did not say it was batch 4's
    rec = json.load(open(arch_path))
    rec["budget"] = {"latency": 3.2, "band": 0.03}
    rec["latency"] = {"device": {"cpu": "x", "machine": "x86_64", "runtime": "torch", "threads": 1, "batch": 4},
                      "budget_ms": 3.2, "predicted_ms": 3.1, "measured_ms": 3.2, "measured_raw_ms": 3.3,
                      "measured_over_budget": 1.0, "in_band": True}
    path = tmp_path / "lat" / "arch.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rec))
    arch = dan.load_arch(str(path))
    base = retrain_base(arch)
    base.train.latency_batches = (1, 64)  # the default (the tiny config times batch 1 only)
    assert retrain_config(str(path), "adjoint", base).train.latency_batches == (1, 4, 64)
    assert retrain_config(arch_path, "adjoint", base).train.latency_batches == (1, 64)  # a FLOPs search's


def test_re_timing_a_flops_search_of_a_python_object_says_it_has_no_latency_budget(arch_path, tmp_path):
    # a review: it said to re-time it with remeasure(model=), which then refused it as a FLOPs search
    from dan.latency import remeasure

    rec = json.load(open(arch_path))
    rec["space"] = "<object MobileNetV3>"
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(dan.UserError, match="not searched under a latency budget"):
        remeasure(dan.load_arch(str(path)))


def test_a_latency_retrain_says_whether_its_network_landed_in_the_band():
    # an audit's network at 122 % of its latency budget: the retrain's budget line read as if it had landed
    from types import SimpleNamespace

    from dan.cli.retrain import _band_text

    def arch(measured):
        return SimpleNamespace(budget={"latency": 0.5, "band": 0.03}, latency={"measured_ms": measured})

    assert _band_text(arch(0.611)) == ": 122.2% of the budget, OUTSIDE the ±3% band"
    assert _band_text(arch(0.505)) == ": 101.0% of the budget, inside the ±3% band"
    assert _band_text(arch(None)) == ""
