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
    assert_user_error(run_tool("train.py", "--dataset", "synthetic", "--dry-run", "--set", "model.args={width: 8, width: 16}"),
                      "the value of model.args: key 'width' appears twice")


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


# ------------------------------------------------------------------ 5. the wrong file
def test_a_folder_or_a_tuning_file_as_config_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert_user_error(run_tool("train.py", "--config", str(run)), "is a directory", "pass the YAML file")
    (run / "config.yaml").write_text("train: {epochs: 1}\n")
    assert_user_error(run_tool("train.py", "--config", str(run)), "is a directory", str(run / "config.yaml"))
    assert_user_error(run_tool("tune.py", "--tune", str(run), "--study", "s", "--trials", "1",
                                "--dataset", "synthetic", "--out", str(tmp_path / "study")), "tuning file", "is a directory")
    tuning = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                          "tune_fashion_mnist.yaml")
    assert_user_error(run_tool("train.py", "--config", tuning), "is a tuning file", "tools/tune.py --tune")
    with pytest.raises(dan.UserError, match="experiment config; pass it with --config"):
        load_spec(_write(tmp_path, "cfg.yaml", "train: {epochs: 1}\n"))
