"""The memory check before a run (dan/memory.py): what it computes is what autograd keeps, it
changes nothing, and it refuses exactly what does not fit, with a batch that does."""

import os

import pytest
import torch
import torch.nn as nn

from dan import memory
from dan.errors import UserError


def tiny_adjoint(width: int = 8):
    import search_spaces
    from dan.adjoint import to_adjoint

    torch.manual_seed(0)
    base = search_spaces.create("resnet18_small", num_classes=4, in_channels=3, width=width)
    return to_adjoint(base, alpha=4, input_shape=(1, 3, 16, 16))


def saved_for_real(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps in a real forward (parameters excluded)."""
    with memory.kept_for_backward({}) as kept:
        model(x)
    return sum(kept.values())


def test_the_estimate_is_what_a_real_forward_keeps_for_the_backward_pass():
    """By hand for a conv, a ReLU and a linear layer: the conv keeps its input (6·3·8·8 floats),
    the ReLU its output (6·4·8·8), the linear layer a view of that output (counted once); and on
    the adjoint ResNet the fake forward's total equals a real forward's, storage for storage."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    saved, largest = memory.activation_bytes(net, (6, 3, 8, 8))
    assert saved == 4 * (6 * 3 * 8 * 8 + 6 * 4 * 8 * 8)
    assert largest == 4 * (4 * 8 * 8)  # the ReLU's output, per image
    net[1].inplace = True  # the conv's output, then the ReLU's in place: one storage, counted once
    assert memory.activation_bytes(net, (6, 3, 8, 8)) == (saved, largest)
    model = tiny_adjoint().train()
    saved, _ = memory.activation_bytes(model, (4, 3, 16, 16))
    assert saved == saved_for_real(model, torch.randn(4, 3, 16, 16))
    double, _ = memory.activation_bytes(model, (8, 3, 16, 16))
    assert double == pytest.approx(2 * saved, rel=0.01)  # per image: the batch scales it


class Scaled(nn.Module):
    """A conv whose output is scaled by a plain tensor attribute (neither parameter nor buffer),
    which the meta device cannot swap: the estimate falls back to fake tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = torch.full((1, 4, 1, 1), 2.0)

    def forward(self, x):
        return (self.conv(x) * self.scale).relu()


def test_a_model_the_meta_device_cannot_run_is_estimated_on_fake_tensors():
    model = Scaled().train()
    saved, _ = memory.activation_bytes(model, (5, 3, 8, 8))
    assert saved == saved_for_real(model, torch.randn(5, 3, 8, 8)) > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast (fake tensors), as for real
        real = saved_for_real(model, torch.randn(5, 3, 8, 8))
    assert memory.activation_bytes(model, (5, 3, 8, 8), amp=torch.bfloat16)[0] == real < saved


def test_the_check_changes_nothing_and_allocates_nothing():
    """Weights, BatchNorm statistics and their counters, the random generator and the train/eval
    flag are as before; a batch of 10^12 bytes of activations is computed, not allocated."""
    model = tiny_adjoint().eval()
    x = torch.randn(2, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(x)
    rng = torch.get_rng_state()
    saved, _ = memory.activation_bytes(model, (4096, 3, 1024, 1024))
    assert saved > 10**12
    assert not model.training
    assert torch.equal(rng, torch.get_rng_state())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():  # no fake tensor left behind on a module: the real forward is the same
        for a, b in zip(out, model(x)):
            assert torch.equal(a, b)
    import gc
    import weakref

    weight = weakref.ref(next(model.parameters()))
    del model, before
    gc.collect()
    assert weight() is None  # nothing holds the network afterwards (a tuning run checks one per trial)


def test_it_refuses_exactly_what_does_not_fit_and_names_a_batch_that_does():
    model = tiny_adjoint()
    shape = (32, 3, 16, 16)
    saved, largest = memory.activation_bytes(model, shape)
    state = memory.optimizer_state_bytes(model, "adam", 0.0)
    assert state == 2 * sum(p.numel() * 4 for p in model.parameters())
    need = saved + state
    memory.check_training(model, shape, eval_batch=64, available=need)  # fits: no error
    with pytest.raises(UserError, match=r"lower data\.batch_size to (\d+) \(above (\d+) it cannot fit") as e:
        memory.check_training(model, shape, eval_batch=64, available=need - 1)
    told = int(e.value.args[0].split("lower data.batch_size to ")[1].split()[0])
    fits = int(e.value.args[0].split("(above ")[1].split()[0])
    assert 1 <= fits < 32 and told == fits // 2
    at_fits, _ = memory.activation_bytes(model, (fits,) + shape[1:])
    assert at_fits + state <= need - 1  # the batch it names fits
    with pytest.raises(UserError, match="2 processes"):  # two ranks on one machine need twice as much
        memory.check_training(model, shape, eval_batch=64, processes=2, available=2 * need - 1)
    with pytest.raises(UserError, match="even batch 1 does not fit"):
        memory.check_training(model, shape, eval_batch=64, available=state)
    sgd = memory.optimizer_state_bytes(model, "sgd", 0.9)
    assert sgd == state // 2 and memory.optimizer_state_bytes(model, "sgd", 0.0) == 0
    with pytest.raises(UserError, match=r"evaluation needs .* set data\.eval_batch_size to \d+ or less"):
        memory.check_training(model, shape, eval_batch=int(need // largest) + 1, available=need)


def test_weights_too_large_are_refused_before_they_are_allocated():
    import search_spaces

    def build(width):
        return lambda: search_spaces.create("resnet18_small", num_classes=10, in_channels=3, width=width)

    with pytest.raises(UserError, match=r"resnet18_small\(width=3000\) has 9\d\.\d GiB of weights"):
        memory.check_weights(build(3000), "resnet18_small(width=3000)", available=20 << 30)
    memory.check_weights(build(8), "resnet18_small(width=8)", available=20 << 30)


def test_the_check_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(memory.ENV, "0")
    assert memory.available_bytes() is None
    monkeypatch.setenv(memory.ENV, "1")
    assert (memory.available_bytes() or 0) > 0 or not os.path.exists("/proc/meminfo")


@pytest.mark.parametrize("tool", ["train.py", "search.py"])
def test_a_run_that_cannot_fit_is_one_line_and_leaves_no_folder(tool, tmp_path, monkeypatch):
    """The tools as a user runs them, on a machine with 20 MiB available (faked): exit 2, one line
    naming the need and the batch that fits, and no run folder."""
    from dan.fuzz import TINY, run_in_process

    monkeypatch.setattr(memory, "available_bytes", lambda: 20 << 20)
    out = tmp_path / "runs"
    extra = ["--budget-flops", "25%", "--set", "search.warmup_epochs=0"] if tool == "search.py" else []
    code, err = run_in_process(tool, TINY + ["--image-size", "64"] + extra + ["--out", str(out)], time_limit=None)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: training needs at least") and "lower data.batch_size to" in lines[0], lines
    assert len(lines[0]) < 400, lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_file_too_large_for_the_memory_left_is_not_called_corrupt(tmp_path, monkeypatch):
    """Loading a good checkpoint or TorchScript network fails for want of memory: the allocation
    error goes on to the tools' one line about memory, never to "corrupt: delete it"; a real
    read error is still the user's one line."""
    from dan.checkpoint import load_checkpoint
    from dan.deploy import load_deployable

    path = tmp_path / "last.pt"
    path.write_bytes(b"not read")
    for name, fn in (("load", load_checkpoint), ("jit.load", load_deployable)):
        target = torch.jit if name == "jit.load" else torch

        def hungry(*args, **kw):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4096 bytes.")

        monkeypatch.setattr(target, "load", hungry)
        with pytest.raises(RuntimeError, match="can't allocate memory") as e:
            fn(str(path))
        assert not isinstance(e.value, UserError)

        def broken(*args, **kw):
            raise RuntimeError("PytorchStreamReader failed reading zip archive")

        monkeypatch.setattr(target, "load", broken)
        with pytest.raises(UserError, match="PytorchStreamReader"):
            fn(str(path))


def test_a_search_is_estimated_at_its_narrowest_small_path_then_left_as_it_was(tmp_path):
    """A weight step's widths are drawn at or above every group's narrowest candidate, so the
    search's check is made there (a lower bound), and the supernet's widths are restored after."""
    import copy

    from dan.config import Config
    from dan.fuzz import TINY_CONFIG
    from dan.search import Searcher, narrowest

    d = copy.deepcopy(TINY_CONFIG)
    d["out"] = str(tmp_path)
    d["search"]["budget_flops"] = "25%"
    sr = Searcher(Config.from_dict(d))
    shape = (16, 3, 16, 16)
    widths = [(g.width, g.mask) for g in sr.sn.groups]
    built, _ = memory.activation_bytes(sr.anet, shape)
    with narrowest(sr):
        least, _ = memory.activation_bytes(sr.anet, shape)
        sr.sn.set_widths(sr.sn.sample_hard(uniform=True))
        drawn, _ = memory.activation_bytes(sr.anet, shape)
    assert least < built and least <= drawn
    assert [(g.width, g.mask) for g in sr.sn.groups] == widths


def test_count_tells_the_memory_a_training_batch_needs(tmp_path):
    """``count.py --batch-size``: the least a training step at that batch needs, before any run;
    for ``--alpha`` the adjoint network's (what adjoint training trains), as the run's check
    computes it; a deployed file, which does not train, is the user's one line."""
    import json

    from tests.helpers import assert_user_error, run_tool

    proc = run_tool("count.py", "resnet18_small", "--arg", "width=8", "--input-size", "16", "--num-classes", "4",
                    "--alpha", "4", "--batch-size", "32", "--json")
    assert proc.returncode == 0, proc.stderr
    mem = json.loads(proc.stdout)["training_memory"]["adjoint"]
    saved, _ = memory.activation_bytes(tiny_adjoint(), (32, 3, 16, 16))
    assert mem["batch"] == 32 and mem["kept_for_backward"] == saved
    assert mem["least"] == saved + mem["adam_state"] and mem["adam_state"] == 2 * mem["weights"]
    proc = run_tool("count.py", "resnet18_small", "--arg", "width=8", "--input-size", "16", "--batch-size", "64")
    assert proc.returncode == 0 and "training memory (network, batch 64): at least" in proc.stdout, proc.stderr
    net = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(nn.Linear(3, 2)), str(net))
    assert_user_error(run_tool("count.py", str(net), "--batch-size", "8"), "does not train")
    # counted at the default 224x224, which a deployed network may not take: its shape, in one line
    assert_user_error(run_tool("count.py", str(net)), "does not run on input 1x3x224x224", "--input-size")
    # its small.json's shape, a flag replacing only its own part (--in-channels dropped the size)
    (tmp_path / "net.json").write_text(json.dumps({"input_shape": [1, 1, 28, 28]}))
    assert_user_error(run_tool("count.py", str(net), "--in-channels", "2"), "does not run on input 1x2x28x28")


