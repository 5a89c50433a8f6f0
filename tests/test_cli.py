"""The tools and the ``dan`` entry points as a user types them: user errors exit 2 with one line, no
traceback."""

import ast
import importlib
import os
import subprocess
import sys

import pytest
import torch

import dan

from tests.helpers import ROOT, assert_user_error, run_dan, run_tool

BASE = ["--epochs", "1", "--limit-batches", "2", "--batch-size", "16", "--set", "model.args.width=8",
        "--set", "train.latency_batches=[1]", "--quiet", "--no-tensorboard"]
SMOKE = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4"] + BASE


def test_train_smoke_prints_the_summary(tmp_path):
    out = str(tmp_path / "run")
    p = run_tool("train.py", *SMOKE, "--out", out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "big/small" in p.stdout and "tensorboard --logdir" not in p.stdout  # --no-tensorboard: nothing to show
    assert f"monitor:    {out}/metrics.jsonl (no TensorBoard files" in p.stdout
    assert os.path.isfile(os.path.join(out, "small.pt"))
    # the same command again must not overwrite the finished run
    again = run_tool("train.py", *SMOKE, "--out", out)
    assert_user_error(again, "already holds a run", "--resume")


@pytest.mark.parametrize("args,fragments", [
    (["--method", "nope"], ["--method", "nope"]),
    (["--alpha", "0.5"], ["--alpha"]),
    (["--beta", "1.5"], ["--beta"]),
    (["--epochs", "0"], ["--epochs"]),
    (["--space", "resnet999"], ["unknown model", "resnet999"]),
    (["--model", "torchvision.resnet999"], ["unknown torchvision model", "resnet999"]),
    (["--set", "train.nope=1"], ["unknown config key", "train.nope"]),
    (["--set", "train.epochs=many"], ["train.epochs"]),
    (["--config", "/nonexistent.yaml"], ["/nonexistent.yaml"]),
    (["--alpha", "-4"], ["--alpha"]),  # a plain negative number is a value to argparse
    (["--set", "-x"], ["expected one argument", "write --set=-x"]),  # any other '-' value it takes for an option
    (["--data", "/nope"], ["--data (data.data) does nothing for dataset synthetic", "drop it"]),  # ran, ignored
    (["--download"], ["--download (data.download) does nothing for dataset synthetic"]),
])
def test_bad_flags(tmp_path, args, fragments):
    p = run_tool("train.py", *SMOKE, "--out", str(tmp_path / "r"), *args)
    assert_user_error(p, *fragments)


def test_missing_datasets(tmp_path):
    p = run_tool("train.py", *BASE, "--out", str(tmp_path / "a"), "--dataset", "fashion_mnist",
                 "--data", str(tmp_path / "none"))
    assert_user_error(p, "Fashion-MNIST", "dataset-fashion-mnist")
    p = run_tool("train.py", *BASE, "--out", str(tmp_path / "b"), "--dataset", "cifar10",
                 "--data", str(tmp_path / "none"))
    assert_user_error(p, "--download")
    p = run_tool("train.py", *BASE, "--out", str(tmp_path / "c"), "--dataset", "imagefolder",
                 "--data", str(tmp_path / "none"))
    assert_user_error(p)


def test_corrupt_checkpoint_and_bad_config(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint at all")
    p = run_tool("train.py", *SMOKE, "--out", str(out), "--resume")
    assert_user_error(p, "corrupt")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2}\n")
    assert_user_error(run_tool("train.py", "--config", str(bad)), "not valid YAML")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("trian: {epochs: 1}\n")
    assert_user_error(run_tool("train.py", "--config", str(wrong)), "trian")


SEARCH = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--epochs", "1", "--limit-batches",
          "2", "--batch-size", "16", "--set", "model.args.width=8", "--quiet", "--no-tensorboard",
          "--set", "search.warmup_epochs=0"]  # a 1-epoch search that searches


