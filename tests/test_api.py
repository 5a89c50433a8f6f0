"""The Python API as a notebook calls it (``dan.search``, ``dan.to_adjoint``, ``dan.count``,
``dan.adjoint_loss``, ``dan.latency.remeasure``): what a call leaves behind in the caller's process
(threads, open files, the global random generators) and what a wrong argument is told."""

import gc
import os
import re
import threading
import warnings

import pytest
import torch

import dan
from tests.helpers import tiny_config

DATA = {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "synthetic_size": 64, "batch_size": 16}


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4))


def _cfg(tmp_path, out="unused", **overrides):
    return tiny_config(str(tmp_path / out), **{"train.epochs": 1, "train.limit_batches": 2,
                                                   "search.warmup_epochs": 0, **overrides})


def _leftovers(before: set, caught: list) -> tuple[list, list]:
    """The threads started since ``before`` that still run, and the ResourceWarnings ``caught``."""
    gc.collect()  # an unclosed file warns when it is collected
    return ([t.name for t in threading.enumerate() if t not in before],
            [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)])


def test_a_search_from_python_closes_the_monitor_it_made_however_it_ends(tmp_path, monkeypatch):
    from dan.engine import train
    from dan.search import Searcher

    dan.to_adjoint(_net(), input_shape=(1, 3, 16, 16))  # torch.fx's tqdm monitor thread: one per process
    before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=str(tmp_path / "s"))
        assert _leftovers(before, caught) == ([], [])  # a TensorBoard writer thread and metrics.jsonl were left open
        train(_cfg(tmp_path, "t", **{"train.latency_batches": []}))  # dan.engine.train too
        assert _leftovers(before, caught) == ([], [])

        def fails(self):  # after the first steps were logged: both files are open
            raise RuntimeError("boom")

        monkeypatch.setattr(Searcher, "end_epoch", fails)
        with pytest.raises(RuntimeError, match="boom"):
            dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=str(tmp_path / "fails"))
        assert (tmp_path / "fails" / "metrics.jsonl").exists()
        assert _leftovers(before, caught) == ([], [])
    # a monitor the caller passes is the caller's: left open
    from dan.monitor import Monitor

    mine = Monitor(str(tmp_path / "mine"))
    monkeypatch.undo()
    dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=str(tmp_path / "mine"), monitor=mine)
    assert mine._jsonl is not None and not mine._jsonl.closed
    # handed to a second call in another folder, it would write that run's metrics beside the first's
    with pytest.raises(dan.UserError, match="the monitor writes to .*mine and this run's folder is .*other"):
        dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=str(tmp_path / "other"), monitor=mine)
    assert not (tmp_path / "other").exists()
    mine.close()


def _draws() -> tuple:
    import random

    import numpy as np

    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_a_search_from_python_gives_the_caller_its_random_generators_back(tmp_path):
    """It left them seeded by the run: every network built afterwards without a seed of its own had
    the same initial weights. The run's own numbers stay its seed's (arch.json's widths below)."""
    from dan.engine import train

    _seed_all(7)
    expected = _draws()
    net, cfg = _net(), _cfg(tmp_path)
    _seed_all(7)
    arch = dan.search(net, DATA, budget="40%", cfg=cfg, out=str(tmp_path / "a"))
    assert _draws() == expected
    _seed_all(8)  # another caller's state: the same answer
    assert dan.search(net, DATA, budget="40%", cfg=cfg, out=str(tmp_path / "b")).widths == arch.widths
    cfg = _cfg(tmp_path, "t", **{"train.latency_batches": []})
    _seed_all(7)
    train(cfg)  # dan.engine.train too
    assert _draws() == expected


def test_a_wrong_model_is_named_with_what_to_pass(tmp_path):
    """``dan.search(None, ...)`` said "this network was searched as a Python object (NoneType):
    rebuild it with dan.build_adjoint(...)"; a name or a builder not called was an AttributeError;
    an adjoint network was "torch.fx cannot trace AdjointNet"."""
    import torchvision

    out = str(tmp_path / "s")
    with pytest.raises(dan.UserError, match="dan.search searches a model .*got None: build it first"):
        dan.search(None, DATA, out=out)
    with pytest.raises(dan.UserError, match="torch.nn.Module, got a str \\('resnet18'\\): build the model first"):
        dan.search("resnet18", DATA, out=out)
    for call in (dan.search, dan.to_adjoint):
        with pytest.raises(dan.UserError, match="got the function resnet18 itself: call it"):
            call(torchvision.models.resnet18, *([DATA] if call is dan.search else []))
    with pytest.raises(dan.UserError, match="got the class ResNet itself: call it"):
        dan.to_adjoint(torchvision.models.ResNet)
    anet = dan.to_adjoint(_net(), input_shape=(1, 3, 16, 16))
    for call, does in ((dan.to_adjoint, "to_adjoint converts"), (dan.search, "dan.search searches")):
        with pytest.raises(dan.UserError, match=f"{does} a network, and this one is already an adjoint network "
                                                f".*pass the original model .*or use this one as it is"):
            call(anet, *([DATA] if call is dan.search else []))
    for part in (anet.big, anet.small, torch.nn.Sequential(anet)):
        with pytest.raises(dan.UserError, match="holds an adjoint network's layers .*dan.extract_small"):
            dan.to_adjoint(part)
    assert not (tmp_path / "s").exists()
    assert dan.to_adjoint(dan.extract_small(anet), input_shape=(1, 3, 16, 16)).groups  # a plain network again


