"""Training engine: run folder contents, deployable files, resume, refusal to overwrite."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import dan
from dan.checkpoint import file_digest
from dan.engine import Trainer, format_summary, train
from dan.monitor import Monitor
from tests.conftest import FASHION_DIR, needs_fashion
from tests.helpers import ROOT, tiny_config


def test_adjoint_run_writes_everything_and_small_pt_runs_without_the_package(tmp_path):
    out = str(tmp_path / "run")
    summary = train(tiny_config(out), Monitor(out))
    for f in ["config.yaml", "metrics.jsonl", "summary.json", "small.pt", "small.pt2", "small_state.pt",
              "small.onnx", "small.json", "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert os.path.isfile(os.path.join(out, f)), f
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"val/top1_big", "val/top1_small", "train/kl", "train/lambda"} <= set(rows[-1])
    nets = summary.rows
    assert nets["small"]["flops"] < nets["big"]["flops"] / 3
    assert nets["small"]["params"] < nets["big"]["params"] / 8
    assert set(nets["small"]["latency_ms"]) == {"1", "4"}
    assert set(nets["small"]["latency_ms_onnxruntime"]) == {"1", "4"}
    assert "big/small" in format_summary(summary) and "small ort" in format_summary(summary)
    meta = json.load(open(os.path.join(out, "small.json")))
    assert meta["onnx"]["verified"] and meta["onnx"]["max_abs_diff"] <= 1e-4 and meta["onnx"]["opset"] == 17
    assert meta["preprocess"]["mean"] == [0.5] * 3 and meta["preprocess"]["num_classes"] == 4  # the input it takes

    # small.pt and small.pt2 load and run with PyTorch alone, and agree with the extracted network
    x = torch.randn(3, 3, 16, 16)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch; sys.modules['dan'] = None; sys.modules['search_spaces'] = None\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"a = torch.jit.load({os.path.join(out, 'small.pt')!r})(x)\n"
        f"b = torch.export.load({os.path.join(out, 'small.pt2')!r}).module()(x)\n"
        "import onnxruntime\n"
        f"s = onnxruntime.InferenceSession({os.path.join(out, 'small.onnx')!r})\n"
        "c = torch.from_numpy(s.run(None, {'input': x.numpy()})[0])\n"
        f"torch.save(torch.stack([a, b, c]), {str(tmp_path / 'y.pt')!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=str(tmp_path))
    y = torch.load(tmp_path / "y.pt")
    trainer = Trainer(tiny_config(str(tmp_path / "other")))
    trainer.model.load_state_dict(torch.load(os.path.join(out, "checkpoints", "last.pt"),
                                             weights_only=True)["model"])
    trainer.model.eval()
    with torch.no_grad():
        expect = dan.extract_small(trainer.model)(x)
    assert all(torch.allclose(y[i], expect, atol=1e-4) for i in range(3))  # TorchScript, export, ONNX


class KillAt(Monitor):
    """Simulates a run killed in the middle of training (after ``step`` optimizer steps)."""

    def __init__(self, run_dir, step):
        super().__init__(run_dir, tensorboard=False)
        self.kill_step = step

    def scalars(self, step, values, prefix=""):
        if step == self.kill_step:
            raise KeyboardInterrupt
        super().scalars(step, values, prefix)


def test_resume_after_a_kill_gives_the_same_model(tmp_path):
    a = str(tmp_path / "a")
    train(tiny_config(a, **{"train.epochs": 3}), Monitor(a, tensorboard=False))
    b = str(tmp_path / "b")
    cfg = tiny_config(b, **{"train.epochs": 3})
    steps_per_epoch = 8  # 256 images, batch 32
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of the second epoch
        train(cfg, KillAt(b, steps_per_epoch + 3))
    assert torch.load(os.path.join(b, "checkpoints", "last.pt"), weights_only=True)["epoch"] == 1
    train(tiny_config(b, **{"train.epochs": 3}), Monitor(b, tensorboard=False), resume=True)
    sa = torch.load(os.path.join(a, "checkpoints", "last.pt"), weights_only=True)
    sb = torch.load(os.path.join(b, "checkpoints", "last.pt"), weights_only=True)
    assert sa["step"] == sb["step"] == 3 * steps_per_epoch
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["last_eval"] == sb["last_eval"]
    assert not [n for n in os.listdir(b) if n.startswith("config.before-resume")]  # the same config: none kept


def test_training_records_one_value_per_tag_and_step_and_rows_with_their_step(tmp_path):
    """TensorBoard: the epoch means of the train/* scalars are metrics.jsonl's alone (written at the
    epoch's last step too, they gave that step two values of train/loss); every row has the global
    step of its epoch's end, the TensorBoard step of its values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = str(tmp_path / "run")
    train(tiny_config(out, **{"train.log_every": 3, "train.latency_batches": []}), Monitor(out))
    acc = EventAccumulator(out, size_guidance={"scalars": 0})
    acc.Reload()
    twice = {t: steps for t in acc.Tags()["scalars"] for steps in [[e.step for e in acc.Scalars(t)]]
             if len(steps) != len(set(steps))}
    assert twice == {}
    assert [e.step for e in acc.Scalars("train/loss")] == [3, 6, 8, 9, 12, 15, 16]
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [e.step for e in acc.Scalars("val/top1_small")] == [8, 16]
    assert undocumented_keys(rows) == []


def undocumented_keys(rows) -> list:
    """The keys of ``rows`` (metrics.jsonl) that docs/metrics.md does not name (``val/top1_small``
    as itself or as ``val/top1_<net>``)."""
    import re

    from tests.helpers import ROOT

    with open(os.path.join(ROOT, "docs", "metrics.md"), encoding="utf-8") as f:
        text = f.read()
    keys = sorted({k for r in rows for k in r})
    return [k for k in keys if f"`{k}`" not in text and f"`{re.sub(r'_(big|small)$', '_<net>', k)}`" not in text]


def test_a_row_restored_from_an_older_checkpoint_gets_its_time_and_step(tmp_path):
    """A checkpoint's row written before rows held "step" (and one that never held "time"): the
    row a resume restores has every key the others have."""
    from dan.loop import reconcile_metrics

    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    os.utime(tmp_path / "checkpoints" / "last.pt", (1000.0, 1000.0))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "time": 900.0, "step": 8, "lr": 0.1}) + "\n")
    reconcile_metrics(str(tmp_path), 2, {"epoch": 2, "lr": 0.05}, 16)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows[1] == {"epoch": 2, "time": 1000.0, "step": 16, "lr": 0.05}
    assert list(rows[1]) == list(rows[0])


def test_best_pt_is_written_before_last_pt_records_its_score(tmp_path, monkeypatch):
    # an audit's Ctrl-C between the two writes: last.pt held the new best score, so the resumed run
    # never wrote best.pt again and kept the epoch before's
    import dan.engine as engine

    written, save = [], engine.save_checkpoint
    monkeypatch.setattr(engine, "save_checkpoint", lambda state, path: (written.append(os.path.basename(path)),
                                                                         save(state, path)))
    out = str(tmp_path / "run")
    train(tiny_config(out, **{"train.epochs": 1, "train.latency_batches": []}), Monitor(out, tensorboard=False))
    assert written[-2:] == ["best.pt", "last.pt"]


def test_refuses_to_overwrite_and_to_resume_a_different_config(tmp_path):
    out = str(tmp_path / "run")
    train(tiny_config(out, **{"train.epochs": 1}), Monitor(out, tensorboard=False))
    before = os.path.getmtime(os.path.join(out, "checkpoints", "last.pt"))
    with pytest.raises(dan.UserError, match="already holds a run"):
        train(tiny_config(out, **{"train.epochs": 1}), Monitor(out, tensorboard=False))
    with pytest.raises(dan.UserError, match="adjoint.alpha"):
        train(tiny_config(out, **{"train.epochs": 2, "adjoint.alpha": 2.0}), Monitor(out, tensorboard=False),
              resume=True)
    assert os.path.getmtime(os.path.join(out, "checkpoints", "last.pt")) == before
    with pytest.raises(dan.UserError, match="nothing to resume"):
        train(tiny_config(str(tmp_path / "empty")), resume=True)


def test_standard_method_deploys_the_network_itself(tmp_path):
    from dan.engine import load_teacher

    out = str(tmp_path / "std")
    summary = train(tiny_config(out, **{"train.method": "standard", "train.epochs": 1}),
                    Monitor(out, tensorboard=False))
    assert set(summary.rows) == {"big"}
    # named for what it is (the base network, not a small one) and the network that was trained
    assert not os.path.exists(os.path.join(out, "small.pt"))
    assert json.load(open(os.path.join(out, "model.json")))["params"] == summary.rows["big"]["params"]
    trained = load_teacher(out, torch.device("cpu"))  # the big network of checkpoints/last.pt
    deployed = torch.jit.load(os.path.join(out, "model.pt"))
    x = torch.randn(3, *summary.input_shape[1:])
    assert torch.allclose(deployed(x), trained(x), atol=1e-4)


@needs_fashion
def test_real_fashion_mnist_images_are_learnt(tmp_path):
    """A few hundred real images: both networks must beat chance (10 %) clearly."""
    out = str(tmp_path / "fm")
    cfg = tiny_config(out, **{"data.dataset": "fashion_mnist", "data.image_size": None, "data.num_classes": None,
                              "data.train_subset": 640, "data.batch_size": 64, "train.epochs": 6,
                              "train.limit_batches": 10, "train.lr": 0.005, "train.latency_batches": [1]})
    cfg.data.data = FASHION_DIR
    summary = train(cfg, Monitor(out, tensorboard=False))
    assert summary.input_shape == (1, 1, 28, 28)
    assert summary.rows["big"]["top1"] > 0.55  # measured 0.71 / 0.46 (seed 0)
    assert summary.rows["small"]["top1"] > 0.3


def test_a_diverging_run_exits_2_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    """Issue 10: the loss turns NaN in the second epoch: one line, exit status 2 (DivergedError is a
    UserError), and checkpoints/last.pt still holds epoch 1 with finite weights."""
    import dan.methods.adjoint as adjoint_method
    from dan.errors import DivergedError, UserError

    out = str(tmp_path / "nan")
    cfg = tiny_config(out, **{"train.epochs": 3})
    cls = next(c for c in vars(adjoint_method).values() if isinstance(c, type) and hasattr(c, "train_step")
               and c.__module__ == adjoint_method.__name__)
    real = cls.train_step
    steps = {"n": 0}

    def poisoned(self, x, y, progress):
        loss, scalars = real(self, x, y, progress)
        steps["n"] += 1
        return (loss * float("nan") if steps["n"] > 10 else loss), scalars

    monkeypatch.setattr(cls, "train_step", poisoned)
    with pytest.raises(DivergedError, match="diverged") as e:
        train(cfg, Monitor(out, tensorboard=False))
    assert isinstance(e.value, UserError)
    state = torch.load(os.path.join(out, "checkpoints", "last.pt"), weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """The weights turn infinite on the last step of the second epoch (the loss was finite):
    the run ends with DivergedError before that epoch's checkpoint, which keeps epoch 1."""
    from dan.errors import DivergedError
    import dan.engine as engine

    out = str(tmp_path / "w")
    cfg = tiny_config(out, **{"train.epochs": 2})
    orig = engine.Trainer.train_step

    def train_step(self, x, y):
        logs = orig(self, x, y)
        if self.step == self.total_steps - 1:  # the last step of the run
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return logs

    monkeypatch.setattr(engine.Trainer, "train_step", train_step)
    with pytest.raises(DivergedError, match="not finite"):
        train(cfg, Monitor(out, tensorboard=False))
    state = torch.load(os.path.join(out, "checkpoints", "last.pt"), weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(open(os.path.join(out, "metrics.jsonl")).readlines()) == 1


def test_warmup_cosine_by_hand():
    from dan.engine import warmup_cosine

    f = warmup_cosine(total_steps=10, warmup_steps=2, min_ratio=0.1)
    # warm-up: (step + 1) / 2; then 0.1 + 0.9 * (1 + cos(pi * (step - 2) / 8)) / 2
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine: cos(pi/2) = 0
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)  # held at the floor
    g = warmup_cosine(total_steps=4, warmup_steps=0)
    assert [round(g(s), 6) for s in range(5)] == [1.0, 0.853553, 0.5, 0.146447, 0.0]


def test_weight_decay_spares_biases_and_norms():
    from dan.config import TrainConfig
    from dan.engine import build_optimizer

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Linear(2, 2))
    net[2].weight.requires_grad_(False)  # frozen: in no group
    opt = build_optimizer(net.parameters(), TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in decay["params"]] == [(2, 1, 3, 3)]  # the conv weight only
    assert [tuple(p.shape) for p in no_decay["params"]] == [(2,), (2,), (2,), (2,)]  # conv bias, BN w/b, fc bias
    # one AdamW step on a zero gradient: only the decayed weight shrinks, by lr * wd
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = list(net.parameters())
    assert torch.allclose(after[0], before[0] * (1 - 0.1 * 0.5))
    assert all(torch.equal(a, b) for a, b in zip(after[1:], before[1:]))


def test_a_retrain_can_start_from_the_search_supernet(tmp_path):
    """train.init_from (weight inheritance): the found widths' network starts from the supernet's
    weights cut to its widths, and then computes exactly what the supernet's small path does at
    those widths; a checkpoint of another network is one user error."""
    from dan.adjoint import AdjointNet
    from dan.checkpoint import load_checkpoint, load_sliced
    from dan.config import Config
    from dan.data import dataset_info
    from dan.search import search
    from dan.supernet import build_supernet

    s = str(tmp_path / "s")
    arch = search(tiny_config(s, **{"train.epochs": 2, "train.limit_batches": 2, "search.budget_flops": "30%"}),
                  Monitor(s, tensorboard=False))
    ckpt = os.path.join(s, "checkpoints", "last.pt")
    anet = dan.build_adjoint(arch)
    assert isinstance(anet, AdjointNet) and load_sliced(anet, ckpt) == len(anet.state_dict())
    st = load_checkpoint(ckpt)
    cfg = Config.from_dict(st["config"])
    sn = build_supernet(cfg, dataset_info(cfg.data))
    sn.anet.load_state_dict(st["model"])
    sn.set_widths([c.index(arch.widths[g.name]) for g, c in zip(sn.groups, sn.cands)])
    x = torch.randn(3, *arch.input_shape[1:])
    with torch.no_grad():
        ours, theirs = anet.eval()(x), sn.anet.eval()(x)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    # the retrain itself, started from it
    r = str(tmp_path / "r")
    rcfg = tiny_config(r, **{"train.epochs": 1, "train.limit_batches": 1, "train.latency_batches": [1],
                             "train.init_from": ckpt})
    rcfg.adjoint.arch = os.path.join(s, "arch.json")
    train(rcfg, Monitor(r, tensorboard=False))
    with open(os.path.join(r, "init_from.json")) as f:  # which checkpoint, by content
        assert json.load(f) == {"path": os.path.abspath(ckpt), "sha256": file_digest(ckpt)}
    other = str(tmp_path / "std")
    train(tiny_config(other, **{"train.method": "standard", "train.epochs": 1, "train.limit_batches": 1,
                                "train.latency_batches": [1], "model.args": {"width": 4}}),
          Monitor(other, tensorboard=False))
    with pytest.raises(dan.UserError, match="start from a checkpoint of the same model"):
        load_sliced(dan.build_adjoint(arch), os.path.join(other, "checkpoints", "last.pt"))
    # tools/retrain.py --init supernet finds the checkpoint beside arch.json; a --set wins
    from dan.retrain import retrain_base, retrain_config

    a = os.path.join(s, "arch.json")
    assert retrain_config(a, "adjoint", retrain_base(arch), init="supernet").train.init_from == ckpt
    assert retrain_config(a, "adjoint", retrain_base(arch)).train.init_from == ckpt  # default: auto
    assert retrain_config(a, "adjoint", retrain_base(arch), init="scratch").train.init_from is None
    assert retrain_config(a, "standard", retrain_base(arch)).train.init_from is None
    with pytest.raises(dan.UserError, match="use it with --method adjoint"):
        retrain_config(a, "standard", retrain_base(arch), init="supernet")
    base = retrain_base(arch)
    base.train.init_from = "elsewhere.pt"
    assert retrain_config(a, "adjoint", base, init="supernet").train.init_from == "elsewhere.pt"
    os.remove(ckpt)
    with pytest.raises(dan.UserError, match="no search checkpoint at .* --init scratch"):
        retrain_config(a, "adjoint", retrain_base(arch), init="supernet")
    assert retrain_config(a, "adjoint", retrain_base(arch)).train.init_from is None  # auto: scratch


def test_the_table_says_when_other_processes_took_the_cpus_its_latencies_were_timed_on(tmp_path, monkeypatch):
    import time

    from dan import timing

    # real readings: two processes spinning on this machine's CPUs while a block times, one thread here
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.3)
        with timing.OtherLoad(threads=1) as load:
            time.sleep(0.6)
    finally:
        for p in spinners:
            p.kill()
    if load.cores is None:
        pytest.skip("no /proc here")
    assert load.cores > 1.25  # the two spinners' CPU, less what the machine's scheduler gave others
    assert load.busy or len(load.cpus) > 2  # on 2 CPUs with one thread here: more than the free one
    # the rule on given readings (wall s, busy ticks, own ticks): others at 0.2 core quiet, at 1.5 busy
    hz = os.sysconf("SC_CLK_TCK")
    for others, busy in ((0.2, False), (1.5, True)):
        samples = iter([(0.0, 0, 0), (1.0, int((1 + others) * hz), hz)])
        monkeypatch.setattr(timing, "_cpu_sample", lambda cpus: next(samples))
        with timing.OtherLoad(threads=1) as load:
            load.cpus = [0, 1]
        assert load.busy is busy and load.cores == pytest.approx(others, abs=0.02)
    # the table: the same numbers either way, and the note only when busy
    monkeypatch.undo()
    out = str(tmp_path / "run")
    summary = train(tiny_config(out, **{"train.epochs": 1, "train.latency_batches": [1]}), Monitor(out)).to_dict()
    assert set(summary["timing_load"]) == {"other_processes_cores", "cpus", "threads", "busy"}
    quiet = format_summary({**summary, "timing_load": {**summary["timing_load"], "busy": False}})
    loaded = format_summary({**summary, "timing_load": {**summary["timing_load"], "busy": True,
                                                        "other_processes_cores": 1.7}})
    assert "unreliable" not in quiet and loaded.startswith(quiet + "\n")
    assert "other processes used 1.7 of the" in loaded.splitlines()[-1]
    # the header names the layout the deployed network was timed in (it said channels-last always)
    assert "BN folded, channels-last" in quiet and summary["deploy_memory_format"] == "channels_last"
    nchw = format_summary({**summary, "deploy_memory_format": "contiguous"})
    assert "the deployed network contiguous (as its files), the others channels-last" in nchw


def test_ctrl_c_says_whether_an_epoch_finished(tmp_path):
    # the generic line sent a run stopped in its first epoch to a --resume that said "nothing to resume"
    out = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt, match="before the first epoch ended: nothing to resume"):
        train(tiny_config(out, **{"train.epochs": 2}), KillAt(out, 3))
    train(tiny_config(out, **{"train.epochs": 2}), Monitor(out, tensorboard=False))  # the same command again
    later = str(tmp_path / "later")
    with pytest.raises(KeyboardInterrupt, match="checkpoints/last.pt; continue with resume=True"):
        train(tiny_config(later, **{"train.epochs": 2}), KillAt(later, 8 + 3))


def test_a_forked_child_does_not_hold_its_runs_folder_after_the_run_dies(tmp_path):
    """An audit: a DataLoader worker outlived its SIGKILLed search by minutes and, holding the
    inherited ``flock`` of the run folder, made ``--resume`` refuse the folder as "in use by another
    run". A forked child now closes the lock it inherited: here the run's process locks the folder,
    forks a child that sleeps, and dies; the folder is free while the child still runs. A lock still
    held once the run's process is gone is said to be a left-over process's."""
    from dan import loop

    out = tmp_path / "run"
    out.mkdir()
    script = ("import os, sys, time; from dan.loop import lock_run_dir; "
              f"lock_run_dir({str(out)!r}); pid = os.fork()\n"
              "if pid == 0: os.dup2(os.open(os.devnull, os.O_WRONLY), 1); time.sleep(60); os._exit(0)\n"
              "print(pid, flush=True); os._exit(0)")
    run = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    child = int(run.stdout.strip())
    try:
        os.kill(child, 0)  # the child is still running
        loop.check_run_lock(str(out))  # and the folder is free
        loop.lock_run_dir(str(out))
        loop.release_run_dir(str(out))
    finally:
        os.kill(child, 9)
    # a lock held after its run's process ended (a child of an older DAN, or one that locked it anew)
    import fcntl

    fd = os.open(out / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"999999\n")  # a process that has ended
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(fd,))
        os.close(fd)  # the lock lives on in the sleeping process only
        fd = None
        with pytest.raises(dan.UserError, match="is held by a process that its run \\(process 999999, ended\\) left "
                                                "running: end it"):
            loop.check_run_lock(str(out))
        # held from another machine (a shared disk): whether that process runs cannot be told here
        with open(out / ".lock", "w") as f:
            f.write("999999\nanother-host\n")
        with pytest.raises(dan.UserError, match="is in use by another run \\(process 999999 on another-host\\)"):
            loop.check_run_lock(str(out))
        holder.kill()
        holder.wait()
    finally:
        if fd is not None:
            os.close(fd)


def test_a_run_folder_in_use_by_another_process_is_refused(tmp_path):
    import time

    from dan import loop

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dan.loop import lock_run_dir; "
                               f"lock_run_dir({str(out)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(dan.UserError, match=f"is in use by another run \\(process {holder.pid}\\)"):
            train(tiny_config(str(out), **{"train.epochs": 1}), Monitor(str(out), tensorboard=False))
        assert os.listdir(out) == [".lock"]  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    # its holder gone (killed: the kernel drops the lock), the folder is free; a finished run removes its lock
    train(tiny_config(str(out), **{"train.epochs": 1, "train.latency_batches": []}), Monitor(str(out), tensorboard=False))
    assert not os.path.exists(out / ".lock") and not loop._HELD


def test_runs_are_not_written_into_a_study_or_resumed_by_another_tool(tmp_path):
    from dan.loop import check_same_config, read_run_checkpoint

    study = tmp_path / "study"
    study.mkdir()
    (study / "study.db").write_bytes(b"")
    with pytest.raises(dan.UserError, match="holds a tuning study \\(study.db\\): choose another out="):
        train(tiny_config(str(study)), Monitor(str(study), tensorboard=False))
    out = str(tmp_path / "run")
    train(tiny_config(out, **{"train.epochs": 1, "train.latency_batches": []}), Monitor(out, tensorboard=False))
    retrain_cfg = tiny_config(out, **{"train.epochs": 2})
    retrain_cfg.adjoint.arch = str(tmp_path / "arch.json")  # was "written with adjoint.arch=None, not ..."
    with pytest.raises(dan.UserError, match="is a train.py run's checkpoint, and this is retrain.py: resume it with"):
        read_run_checkpoint(os.path.join(out, "checkpoints", "last.pt"), retrain_cfg, "cpu")
    with pytest.raises(dan.UserError, match="is a train.py run's checkpoint, and this is search.py"):
        read_run_checkpoint(os.path.join(out, "checkpoints", "last.pt"), tiny_config(out), "cpu", kind="search")
    # a retrain's arch.json named by a new path: its search folder moved (old path gone) or a copy
    new = tmp_path / "moved.json"
    new.write_text("{}")
    check_same_config({"adjoint": {"arch": str(tmp_path / "gone.json")}}, {"adjoint": {"arch": str(new)}}, "p")
    check_same_config({"model": {"arch": str(tmp_path / "gone.json")}}, {"model": {"arch": str(new)}}, "p")  # standard
    (tmp_path / "copy.json").write_text("{}")
    check_same_config({"adjoint": {"arch": str(tmp_path / "copy.json")}}, {"adjoint": {"arch": str(new)}}, "p")
    (tmp_path / "other.json").write_text("{ }")
    with pytest.raises(dan.UserError, match="adjoint.arch"):
        check_same_config({"adjoint": {"arch": str(tmp_path / "other.json")}}, {"adjoint": {"arch": str(new)}}, "p")


def test_weights_are_not_inherited_from_another_network_or_task(tmp_path):
    # a 1000-class 3-channel search's supernet started a 10-class grey network, cut to fit, silently
    from dan.checkpoint import load_sliced

    out = str(tmp_path / "run")
    train(tiny_config(out, **{"train.epochs": 1, "train.latency_batches": []}), Monitor(out, tensorboard=False))
    ckpt = os.path.join(out, "checkpoints", "last.pt")
    model = Trainer(tiny_config(str(tmp_path / "x"))).model
    assert load_sliced(model, ckpt, {"space": "resnet18_small", "num_classes": 4, "in_channels": 3}) > 0
    for key, value in (("num_classes", 10), ("in_channels", 1), ("space", "torchvision.resnet18")):
        with pytest.raises(dan.UserError, match=f"is a checkpoint of {key} .*, this network has {value!r}"):
            load_sliced(model, ckpt, {"space": "resnet18_small", "num_classes": 4, "in_channels": 3, key: value})


def test_a_second_run_of_this_process_into_a_held_folder_is_refused_and_keeps_the_first_s_lock(tmp_path):
    # a refused second call released the running run's lock (a review found it)
    from dan import loop
    from dan.tune.sweep import check_study_dir

    out = str(tmp_path / "run")
    os.makedirs(out)
    loop.lock_run_dir(out)
    try:
        with pytest.raises(dan.UserError, match="is in use by another run"):
            train(tiny_config(out), Monitor(out, tensorboard=False), resume=True)
        assert os.path.abspath(out) in loop._HELD and os.path.isfile(os.path.join(out, ".lock"))
    finally:
        loop.release_run_dir(out)
    # another process's run in its first epoch: a study is not written beside it
    holder = subprocess.Popen([sys.executable, "-c", "import time; from dan.loop import lock_run_dir; "
                               f"lock_run_dir({out!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(dan.UserError, match="is in use by another run"):
            check_study_dir(out)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("method", ["adjoint", "standard"])
def test_a_network_that_flattens_with_view_trains_deploys_and_is_timed_nchw(tmp_path, method):
    # x.view(x.size(0), -1) cannot read a channels-last tensor: an audit's LeNet failed in training,
    # then (with train.channels_last=false) in the deploy files, then in the timing
    from dan import models
    from dan.deploy import layout_for
    from tests.zoo_models import view_flatten

    models.trust("tests.zoo_models:view_flatten")
    assert layout_for(view_flatten(), (1, 3, 16, 16)) == "contiguous"
    assert layout_for(view_flatten(), (1, 3, 16, 16), "contiguous") == "contiguous"
    cfg = tiny_config(str(tmp_path / "r"), **{"train.epochs": 1, "train.limit_batches": 2, "train.method": method,
                                              "model.space": "tests.zoo_models:view_flatten", "model.args": {}})
    summary = train(cfg)
    assert summary.extra["deploy_memory_format"] == "contiguous"
    deployed = json.load(open(tmp_path / "r" / ("small.json" if method == "adjoint" else "model.json")))
    assert deployed["memory_format"] == "contiguous"


def test_a_resume_with_another_thread_count_says_so_and_runs_record_theirs(tmp_path, capsys):
    # the numbers of a CPU run depend on its threads; a resume with another --threads continued
    # with other numbers without a word, and no file said how many a run had
    threads = torch.get_num_threads()
    cfg = tiny_config(str(tmp_path / "r"), **{"train.epochs": 1, "train.limit_batches": 2})
    summary = train(cfg)
    assert summary.extra["threads"] == threads
    # and which images its top-1 is of (a --limit-batches run's top-1 read as the whole test split's)
    assert summary.rows["small"]["eval_split"] == "test" and summary.rows["small"]["eval_images"] == 64
    cfg.train.epochs = 2
    try:
        torch.set_num_threads(threads + 1)
        train(cfg, Monitor(cfg.run_dir, console=True, tensorboard=False), resume=True)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    assert f"written with {threads} CPU threads and this run has {threads + 1}" in out.out and "note:" not in out.err
    # the config the first epoch ran with is kept: config.yaml now says 2 epochs
    earlier = dan.config.Config.from_file(str(tmp_path / "r" / "config.before-resume-1.yaml"))
    assert earlier.train.epochs == 1 and dan.config.Config.from_file(str(tmp_path / "r" / "config.yaml")).train.epochs == 2
    cfg.train.epochs = 3  # with --quiet (no console), no note
    try:
        torch.set_num_threads(threads + 1)
        train(cfg, Monitor(cfg.run_dir, console=False, tensorboard=False), resume=True)
    finally:
        torch.set_num_threads(threads)
    assert "CPU threads" not in capsys.readouterr().out
    # the note is silent with --quiet, and summary.json names the last count: each epoch's row says its
    # own (a reproducibility audit could not tell that a run's first epochs ran at another count)
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert [r["threads"] for r in rows] == [threads, threads + 1, threads + 1]


def test_a_resume_or_an_inheritance_on_renamed_classes_is_refused(tmp_path):
    # a class folder renamed between epochs (cat -> zcat) swapped the labels of the rest on --resume,
    # and a retrain inherited a supernet's classifier for other classes, both without a word
    import shutil

    from tests.test_data import write_image_folder

    root = tmp_path / "imgs"
    write_image_folder(root)
    folder = {"data.dataset": "imagefolder", "data.data": str(root), "data.num_classes": None, "data.batch_size": 2,
              "train.latency_batches": [1]}
    cfg = tiny_config(str(tmp_path / "r"), **{"train.epochs": 1, **folder})
    train(cfg)
    for split in ("train", "val"):
        shutil.move(str(root / split / "cat"), str(root / split / "zcat"))
    cfg.train.epochs = 2
    with pytest.raises(dan.UserError, match="was trained on other classes \\(label 0 was 'cat', now 'dog'\\)"):
        train(cfg, resume=True)
    other = tiny_config(str(tmp_path / "o"), **{"train.epochs": 1, **folder, "train.init_from": str(tmp_path / "r")})  # a folder: its last.pt
    with pytest.raises(dan.UserError, match="was trained on other classes"):
        train(other)


def test_a_resume_does_not_need_the_init_from_checkpoint_any_more(tmp_path):
    # init_from is read on a fresh start only; the early check refused a resume whose init_from had
    # moved
    import shutil

    a = str(tmp_path / "a")
    train(tiny_config(a, **{"train.epochs": 1, "train.limit_batches": 1}))
    cfg = tiny_config(str(tmp_path / "b"), **{"train.epochs": 1, "train.limit_batches": 1, "train.init_from": a})
    train(cfg)
    shutil.move(a, str(tmp_path / "moved"))
    cfg.train.epochs = 2
    train(cfg, resume=True)


def test_train_init_from_takes_a_run_folder_and_a_missing_one_is_refused_before_any_file(tmp_path):
    cfg = tiny_config(str(tmp_path / "o"), **{"train.epochs": 1, "train.limit_batches": 1,
                                              "train.init_from": str(tmp_path / "nowhere")})
    with pytest.raises(dan.UserError, match="train.init_from .*nowhere is no checkpoint: give a run folder"):
        train(cfg)
    assert not (tmp_path / "o").exists()


def test_a_resume_by_another_dan_says_so_and_runs_record_their_code(tmp_path, capsys):
    # an upgrade audit: a search resumed by a newer DAN gave another arch.json than the old one's
    # uninterrupted run, and nothing recorded which code wrote a checkpoint (the version stayed 0.1.0)
    from dan.checkpoint import code_version, load_checkpoint, save_checkpoint

    cfg = tiny_config(str(tmp_path / "r"), **{"train.epochs": 1, "train.limit_batches": 2})
    assert train(cfg).extra["code"] == code_version() and code_version().startswith("0.1.0")
    last = str(tmp_path / "r" / "checkpoints" / "last.pt")
    st = load_checkpoint(last)
    assert st["rng"]["code"] == code_version()
    st["rng"]["code"] = "0.0.9+g0123456789ab"
    save_checkpoint(st, last)
    cfg.train.epochs = 2
    train(cfg, Monitor(cfg.run_dir, console=True, tensorboard=False), resume=True)
    out = capsys.readouterr().out
    assert f"was written by DAN 0.0.9+g0123456789ab and this is {code_version()}" in out


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_marks_a_checkout_whose_code_differs_from_its_commit(tmp_path):
    # a resume after an uncommitted edit of dan/ recorded the same code as the commit's, so it said
    # nothing, though its numbers could differ; the mark carries a digest of the difference
    repo = tmp_path / "checkout"
    shutil.copytree(os.path.join(ROOT, "dan"), repo / "dan", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("__pycache__/\n")  # as the project's
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "dan", ".gitignore"], ["commit", "-qm", "c"]):
        subprocess.run(git + args, check=True, capture_output=True)

    def code():
        env = {**os.environ, "PYTHONPATH": str(repo)}
        run = subprocess.run([sys.executable, "-c", "from dan.checkpoint import code_version as c; print(c())"],
                             env=env, cwd=repo, capture_output=True, text=True, check=True)
        return run.stdout.strip()

    commit = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code().endswith(f"+g{commit}")
    with open(repo / "dan" / "errors.py", "a") as f:
        f.write("\n# an edit\n")
    first = code()
    assert re.fullmatch(rf".*\+g{commit}\.dirty[0-9a-f]{{8}}", first)
    with open(repo / "dan" / "errors.py", "a") as f:
        f.write("# another\n")
    second = code()
    assert second != first and ".dirty" in second  # another edit: another digest
    (repo / "dan" / "new.py").write_text("A = 1\n")  # a file git does not track yet: its bytes count
    third = code()
    (repo / "dan" / "new.py").write_text("A = 2\n")
    assert third != second and code() != third
    (repo / "dan" / "new.py").unlink()
    (repo / "docs").mkdir()
    (repo / "docs" / "x.md").write_text("a note\n")  # not code: no mark of its own
    subprocess.run(git + ["checkout", "-q", "--", "dan"], check=True)
    assert code().endswith(f"+g{commit}")


def test_the_final_timing_is_announced(tmp_path, capsys):
    # a ResNet-50's retrain at 224 px printed nothing for 2.5 minutes after its epoch, timing batch 64
    cfg = tiny_config(str(tmp_path / "r"), **{"train.epochs": 1, "train.limit_batches": 1})
    train(cfg, Monitor(cfg.run_dir, console=True, tensorboard=False))
    out = capsys.readouterr().out
    assert "timing the networks (big, small) at batch 1, 4 (train.latency_batches)" in out


def test_each_epoch_line_says_the_time_left(tmp_path, capsys):
    # an audit's 90 epochs at 224 px showed each epoch's bar and no overall time
    from dan.monitor import duration

    assert [duration(s) for s in (0.4, 59, 61, 3599, 3725, 36000)] == [
        "0 s", "59 s", "1 min", "1 h 00 min", "1 h 02 min", "10 h 00 min"]
    cfg = tiny_config(str(tmp_path / "r"), **{"train.epochs": 3, "train.limit_batches": 1,
                                              "train.latency_batches": []})
    train(cfg, Monitor(cfg.run_dir, console=True, tensorboard=False))
    lines = [s for s in capsys.readouterr().err.splitlines() if re.match(r"epoch \d+: ", s)]
    assert [s.split(":")[0] for s in lines] == ["epoch 1", "epoch 2", "epoch 3"]
    assert all(s.endswith(" left)") for s in lines[:2]) and "left" not in lines[2]
    rows = [json.loads(r) for r in open(tmp_path / "r" / "metrics.jsonl")]
    assert not [k for r in rows for k in r if "left" in k]  # the console's alone: metrics.jsonl keeps its keys
    summary = json.load(open(tmp_path / "r" / "summary.json"))  # no latency budget: the eager rows at the run's
    assert summary["latency_threads"] == summary["threads"] == torch.get_num_threads()


def test_the_ort_rows_are_timed_at_the_latency_budgets_threads_and_say_so(tmp_path, monkeypatch):
    """An audit: a retrain given --threads 2 timed its 'ort' rows at 2 threads just above its
    "budget: ... 1 thread(s), onnxruntime" line, and its note said "or --threads 1" when --threads 1
    was given."""
    from types import SimpleNamespace

    import dan.arch
    from dan import engine, onnx_export
    from dan.config import Config

    found = tmp_path / "arch.json"
    found.write_text("{}")  # read by the stand-in below
    arch = SimpleNamespace(budget={"latency": 0.5}, latency={"device": {"runtime": "onnxruntime", "threads": 1}})
    monkeypatch.setattr(dan.arch, "load_arch", lambda path: arch)
    cfg = Config()
    cfg.adjoint.arch = str(found)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the run's --threads 2
    try:
        assert engine.timing_threads(cfg) == (2, 1)  # (eager rows, ort rows)
        arch.latency["device"]["runtime"] = "torch"  # a budget in eager PyTorch: the eager rows at its threads
        assert engine.timing_threads(cfg) == (1, 2)
        assert engine.timing_threads(Config()) == (2, 2)  # no searched network
    finally:
        torch.set_num_threads(before)
    # the thread count reaches the ONNX Runtime session
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten()).eval()
    path = str(tmp_path / "small.onnx")
    onnx_export.export(net, path, (1, 1, 8, 8))
    sessions = []
    real = onnx_export.session
    monkeypatch.setattr(onnx_export, "session", lambda p, threads=None: sessions.append(threads) or real(p, threads))
    assert set(engine.onnx_latency(net, path, (1, 1, 8, 8), [1], threads=1)) == {"1"} and sessions == [1]
    row = {"top1": 0.5, "flops": 10, "params": 5, "nonzero_params": 5, "latency_ms": {"1": 0.1},
           "latency_ms_onnxruntime": {"1": 0.05}}
    summary = {"method": "adjoint", "input_shape": [1, 1, 8, 8], "networks": {"big": row, "small": row},
               "threads": 2, "onnx_threads": 1,
               "timing_load": {"busy": True, "other_processes_cores": 1.7, "cpus": 2, "threads": 2}}
    text = format_summary(summary)
    assert "median ms per forward at 2 thread(s)" in text and "ONNX Runtime on the .onnx file at 1 thread(s)" in text
    eager = format_summary({**summary, "latency_threads": 1})  # the eager rows at a torch budget's threads
    assert "median ms per forward at 1 thread(s)" in eager
    assert "or --threads 1)" in text.splitlines()[-1]
    one = format_summary({**summary, "threads": 1, "timing_load": {**summary["timing_load"], "threads": 1}})
    assert "--threads 1" not in one and one.splitlines()[-1].endswith("(tools/latency.py --arch)")


def test_a_monitor_subclass_with_the_former_epoch_signature_still_runs(tmp_path):
    # a review: epoch() gained an argument, and a caller's subclass overriding the former signature broke
    class Mine(Monitor):
        def epoch(self, epoch, values, step=None, row=None):
            self.seen = getattr(self, "seen", []) + [epoch]
            super().epoch(epoch, values, step, row)

    cfg = tiny_config(str(tmp_path / "r"), **{"train.epochs": 2, "train.limit_batches": 1, "train.latency_batches": []})
    mon = Mine(cfg.run_dir, tensorboard=False)
    train(cfg, mon)
    assert mon.seen == [1, 2]
