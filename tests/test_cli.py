"""The tools as a user types them: user errors exit 2 with one line, no traceback."""

import os

import pytest

from tests.helpers import assert_user_error, run_tool

BASE = ["--epochs", "1", "--limit-batches", "2", "--batch-size", "16", "--set", "model.args.width=8",
        "--set", "train.latency_batches=[1]", "--quiet", "--no-tensorboard"]
SMOKE = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4"] + BASE


def test_train_smoke_prints_the_summary(tmp_path):
    out = str(tmp_path / "run")
    p = run_tool("train.py", *SMOKE, "--out", out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "big/small" in p.stdout and "tensorboard --logdir" in p.stdout
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
          "2", "--batch-size", "16", "--set", "model.args.width=8", "--quiet", "--no-tensorboard"]


def test_search_and_retrain_errors(tmp_path):
    p = run_tool("search.py", *SEARCH, "--out", str(tmp_path / "a"), "--budget-flops", "1K")
    assert_user_error(p, "infeasible", "ranges from")
    p = run_tool("search.py", *SEARCH, "--out", str(tmp_path / "b"))
    assert_user_error(p, "exactly one budget")
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