def test_a_search_takes_its_settings_as_a_config_a_dict_or_a_yaml_file(tmp_path):
    """``cfg={"train": {"epochs": 2}}`` and ``cfg="x.yaml"`` were AttributeErrors."""
    net, cfg = _net(), _cfg(tmp_path)
    arch = dan.search(net, DATA, budget="40%", cfg=cfg, out=str(tmp_path / "config"))
    as_dict = dan.search(net, DATA, budget="40%", cfg=cfg.to_dict(), out=str(tmp_path / "dict"))
    cfg.save(str(tmp_path / "search.yaml"))
    as_file = dan.search(net, DATA, budget="40%", cfg=tmp_path / "search.yaml", out=str(tmp_path / "file"))
    assert as_dict.widths == as_file.widths == arch.widths
    out = str(tmp_path / "refused")
    with pytest.raises(dan.UserError, match="cfg .*missing.yaml is no file: pass a YAML config's path"):
        dan.search(net, DATA, cfg=str(tmp_path / "missing.yaml"), out=out)
    with pytest.raises(dan.UserError, match="unknown config key 'trian'"):
        dan.search(net, DATA, cfg={"trian": {"epochs": 2}}, out=out)
    with pytest.raises(dan.UserError, match="cfg must be a dan.config.Config, a dict .*got a list"):
        dan.search(net, DATA, cfg=[("train", {})], out=out)
    assert not (tmp_path / "refused").exists()


def test_a_run_folder_that_cannot_be_made_is_said_before_the_work(tmp_path, monkeypatch):
    """``out="/proc/nope"`` was a bare FileNotFoundError, after the data was loaded and the network built."""
    import importlib

    search_module = importlib.import_module("dan.search")  # (dan.search is the function)
    net, cfg = _net(), _cfg(tmp_path)
    (tmp_path / "file").write_text("x")
    built = []
    real = search_module.build_supernet
    monkeypatch.setattr(search_module, "build_supernet", lambda *a, **k: built.append(1) or real(*a, **k))
    with pytest.raises(dan.UserError, match="cannot create the run folder .*file/run: .*file is a file, not a folder: "
                                            "choose another out=$"):
        dan.search(net, DATA, cfg=cfg, out=str(tmp_path / "file" / "run"))
    assert not built and (tmp_path / "file").read_text() == "x"
    if os.path.isdir("/proc/self"):  # a folder a file system refuses, whatever its permissions say
        # (root is refused by the file system; another user by the permissions, checked before)
        with pytest.raises(dan.UserError, match="cannot create the run folder .*/proc.*\\((No such file or "
                                                "directory|Permission denied)\\)"):
            dan.search(net, DATA, cfg=cfg, out="/proc/dan-nope")


def test_to_adjoint_names_an_option_of_the_wrong_type():
    """``alpha="4"`` was a TypeError from a comparison inside."""
    net = _net()
    with pytest.raises(dan.UserError, match="alpha must be a number >= 1 .*got a str \\('4'\\): pass a number, "
                                            "e.g. alpha=4"):
        dan.to_adjoint(net, alpha="4")
    with pytest.raises(dan.UserError, match="beta must be a number in \\[0, 1\\) .*got a NoneType"):
        dan.to_adjoint(net, beta=None)
    assert dan.to_adjoint(net, alpha=2, beta=0.5, input_shape=(1, 3, 16, 16)).groups


def test_count_says_which_input_shape_the_model_refused_and_what_to_give():
    """``dan.count(m, (3, 64))`` and a 3-channel network's ``(1, 1, 64, 64)`` were PyTorch's bare RuntimeErrors."""
    net = _net()
    for shape, said in (((3, 64), "Expected 3D \\(unbatched\\) or 4D"), ((1, 1, 16, 16), "to have 3 channels")):
        with pytest.raises(dan.UserError, match=f"Sequential does not run on an input of shape {re.escape(str(shape))} "
                                                f"\\(.*{said}.*\\): give dan.count the shape of an input it takes, the "
                                                f"batch first, e.g. \\(1, 3, 224, 224\\): its first conv takes 3 "
                                                f"channels") as e:
            dan.count(net, shape)
        assert isinstance(e.value.__cause__, RuntimeError)  # PyTorch's own, kept as the cause
    assert dan.count(net, (1, 3, 16, 16)).params == sum(p.numel() for p in net.parameters())
    # count.py judges the cause as before: its own flags, and a network whose sibling ran keeps its traceback
    from dan.cli.count import count_at

    with pytest.raises(dan.UserError, match="net does not run on input 1x1x16x16 .*pass its --input-size"):
        count_at(net, (1, 1, 16, 16), "net")
    with pytest.raises(RuntimeError, match="to have 3 channels") as e:
        count_at(net, (1, 1, 16, 16), "net", others_ran=True)
    assert not isinstance(e.value, dan.UserError)


