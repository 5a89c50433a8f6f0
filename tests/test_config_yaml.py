"""An audit of users' own YAML configs: duplicate keys, YAML 1.1's quirks (1e-3 a string, off a
bool, a name a date), nesting deep enough to break the parser, search.tau_decay ignored in
silence, a folder or a tuning file passed as --config, and data.holdout_batch_size dropped by a
search. Each test fails without its fix."""

import os
import re

import pytest
import yaml

import dan
from dan.config import Config
from dan.monitor import Monitor
from dan.search import search
from dan.tune import load_spec
from tests.helpers import assert_user_error, run_tool, tiny_config


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ 1. duplicate keys
@pytest.mark.parametrize("text,fragment", [
    # the second section replaced the first: trained on fashion_mnist
    ("data: {dataset: synthetic, synthetic_size: 64}\ntrain: {epochs: 1}\nseed: 3\ndata: {batch_size: 16}\n",
     "key 'data' appears twice (lines 1 and 4): merge them"),
    ("train:\n  lr: 0.01\n  epochs: 1\n  lr: 0.0001\n", "key 'train.lr' appears twice (lines 2 and 4)"),
    ("methods: {kd: {temperature: 2}, kd: {alpha: 0.5}}\n", "key 'methods.kd' appears twice (line 1, columns"),
])
def test_a_key_given_twice_in_a_config_file_is_refused_with_both_lines(tmp_path, text, fragment):
    path = _write(tmp_path, "dup.yaml", text)
    with pytest.raises(dan.UserError, match="config file .*dup.yaml: " + re.escape(fragment)):
        Config.from_file(path)


def test_a_key_given_twice_is_refused_by_the_tools_in_one_line(tmp_path):
    path = _write(tmp_path, "dup.yaml", "data: {dataset: synthetic}\ndata: {batch_size: 16}\n")
    assert_user_error(run_tool("train.py", "--config", path, "--dry-run"), "dup.yaml", "'data' appears twice",
                      "lines 1 and 2")
    # a --set value that is a YAML mapping
    assert_user_error(run_tool("train.py", "--dataset", "synthetic", "--dry-run", "--set",
                               "model.args={width: 8, width: 16}"), "the value of model.args: key 'width' appears twice")


def test_a_tuning_file_with_two_params_blocks_is_refused(tmp_path):
    path = _write(tmp_path, "tune.yaml", "params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\n"
                                         "search_epochs: 2\nparams:\n  adjoint.c: {type: float, low: 0.5, high: 2}\n")
    with pytest.raises(dan.UserError, match=r"tuning file .*tune.yaml: key 'params' appears twice \(lines 1 and 4\)"):
        load_spec(path)


# ------------------------------------------------------------------ 2. YAML 1.1's quirks
def test_numbers_in_e_notation_are_floats(tmp_path):
    cfg = Config.from_file(_write(tmp_path, "lr.yaml", "train: {lr: 1e-3, min_lr: 5E-6}\nadjoint: {c: 1.5e1}\n"))
    assert (cfg.train.lr, cfg.train.min_lr, cfg.adjoint.c) == (1e-3, 5e-6, 15.0)
    cfg = Config()
    cfg.set("train.lr", "1e-3")  # --set train.lr=1e-3: "must be float, got '1e-3'"
    assert cfg.train.lr == 1e-3
    cfg.set("seed", "12")  # integers stay integers
    assert cfg.seed == 12
    path = _write(tmp_path, "tune.yaml", "params:\n  train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n")
    assert load_spec(path).params["train.lr"] == {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}


def test_a_string_key_takes_the_text_written_and_a_bool_key_the_bool(tmp_path):
    cfg = Config.from_file(_write(tmp_path, "x.yaml", "name: 2026-12-07\ntrain: {amp: off}\n"
                                                      "data: {augment: off, download: yes, data: 2026-12-07}\n"))
    assert (cfg.name, cfg.train.amp, cfg.data.data) == ("2026-12-07", "off", "2026-12-07")
    assert (cfg.data.augment, cfg.data.download) == (False, True)  # bools stay YAML 1.1's
    cfg.validate()
    assert yaml.safe_load(cfg.to_yaml())["train"]["amp"] == "off"  # the run's config.yaml reads back the same
    cfg = Config()
    cfg.set("data.data", "2026-12-07")  # an Optional[str] key: the text as typed, not a date
    cfg.set("data.augment", "off")
    assert (cfg.data.data, cfg.data.augment) == ("2026-12-07", False)
    path = _write(tmp_path, "tune.yaml", "params:\n  train.amp: {type: categorical, choices: [auto, off]}\n"
                                         "  data.augment: {type: categorical, choices: [on, off]}\n")
    params = load_spec(path).params
    assert params["train.amp"]["choices"] == ["auto", "off"]
    assert params["data.augment"]["choices"] == [True, False]


