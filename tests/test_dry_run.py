"""``--dry-run`` of search.py, retrain.py and train.py (:mod:`dan.dry_run`): every check the run makes
before its first epoch, then its plan on stdout, exit 0, and nothing written; a user error is the
run's own one line, exit 2. The audit: search.py refused ``--dry-run`` as an unknown flag."""

import os

from dan import latency
from dan.dry_run import plan_search
from dan.supernet import build_supernet

from tests.helpers import assert_user_error, run_tool, tiny_config

SEARCH = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--epochs", "1", "--limit-batches",
          "2", "--batch-size", "16", "--set", "model.args.width=8", "--set", "data.synthetic_size=96", "--quiet",
          "--no-tensorboard", "--set", "search.warmup_epochs=0"]


def _files(root) -> dict:
    """Every file under ``root`` with its size and modification time."""
    found = {}
    for folder, _, names in os.walk(root):
        for n in names:
            st = os.stat(os.path.join(folder, n))
            found[os.path.join(folder, n)] = (st.st_size, st.st_mtime_ns)
    return found


def _rows(stdout: str) -> dict:
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in stdout.splitlines() if ":" in line}


def test_a_dry_run_of_a_search_prints_its_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "runs" / "s"
    p = run_tool("search.py", *SEARCH, "--budget-flops", "25%", "--out", str(out), "--dry-run", cwd=str(tmp_path))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines[:6]] == ["model", "data", "budget", "width groups", "epochs",
                                                             "run folder"]  # printed under --quiet too
    rows = _rows(p.stdout)
    assert rows["model"].startswith("resnet18_small(width=8), input 3x16x16, 4 classes; big network ")
    # synthetic_size 96 images: a held-out part of the training split for the architecture steps
    assert rows["data"].startswith("synthetic: ") and "held out for the architecture steps" in rows["data"]
    assert rows["budget"].startswith("25% = ") and "25.0% of the widest small network's" in rows["budget"]
    assert "feasible: " in rows["budget"] and "band ±3%" in rows["budget"]
    assert rows["width groups"].split(":")[0].isdigit() and "candidates" in rows["width groups"]
    assert rows["epochs"].startswith("1 × 2 steps per epoch (batch 16")
    assert rows["run folder"] == f"{out}: would start anew (the folder would be made)"
    assert lines[-1].startswith("dry run: nothing was written")
    assert os.listdir(tmp_path) == []  # no run folder, nothing in the working folder


def test_a_dry_run_with_an_infeasible_budget_is_the_runs_one_line_error(tmp_path):
    p = run_tool("search.py", *SEARCH, "--budget-flops", "1K", "--out", str(tmp_path / "s"), "--dry-run")
    assert_user_error(p, "budget 1.00K flops is infeasible", "choose a budget in that range")
    assert p.stdout == "" and os.listdir(tmp_path) == []


def test_a_dry_run_says_it_would_resume_and_changes_nothing_of_the_run(tmp_path):
    out = str(tmp_path / "s")
    assert run_tool("search.py", *SEARCH, "--budget-flops", "25%", "--out", out).returncode == 0
    before = _files(tmp_path)
    p = run_tool("search.py", *SEARCH, "--budget-flops", "25%", "--out", out, "--resume", "--epochs", "2",
                 "--dry-run")
    assert p.returncode == 0, p.stderr
    assert _rows(p.stdout)["run folder"] == f"{out}: would resume after epoch 1 of 2 (step 2)"
    # without --resume the run would be refused: so is its dry run, in the run's words
    p = run_tool("search.py", *SEARCH, "--budget-flops", "25%", "--out", out, "--dry-run")
    assert_user_error(p, "already holds a run", "--resume")
    # a resume the checkpoint refuses (another computation) is refused by the dry run too
    p = run_tool("search.py", *SEARCH, "--budget-flops", "30%", "--out", out, "--resume", "--dry-run")
    assert_user_error(p, "was written with search.budget_flops='25%'")
    # the retrain of what it found: the arch.json's budget, the supernet it starts from, its own folder
    p = run_tool("retrain.py", out, "--epochs", "1", "--limit-batches", "2", "--quiet", "--dry-run")
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    assert "flops; the found small network" in rows["budget"]
    assert rows["weights from"].startswith(os.path.join(out, "checkpoints", "last.pt"))
    assert rows["run folder"] == f"{os.path.join(out, 'retrain-adjoint')}: would start anew (the folder would be made)"
    assert _files(tmp_path) == before  # not a byte nor a time stamp changed


def test_a_dry_run_of_train_writes_nothing(tmp_path):
    p = run_tool("train.py", *SEARCH[:-2], "--method", "kd", "--out", str(tmp_path / "t"), "--dry-run")
    assert p.returncode == 0, p.stderr
    rows = _rows(p.stdout)
    assert rows["model"].startswith("resnet18_small(width=8), method kd")
    assert rows["teacher"].startswith("the base network, trained first the standard way for 1 epochs")
    assert rows["epochs"].startswith("1 × 2 steps per epoch")
    assert os.listdir(tmp_path) == []


def test_a_latency_budgets_dry_run_measures_no_table(monkeypatch, tmp_path):
    """Without a cached table the plan says one would be measured, and the cache stays untouched;
    with one, the budget is read from it (in ms, with the space's predicted range)."""
    monkeypatch.setenv("DAN_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(str(tmp_path / "s"))
    cfg.search.budget_latency = "100%"
    rows = dict(plan_search(cfg).rows)
    assert rows["latency table"].startswith("none cached for this network and device: it would be measured first")
    assert rows["budget"].startswith("100% (latency): its value in ms")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(latency, "time_calls", lambda fns, **kw: ([0.01 * (1 + k % 7) for k in range(len(fns))], 1.0))
    from dan.data import dataset_info

    sn = build_supernet(cfg.resolve("search"), dataset_info(cfg.data))
    latency.build(sn, progress=False)  # a table of fake timings in the cache
    before = _files(tmp_path)
    rows = dict(plan_search(cfg).rows)
    assert rows["latency table"].startswith("the cached one would be used: " + str(tmp_path / "cache"))
    assert rows["budget"].startswith("100% = ") and " ms, 100.0% of the widest" in rows["budget"]
    assert _files(tmp_path) == before and not os.path.exists(tmp_path / "s")


def test_a_dry_run_downloads_nothing_and_says_what_the_run_would(tmp_path, monkeypatch):
    """An audit: ``--dry-run --download`` of a CIFAR run fetched CIFAR-10 (about 170 MB) into the
    data folder, and pretrained torchvision weights were fetched into torch hub's cache. The dry
    run checks stand-ins of the same shapes and lists what the run would fetch; nothing is written,
    and no network is touched (any attempt fails this test)."""
    import socket
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("the dry run went to the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # TORCH_HOME read afresh
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.data.dataset, cfg.data.data, cfg.data.download = "cifar10", str(tmp_path / "cifar"), True
    cfg.data.image_size = cfg.data.num_classes = None
    cfg.model.space, cfg.model.args = "torchvision.mobilenet_v3_small", {"weights": "IMAGENET1K_V1"}
    cfg.search.budget_flops = "50%"
    plan = plan_search(cfg)
    rows = dict(plan.rows)
    assert rows["data"].startswith(f"cifar10 in {tmp_path / 'cifar'}: ")
    assert f"cifar10 into {tmp_path / 'cifar'} (about 170 MB)" in rows["downloads"]
    assert "torchvision.mobilenet_v3_small weights IMAGENET1K_V1 into " in rows["downloads"]
    assert os.listdir(tmp_path) == []  # no run folder, data folder or hub cache