def test_adjoint_loss_names_logits_of_two_shapes_and_a_lam_that_is_no_number():
    """Logits of networks with other class counts were PyTorch's "The size of tensor a (10) must
    match ..."; ``lam="x"`` a TypeError from inside the product."""
    g = torch.Generator().manual_seed(0)
    big, small, y = torch.randn(4, 10, generator=g), torch.randn(4, 5, generator=g), torch.tensor([0, 1, 2, 3])
    with pytest.raises(dan.UserError, match="big_logits has shape \\(4, 10\\) and small_logits \\(4, 5\\): the two "
                                            "networks' logits must have one shape .*big, small = anet\\(x\\)"):
        dan.adjoint_loss(big, small, y, lam=1.0)
    with pytest.raises(dan.UserError, match="lam must be a number, .*dan.schedule\\('quadratic'\\)\\(t\\)\\), got a "
                                            "str \\('x'\\)"):
        dan.adjoint_loss(big, big, y, lam="x")
    with pytest.raises(dan.UserError, match="takes the logits as tensors, got a list"):
        dan.adjoint_loss(big.tolist(), big, y, lam=1.0)
    assert torch.isfinite(dan.adjoint_loss(big, big, y, lam=torch.tensor(0.5)))  # a 0-d tensor is a number too


def test_a_resume_closes_the_metrics_file_it_rewrites(tmp_path):
    """``reconcile_metrics`` left the file it wrote to the garbage collector: a ResourceWarning at
    every resume."""
    import json

    from dan.loop import reconcile_metrics

    rows = [{"epoch": 1, "time": 1.0, "loss": 0.5}, {"epoch": 2, "time": 2.0, "loss": 0.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reconcile_metrics(str(tmp_path), 1, rows[0])  # resumed from epoch 1: the row of epoch 2 goes
        assert _leftovers(set(threading.enumerate()), caught)[1] == []
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == rows[:1]


def test_a_resume_on_other_dataset_objects_is_refused(tmp_path):
    """``dan.search(model, (train, test), resume=True)`` with other Datasets (another length) went on
    without a word: the config records them by their class name only."""
    from tests.zoo_data import Blobs

    net, cfg, out = _net(), _cfg(tmp_path, **{"data.batch_size": 16}), str(tmp_path / "s")
    dan.search(net, (Blobs(96), Blobs(24, seed=1)), budget="40%", cfg=cfg, out=out)
    last = tmp_path / "s" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    for train, test, said in ((Blobs(80), Blobs(24, seed=1), "96 train images, now 80"),
                              (Blobs(96), Blobs(20, seed=1), "24 test images, now 20")):
        with pytest.raises(dan.UserError, match=f"last.pt was written on other data \\({said}\\): resume with the "
                                                f"data it was written on \\(from Python, the same Dataset objects\\)"):
            dan.search(net, (train, test), budget="40%", cfg=cfg, out=out, resume=True)
    assert last.read_bytes() == before
    dan.search(net, (Blobs(96), Blobs(24, seed=1)), budget="40%", cfg=cfg, out=out, resume=True)  # the same data


def test_messages_name_the_options_as_the_caller_passes_them(tmp_path, capsys):
    # a notebook was told "pass --resume to continue it, or choose another --out" by dan.search
    from dan.cli.common import run_tool
    from dan.errors import command_line, spelt

    out = str(tmp_path / "s")
    dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=out)
    with pytest.raises(dan.UserError, match=r"already holds a run \(.*\): pass resume=True to continue it, or choose "
                                            r"another out= \(nothing was overwritten\)$"):
        dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=out)
    with pytest.raises(dan.UserError, match=r"nothing to resume in .*: drop resume=True to start a new run$"):
        dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=str(tmp_path / "new"), resume=True)
    assert spelt("--out", "out=") == "out="
    with command_line():  # the tools' spelling, inside a tool alone
        assert spelt("--out", "out=") == "--out"
    assert spelt("--out", "out=") == "out="

    def tool(argv):
        dan.search(_net(), DATA, budget="40%", cfg=_cfg(tmp_path), out=out)

    with pytest.raises(SystemExit) as exit_:
        run_tool(tool, [])
    assert exit_.value.code == 2
    assert "pass --resume to continue it, or choose another --out (nothing" in capsys.readouterr().err
    assert spelt("--resume", "resume=True") == "resume=True"  # (given back when the tool ended)