def test_off_in_a_config_file_reaches_the_run(tmp_path):
    path = _write(tmp_path, "amp.yaml", "train: {amp: off}\ndata: {dataset: synthetic}\n")
    p = run_tool("train.py", "--config", path, "--dry-run", "--set", "model.args.width=8",
                 "--image-size", "16", "--num-classes", "4")
    assert p.returncode == 0, p.stderr[-2000:]


# ------------------------------------------------------------------ 3. deep nesting
def test_deeply_nested_yaml_is_one_line(tmp_path):
    deep = "[" * 5000 + "]" * 5000
    path = _write(tmp_path, "deep.yaml", "model: {args: {junk: " + deep + "}}\n")
    assert_user_error(run_tool("train.py", "--config", path), "deep.yaml", "nest more than")
    assert_user_error(run_tool("train.py", "--dataset", "synthetic", "--set", f"model.args.x={deep}"),
                      "the value of model.args.x", "nest more than")
    ok = Config.from_dict(None)
    ok.set("model.args.x", "[[[1]]]")  # a few levels are data
    assert ok.model.args["x"] == [[[1]]]


# ------------------------------------------------------------------ 4. search.tau_decay
SEARCH = ["--budget-flops", "40%", "--dry-run", "--image-size", "16", "--num-classes", "4",
          "--set", "model.args.width=8"]


def test_tau_decay_under_the_per_step_anneal_is_refused_wherever_it_is_set(tmp_path):
    path = _write(tmp_path, "s.yaml", "data: {dataset: synthetic}\nsearch: {tau_decay: 0.5}\n")
    assert_user_error(run_tool("search.py", "--config", path, *SEARCH), "search.tau_decay: 0.5 (config)",
                      "search.tau_anneal")
    assert_user_error(run_tool("search.py", "--dataset", "synthetic", *SEARCH, "--set", "search.tau_decay=0.5"),
                      "--set search.tau_decay=0.5", "search.tau_anneal")
    assert_user_error(run_tool("search.py", "--dataset", "synthetic", *SEARCH, "--tau-decay", "0.5"),
                      "--tau-decay decays the temperature per epoch")
    # with the anneal it acts under, it is taken
    p = run_tool("search.py", "--config", path, *SEARCH, "--set", "search.tau_anneal=epoch")
    assert p.returncode == 0, p.stderr[-2000:]
    # from Python too
    with pytest.raises(dan.UserError, match="search.tau_decay: 0.5"):
        search(tiny_config(str(tmp_path / "api"), **{"search.tau_decay": 0.5, "search.budget_flops": "40%"}))


def _one_epoch_search(out, monkeypatch, **kw):
    """A search as an older DAN ran it: without :func:`check_tau_decay` (its tau_decay ignored)."""
    import sys

    ds = sys.modules["dan.search"]  # the module (dan.search is also the function)
    cfg = tiny_config(str(out), **{"train.epochs": 1, "train.limit_batches": 2, "search.budget_flops": "40%",
                                   "search.warmup_epochs": 0, "search.tau_decay": 0.5, **kw})
    with monkeypatch.context() as m:
        m.setattr(ds, "check_tau_decay", lambda cfg: None)
        search(cfg, Monitor(None))
    return cfg