def test_a_traced_network_the_estimate_cannot_run_prints_nothing(capfd):
    # a failed probe is an answer (None: the check is skipped); torch.fx printed a traceback of it
    class FixedBatch(nn.Module):
        def forward(self, x):
            return x.view(7, -1)  # runs at batch 7 only

    gm = torch.fx.symbolic_trace(FixedBatch())
    assert memory.activation_bytes(gm, (2, 3, 8, 8)) is None
    assert capfd.readouterr().err == ""


def test_a_torchvision_or_timm_network_too_large_is_refused_before_it_is_allocated(tmp_path, monkeypatch):
    """Audit: an arch.json with ``"space": "torchvision.resnet50", "space_args": {"width_per_group": 2048}``
    (44 GiB of weights) made tools/count.py die with bad_alloc: only the registered spaces' weights
    were counted before the build. Here on a machine with 20 MiB available (faked): a ResNet-18's
    45 MB of weights are refused in one line, counted on the meta device."""
    import json

    from dan import models
    from dan.fuzz import run_in_process
    from tests.helpers import run_tool

    monkeypatch.setattr(memory, "available_bytes", lambda: 20 << 20)
    built = []
    monkeypatch.setattr(nn.Module, "register_parameter", _recording(nn.Module.register_parameter, built))
    names = ["torchvision.resnet18"] + (["timm.resnet18"] if _has_timm() else [])
    for name in names:
        built.clear()
        with pytest.raises(UserError, match=rf"{name}\(.*\) has 4\d MiB of weights and this machine has 20 MiB "
                                            r"available: choose smaller model\.args"):
            models.create(name, {}, num_classes=10, in_channels=3)
        assert built and all(p is None or p.is_meta for p in built)  # nothing allocated
    # as the audit ran it: count.py given such an arch.json
    base = tmp_path / "b"
    p = run_tool("baseline.py", "uniform", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "4",
                 "--set", "model.args.width=8", "--budget-flops", "40%", "--quiet", "--out", str(base))
    assert p.returncode == 0, p.stderr[-2000:]
    arch = json.loads((base / "arch.json").read_text())
    arch["space"] = arch["config"]["model"]["space"] = "torchvision.resnet50"
    arch["space_args"] = {"width_per_group": 2048, "num_classes": 4, "in_channels": 3}
    (base / "arch.json").write_text(json.dumps(arch))
    code, err = run_in_process("count.py", [str(base / "arch.json")], time_limit=None)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "torchvision.resnet50(width_per_group=2048" in err and "GiB of weights" in err, err


def _recording(register, into: list):
    def register_parameter(self, name, param):
        into.append(param)
        return register(self, name, param)

    return register_parameter


def _has_timm() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True