def test_search_and_retrain_errors(tmp_path):
    p = run_tool("search.py", *SEARCH, "--out", str(tmp_path / "a"), "--budget-flops", "1K")
    assert_user_error(p, "infeasible", "ranges from")
    p = run_tool("search.py", *SEARCH, "--out", str(tmp_path / "b"))
    assert_user_error(p, "exactly one budget")
    # the default warm-up (1 epoch) takes a 1-epoch search whole: it would end where it started
    p = run_tool("search.py", *SEARCH, "--set", "search.warmup_epochs=1", "--budget-flops", "25%",
                 "--out", str(tmp_path / "w"))
    assert_user_error(p, "search.warmup_epochs 1 takes all 1 epoch", "--epochs 2", "search.warmup_epochs=0")
    assert not os.path.exists(tmp_path / "w")
    p = run_tool("search.py", *SEARCH, "--out", str(tmp_path / "c"), "--budget-flops", "25%", "--budget-params", "1M")
    assert_user_error(p, "--budget-params")
    p = run_tool("search.py", *SEARCH, "--out", str(tmp_path / "d"), "--budget-flops", "lots")
    assert_user_error(p, "lots")
    p = run_tool("search.py", *SEARCH, "--space", "torchvision.resnet18", "--out", str(tmp_path / "e"),
                 "--budget-flops", "25%")
    assert_user_error(p, "torchvision.resnet18", "'width'")  # the suite's model.args do not fit it
    bad = tmp_path / "arch.json"
    bad.write_text('{"version": 1, "space": "resnet18_small"}')
    assert_user_error(run_tool("retrain.py", str(bad)), "'space_args'")
    assert_user_error(run_tool("retrain.py", str(tmp_path / "none.json")), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(run_tool("retrain.py", str(tmp_path / "empty")), "is a folder without an arch.json")


# ---------------------------------------------------------------- the entry points: dan <command>
COMMANDS = ["train", "search", "retrain", "tune", "count", "baseline", "coverage", "latency", "latency_compare",
            "bench", "reproduce", "fuzz"]


def test_dan_help_lists_every_command_with_one_line():
    from dan.cli.main import COMMANDS as listed

    assert list(listed) == COMMANDS
    p = run_dan("--help")
    assert p.returncode == 0, p.stderr
    rows = [l.split() for l in p.stdout.splitlines() if l.startswith("  ") and not l.lstrip().startswith("-")]
    assert [r[0] for r in rows] == COMMANDS, p.stdout
    assert all(len(r) > 3 for r in rows), p.stdout  # each with its one-line description
    assert "usage: python -m dan <command> [args]" in p.stdout


def test_every_tool_is_a_thin_wrapper_of_its_command():
    """tools/<name>.py: a summary pointing at the command, then the call into dan.cli.<name>; no sys.path rewrite, and
    no tools/profile.py (it shadowed the standard library's profile module for every tool)."""
    tools = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".py"))
    assert tools == sorted(COMMANDS)
    for name in tools:
        src = open(os.path.join(ROOT, "tools", f"{name}.py")).read()
        assert "sys.path" not in src, name
        tree = ast.parse(src)
        doc = ast.get_docstring(tree, clean=False)
        assert doc and f"python tools/{name}.py --help" in doc and f"dan/cli/{name}.py" in doc, name
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported == {"dan.cli", f"dan.cli.{name}"}, (name, imported)
        # the same one-line summary; the full usage text lives once, in the command's module
        summary = importlib.import_module(f"dan.cli.{name}").__doc__.strip().splitlines()[0]
        assert doc.strip().splitlines()[0] == summary, name


@pytest.mark.parametrize("args,fragments", [
    (["resnet18_small", "--arg", "width=abc"], ["model.args.width", "'abc'"]),  # was a TypeError in the builder
    (["resnet18_small", "--arg", "nope=1"], ["has no argument 'nope'"]),
    (["/nonexistent/small.pt"], ["does not exist"]),  # was "unknown torchvision model"
    (["resnet18_small", "--alpha", "0"], ["expected a number >= 1"]),  # was "in [1.0, None]"
])
def test_count_refuses_bad_targets_and_arguments_in_one_line(args, fragments):
    assert_user_error(run_tool("count.py", *args), *fragments)


def test_the_less_used_tools_refuse_in_one_line_what_to_fix():
    # the list of suites left out "search", the one docs/search.md is made by
    assert_user_error(run_tool("reproduce.py", "--suite", "nope", "--dry-run"), "unknown suite 'nope'", "or search")
    # a negative seed was refused by the first search, quoted inside a long "... failed:" line
    assert_user_error(run_tool("latency_compare.py", "--seeds", "1", "-2"), "--seeds must be >= 0, got -2")
    # refine keeps its search's budget: one given was ignored
    assert_user_error(run_tool("baseline.py", "refine", "--supernet", "x.pt", "--budget-flops", "50%", "--out", "y"),
                      "drop --budget-flops")