def test_a_run_an_older_dan_made_with_tau_decay_resumes_and_retrains(tmp_path, monkeypatch):
    from dan.checkpoint import load_checkpoint, save_checkpoint
    from dan.retrain import retrain_base, retrain_config

    # after tau_anneal existed: tau_decay 0.5 saved beside the per-step anneal, ignored
    out = tmp_path / "step"
    cfg = _one_epoch_search(out, monkeypatch)
    assert yaml.safe_load((out / "config.yaml").read_text())["search"]["tau_decay"] == 0.5
    cfg.train.epochs = 2
    arch = search(cfg, Monitor(None), resume=True)  # the same config: resumed, not refused
    assert arch.config["search"]["tau_anneal"] == "step"
    arch_path = str(out / "arch.json")
    retrain_config(arch_path, "adjoint", retrain_base(dan.load_arch(arch_path)))  # and retrained
    # before tau_anneal existed: tau_decay alone, annealed per epoch; resumed by the config file
    # the user wrote then (no tau_anneal), it anneals per epoch again
    out = tmp_path / "before"
    _one_epoch_search(out, monkeypatch)
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["search"]["tau_anneal"]
    (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    last = str(out / "checkpoints" / "last.pt")
    st = load_checkpoint(last)
    st["config"] = old
    del st["rng"]["code"]  # an older DAN recorded none
    save_checkpoint(st, last)
    mine = dict(old, train={**old["train"], "epochs": 2})
    user = Config.from_file(_write(tmp_path, "old.yaml", yaml.safe_dump(mine, sort_keys=False)))
    arch = search(user, Monitor(None), resume=True)
    assert arch.config["search"]["tau_anneal"] == "epoch" and arch.config["search"]["tau_decay"] == 0.5
    # a new run from that file is refused: today it would anneal per step and ignore tau_decay
    user.out = str(tmp_path / "new")
    with pytest.raises(dan.UserError, match="search.tau_decay: 0.5"):
        search(user, Monitor(None))


def test_a_new_study_refuses_a_base_config_whose_tau_decay_does_nothing(tmp_path):
    from dan.tune import spec_from_dict, tune

    spec = spec_from_dict({"search_epochs": 2, "retrain_epochs": 1,
                           "params": {"adjoint.c": {"type": "float", "low": 0.5, "high": 2.0}}})
    base = tiny_config(str(tmp_path / "study"), **{"search.tau_decay": 0.5, "search.budget_flops": "40%"})
    with pytest.raises(dan.UserError, match="search.tau_decay: 0.5"):
        tune(base, spec, "s", 1, None)


# ------------------------------------------------------------------ 5. the wrong file
def test_a_folder_or_a_tuning_file_as_config_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert_user_error(run_tool("train.py", "--config", str(run)), "is a directory", "pass the YAML file")
    (run / "config.yaml").write_text("train: {epochs: 1}\n")
    assert_user_error(run_tool("train.py", "--config", str(run)), "is a directory", str(run / "config.yaml"))
    assert_user_error(run_tool("tune.py", "--tune", str(run), "--study", "s", "--trials", "1",
                                "--dataset", "synthetic", "--out", str(tmp_path / "study")),
                      "tuning file", "is a directory")
    tuning = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                          "tune_fashion_mnist.yaml")
    assert_user_error(run_tool("train.py", "--config", tuning), "is a tuning file", "tools/tune.py --tune")
    with pytest.raises(dan.UserError, match="experiment config; pass it with --config"):
        load_spec(_write(tmp_path, "cfg.yaml", "train: {epochs: 1}\n"))


# ------------------------------------------------------------------ 6. data.holdout_batch_size in a search
def test_a_search_keeps_the_held_out_batch_size_the_user_gave(tmp_path):
    s = tiny_config("unused", **{"data.holdout_batch_size": 16, "data.batch_size": 128}).resolve("search")
    assert (s.data.holdout_batch_size, s.search.arch_batch_size) == (16, 16)  # was 64, 64
    assert s.resolve("search").to_dict() == s.to_dict()
    s = tiny_config("unused", **{"data.batch_size": 128}).resolve("search")
    assert (s.data.holdout_batch_size, s.search.arch_batch_size) == (64, 64)  # the default is unchanged
    cfg = tiny_config("unused", **{"data.holdout_batch_size": 16, "search.arch_batch_size": 8})
    with pytest.raises(dan.UserError, match="data.holdout_batch_size 16 and search.arch_batch_size 8 differ"):
        cfg.resolve("search")
    with pytest.raises(dan.UserError, match="data.holdout_batch_size"):
        tiny_config("unused", **{"data.holdout_batch_size": 0}).resolve("search")