def test_every_command_s_help_shows_its_usage_lines_as_written():
    """Each command's description is its module's docstring, laid out by hand (one example per
    line): --help prints every line of it unchanged (argparse's default formatter reflowed seven of
    them into one paragraph)."""
    for name in COMMANDS:
        mod = importlib.import_module(f"dan.cli.{name}")
        text = mod.get_args_parser().format_help()
        for line in mod.__doc__.strip().splitlines():
            assert line.rstrip() in text, (name, line)


def test_module_and_console_script_show_a_commands_help(tmp_path):
    p = run_dan("count", "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: python -m dan count ") and "python tools/count.py resnet50" in p.stdout
    script = os.path.join(os.path.dirname(sys.executable), "dan")
    if not os.path.isfile(script):
        pytest.skip("the console script is registered by pip install -e . (make setup)")
    q = subprocess.run([script, "train", "--help"], capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert q.returncode == 0, q.stderr
    assert q.stdout.startswith("usage: dan train ") and "--method" in q.stdout and "--alpha" in q.stdout


def test_a_user_error_through_python_m_dan_is_one_line(tmp_path):
    p = run_dan("search", *SEARCH, "--out", str(tmp_path / "a"), "--budget-flops", "lots")
    assert_user_error(p, "lots")
    assert not os.path.exists(tmp_path / "a")
    assert_user_error(run_dan("search", "--epochs", "0"), "--epochs", "(see python -m dan search --help)")
    assert_user_error(run_dan("serch", "--epochs", "1"), "unknown command 'serch'", "search")
    assert_user_error(run_dan(), "give a command")


def test_threads_sets_pytorchs_thread_count_for_the_run():
    # a 2-core machine busy with another job: the default (one thread per core) ran a search 20x slower
    from dan.cli.common import common_parser, resolve_config

    before = torch.get_num_threads()
    try:
        resolve_config(common_parser("x", "").parse_args(["--threads", "1", "--dataset", "synthetic"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert_user_error(run_tool("train.py", "--threads", "0"), "--threads", "positive integer")


@pytest.mark.parametrize("command, fragment", [("train", "checkpoints/last.pt; continue with --resume"),
                                               ("tune", "run the same command to continue"),
                                               ("reproduce", "half-done run is resumed"),
                                               ("baseline", "nothing was written"),
                                               ("count", "nothing to continue")])
def test_ctrl_c_says_what_each_command_keeps_and_how_to_go_on(monkeypatch, capsys, command, fragment):
    # tune said "continue with --resume" (the same command continues a study) and the tools that keep
    # no run folder spoke of checkpoints; the line is the command's, as a tool and through `dan`
    from dan.cli import main as dan_main
    from dan.cli.common import run_tool as run

    def interrupt(argv, prog=""):
        raise KeyboardInterrupt

    module = dan_main.command_module(command)
    interrupt.__module__ = module.__name__  # as the command's own main
    monkeypatch.setattr(module, "main", interrupt)
    for call in (lambda: run(module.main, []), lambda: dan_main.main([command])):
        with pytest.raises(SystemExit) as e:
            call()
        assert e.value.code == 130
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    monkeypatch.setenv("RANK", "1")  # under torchrun every rank is interrupted; rank 0 alone says so
    with pytest.raises(SystemExit) as e:
        run(module.main, [])
    assert e.value.code == 130 and capsys.readouterr().err == ""


def test_count_of_an_adjoint_conversion_gives_the_big_networks_own_params(tmp_path):
    import json

    # the big path's module also held the small path's BatchNorms: 11,692,072 against torchvision's 11,689,512
    proc = run_tool("count.py", "resnet18", "--alpha", "4", "--input-size", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["big"]["params"] == 11_689_512
    # a model's own shape check (a ViT's assert) is the user's input size, in one line
    assert_user_error(run_tool("count.py", "vit_b_32", "--input-size", "32"), "does not run on input 1x3x32x32",
                      "--input-size")
    # flags a file makes count.py ignore are refused, not dropped
    net = tmp_path / "small.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(net))
    assert_user_error(run_tool("count.py", str(net), "--alpha", "4"), "deployed network", "drop --alpha")
    (tmp_path / "checkpoints").mkdir()
    torch.save({"kind": "train"}, tmp_path / "checkpoints" / "last.pt")
    assert_user_error(run_tool("count.py", str(tmp_path / "checkpoints" / "last.pt"), "--input-size", "32"),
                      "drop --input-size")


def test_a_model_flag_leaves_out_the_builder_arguments_of_the_config_s_model():
    # latency.py's default config (width=16 for resnet18_small) reached torchvision's MobileNetV2
    # as "unexpected keyword argument 'width'"
    import argparse

    from dan.cli.common import resolve_config

    args = argparse.Namespace(config=os.path.join(ROOT, "configs", "fashion_mnist_resnet18.yaml"),
                              space="torchvision.mobilenet_v2", set=[])
    assert resolve_config(args).model.args == {}
    args.set = ["model.args.width_mult=0.5"]  # the new model's own, given after
    assert resolve_config(args).model.args == {"width_mult": 0.5}
    args.space, args.set = "resnet18_small", []  # the same model keeps them
    assert resolve_config(args).model.args == {"width": 16}


@pytest.mark.parametrize("flag,value", [("--latency-batch", "8"), ("--latency-runtime", "onnxruntime"),
                                        ("--latency-threads", "2")])
def test_a_latency_measurement_flag_without_a_latency_budget_is_refused(flag, value):
    # an audit: each was accepted under a FLOPs budget and did nothing (exit 0, not a word)
    assert_user_error(run_tool("search.py", "--dataset", "synthetic", "--budget-flops", "25%", flag, value),
                      flag, "--budget-latency")
    key = "search." + flag[2:].replace("-", "_")  # and as a --set (a user's pass: accepted, did nothing)
    assert_user_error(run_tool("search.py", "--dataset", "synthetic", "--budget-flops", "25%", "--set", f"{key}={value}"),
                      key, "--budget-latency")


def test_a_latency_key_of_the_config_without_a_latency_budget_is_refused_as_the_configs(tmp_path):
    # an audit: the config's search.latency_runtime was refused with "drop --latency-runtime", a flag
    # the command did not have (tools/latency_compare.py's FLOPs search, then the user, was told so)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {dataset: synthetic}\nsearch: {latency_runtime: onnxruntime}\n")
    proc = run_tool("search.py", "--config", str(cfg), "--budget-flops", "25%")
    assert_user_error(proc, "the config's search.latency_runtime: onnxruntime", "--budget-latency",
                      "remove search.latency_runtime from the config (or --set search.latency_runtime=torch)")
    assert "drop --latency-runtime" not in proc.stderr


def test_a_temperature_decay_that_would_change_nothing_is_refused():
    # the default anneals per step: --tau-decay (and the shipped tuning file's tau_decay) did nothing
    assert_user_error(run_tool("search.py", "--dataset", "synthetic", "--budget-flops", "25%", "--tau-decay", "0.5"),
                      "--tau-decay", "search.tau_anneal=epoch")
    from dan.config import Config
    from dan.tune import spec_from_dict
    from dan.tune.sweep import check_sampled_settings

    spec = spec_from_dict({"search_epochs": 2, "retrain_epochs": 1,
                           "params": {"search.tau_decay": {"type": "float", "low": 0.3, "high": 0.9}}})
    with pytest.raises(dan.UserError, match="samples search.tau_decay, which acts only with search.tau_anneal"):
        check_sampled_settings(Config().resolve("tune"), spec)
    # sampled beside the anneal it acts under, it is kept
    spec = spec_from_dict({"search_epochs": 2, "retrain_epochs": 1,
                           "params": {"search.tau_decay": {"type": "float", "low": 0.3, "high": 0.9},
                                      "search.tau_anneal": {"type": "categorical", "choices": ["step", "epoch"]}}})
    check_sampled_settings(Config().resolve("tune"), spec)


def test_tools_that_do_not_name_their_folder_by_name_refuse_it():
    # retrain.py wrote into <search>/retrain-adjoint whatever --name said
    for tool, rest in (("tune.py", ["--study", "s", "--trials", "1", "--budget-flops", "25%"]),
                       ("baseline.py", ["uniform", "--budget-flops", "25%", "--out", "x"])):
        assert_user_error(run_tool(tool, "--dataset", "synthetic", "--name", "foo", *rest), "--name does not choose")


def test_count_keeps_the_traceback_of_its_own_asserts(monkeypatch):
    # a model's shape assert is the user's input size; one of DAN's own is a bug, not a user error
    from dan.cli import count as count_cli

    scope: dict = {}  # a function whose code is a file of the package, as an assert of DAN's own is
    exec(compile("def own(*a, **k):\n    assert False, \"dan's own invariant\"\n",
                 os.path.join(os.path.dirname(dan.__file__), "cost.py"), "exec"), scope)
    monkeypatch.setattr(dan, "count", scope["own"])
    with pytest.raises(AssertionError, match="dan's own invariant"):
        count_cli.count_at(torch.nn.Linear(2, 2), (1, 2), "net")
    monkeypatch.setattr(dan, "count", lambda *a, **k: exec("assert False, 'Wrong image height!'"))  # a model's
    with pytest.raises(dan.UserError, match="does not run on input 1x2"):
        count_cli.count_at(torch.nn.Linear(2, 2), (1, 2), "net")


def test_a_relative_data_folder_is_recorded_as_an_absolute_path(tmp_path, monkeypatch):
    # a search with --data base kept "base" in its config and arch.json; its retrain, started in
    # another folder, looked for ./base there
    import argparse

    from dan.cli.common import resolve_config

    monkeypatch.chdir(tmp_path)
    for flags in ({"data": "base"}, {"set": ["data.data=base"]}):
        args = argparse.Namespace(**{"config": None, "set": [], **flags})
        assert resolve_config(args).data.data == str(tmp_path / "base")
    assert resolve_config(argparse.Namespace(config=None, set=[])).data.data is None


def test_the_monitor_line_names_tensorboard_only_when_the_run_wrote_its_files(tmp_path):
    from dan.cli.common import tensorboard_hint

    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    assert tensorboard_hint(str(run)).startswith(f"{run}/metrics.jsonl (no TensorBoard files")
    (run / "events.out.tfevents.1.host").write_bytes(b"")
    assert tensorboard_hint(str(run)).startswith("tensorboard --logdir ")
    assert tensorboard_hint(str(run / "trials" / "x")).startswith("the metrics.jsonl of each folder in")


def test_count_shows_nonzero_params_for_trained_networks_only(tmp_path):
    # a fresh network's zero BatchNorm biases read as pruning ("56,090 nonzero" of 56,447)
    fresh = run_tool("count.py", "resnet18_small", "--arg", "width=8")
    assert fresh.returncode == 0, fresh.stderr
    assert "params, input" in fresh.stdout and "nonzero)" not in fresh.stdout
    out = str(tmp_path / "run")
    assert run_tool("train.py", *SMOKE, "--out", out).returncode == 0
    trained = run_tool("count.py", os.path.join(out, "checkpoints", "last.pt"))
    assert trained.returncode == 0 and "nonzero), input" in trained.stdout, trained.stderr


def test_count_does_not_blame_the_input_size_for_a_network_whose_sibling_ran_at_it(monkeypatch):
    # an extracted small network that failed where its big network ran was "does not run on input
    # 1x3x32x32 ...: pass its --input-size" (LeNet's constant flatten, which ran at 32)
    from dan.cli import count as count_cli

    monkeypatch.setattr(dan, "count", lambda *a, **k: exec("raise RuntimeError(\"shape '[1, 400]' is invalid\")"))
    with pytest.raises(dan.UserError, match="does not run on input 1x2"):
        count_cli.count_at(torch.nn.Linear(2, 2), (1, 2), "net")
    with pytest.raises(RuntimeError, match="is invalid") as e:
        count_cli.count_at(torch.nn.Linear(2, 2), (1, 2), "net", others_ran=True)
    assert not isinstance(e.value, dan.UserError)


def test_another_dataset_on_the_command_line_drops_the_config_files_dataset_settings():
    # configs/cifar10_resnet18.yaml --dataset synthetic (a smoke test) was refused: its data: data/cifar10
    import argparse

    from dan.cli.common import resolve_config

    cfg = resolve_config(argparse.Namespace(config="configs/cifar10_resnet18.yaml", set=[], dataset="synthetic"))
    assert cfg.data.dataset == "synthetic" and cfg.data.data is None
    kept = resolve_config(argparse.Namespace(config="configs/cifar10_resnet18.yaml", set=[], dataset="cifar10"))
    assert kept.data.data == "data/cifar10"


def test_a_search_whose_distributions_stayed_near_uniform_says_so():
    # an audit's 2-epoch ResNet-50 search ended at 0.135 against 0.125 uniform and said nothing of it
    from types import SimpleNamespace

    from dan.cli.search import uncommitted

    cands = {"a": list(range(8)), "b": list(range(8))}

    def arch(a, b, c=None):
        top = {"a": a, "b": b, **({"c": c} if c is not None else {})}
        return SimpleNamespace(search={"mean_max_prob": sum(top.values()) / len(top), "max_prob": top},
                               candidates={**cands, **({"c": [1, 2]} if c is not None else {})})

    note = uncommitted(arch(0.13, 0.14))
    assert note.startswith("the width distributions stayed near uniform (mean largest probability 0.135; 0.125 if")
    assert uncommitted(arch(0.3, 0.3)) is None
    assert uncommitted(arch(0.6, 0.6, 0.9)) is None  # a group of two candidates at 0.9: committed, not "near uniform"
    assert uncommitted(arch(0.13, 0.13, 0.52)) is not None
    assert uncommitted(SimpleNamespace(search={"method": "uniform"}, candidates=cands)) is None  # (no distributions)


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    # kill, timeout and a cluster's preemption send SIGTERM: the run ended without a word (its lock
    # left behind); now it says what it kept and how to go on, and exits 143 as the shell reports it
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT

    out = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--dataset", "synthetic", "--image-size", "16",
         "--num-classes", "4", "--batch-size", "32", "--limit-batches", "2", "--set", "model.args.width=8",
         "--set", "data.synthetic_size=256", "--epochs", "1000", "--quiet", "--no-tensorboard", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [f"interrupted: finished epochs are in {out}/checkpoints/last.pt; "
                                        f"continue with --resume"]


def test_a_tool_run_inside_another_leaves_the_outer_sigterm_handler_in_place():
    # the fuzz tool runs the tools inside its own run: the inner run's end put SIGTERM back to its
    # default, and a later SIGTERM ended one case of the fuzz run (exit 143) instead of the run
    import signal

    from dan.cli.common import run_tool as run

    seen = []

    def inner(argv):
        seen.append(signal.getsignal(signal.SIGTERM))
        return 0

    def outer(argv):
        for _ in range(2):
            with pytest.raises(SystemExit):
                run(inner, [])
        seen.append(signal.getsignal(signal.SIGTERM))
        return 0

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (as in a tool's own process)
    try:
        with pytest.raises(SystemExit) as e:
            run(outer, [])
        assert e.value.code == 0 and len(set(map(id, seen))) == 1 and seen[0] is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back when the outer run ends
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_run_does_not_write_over_the_config_file_or_folder_it_was_given(tmp_path):
    # an audit: `train.py --config exp/config.yaml --out exp` wrote the resolved config over the user's
    # own file, and `name: ".."` made the current folder the run's
    exp = tmp_path / "exp"
    exp.mkdir()
    mine = "# my experiment\ndata: {dataset: synthetic, synthetic_size: 64, image_size: 16, num_classes: 4}\n"
    (exp / "config.yaml").write_text(mine)
    p = run_tool("train.py", "--config", str(exp / "config.yaml"), "--out", str(exp), "--epochs", "1")
    assert_user_error(p, "is where this run writes its config.yaml", "choose another --out")
    assert (exp / "config.yaml").read_text() == mine and os.listdir(exp) == ["config.yaml"]
    (exp / "up.yaml").write_text(mine + "name: ..\n")
    p = run_tool("train.py", "--config", str(exp / "up.yaml"), "--epochs", "1", cwd=str(exp))
    assert_user_error(p, "config key 'name' ('..') names the run's folder under runs/", "--out")
    assert sorted(os.listdir(exp)) == ["config.yaml", "up.yaml"] and not (tmp_path / "config.yaml").exists()
    from dan.config import Config

    for name in ("a/../..", "/tmp/x", "", "a//b"):
        with pytest.raises(dan.UserError, match="names the run's folder under runs/.*or choose the folder with out="):
            Config.from_dict({"name": name}).validate()
    assert Config.from_dict({"name": "exp1/seed0"}).validate().run_dir == os.path.join("runs", "exp1/seed0")
