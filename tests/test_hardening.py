"""Issue 10 regression tests: each malformed input ends with exit 2 and one line, writes nothing,
and never changes a folder that holds earlier work."""

import json
import os

import numpy as np
import pytest
import torch

import dan
from dan.monitor import Monitor
from dan.engine import train
from tests.helpers import assert_user_error, run_tool, tiny_config

TINY = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--epochs", "1", "--limit-batches",
        "2", "--batch-size", "16", "--set", "model.args.width=8", "--set", "data.synthetic_size=64", "--quiet",
        "--no-tensorboard", "--set", "train.latency_batches=[1]",
        "--set", "search.warmup_epochs=0"]  # a 1-epoch search that searches


def _snapshot(folder) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("key,value,fragment", [
    ("train.epochs", "-3", "train.epochs"),
    ("train.lr", ".nan", "train.lr"),
    ("train.lr", "-0.1", "train.lr"),
    ("train.label_smoothing", "7", "train.label_smoothing"),
    ("train.eval_every", "0", "train.eval_every"),
    ("train.log_every", "0", "train.log_every"),
    ("train.latency_batches", "[0]", "train.latency_batches"),
    ("model.args.width", "200000", "model.args.width"),
    ("model.args.width", "'wide'", "model.args.width"),
    ("adjoint.alpha", ".inf", "adjoint.alpha"),
    ("data.holdout", "1.5", "data.holdout"),
    ("train.lr", "[1, {", "not valid YAML"),
    ("search.warmup_epochs", "0.5", "counts whole epochs"),  # 0.01, 0.5 and 1 searched alike
    ("search.arch_samples", "1", "no gradient from the data"),  # the cost penalty alone steered the logits
])
def test_bad_config_values_are_one_line_and_write_nothing(tmp_path, key, value, fragment):
    out = tmp_path / "run"
    p = run_tool("train.py", *TINY, "--set", f"{key}={value}", "--out", str(out))
    assert_user_error(p, fragment)
    assert not out.exists()


@pytest.mark.parametrize("value", [[], "", 0, False, [1]])
def test_a_config_section_that_is_not_a_mapping_is_refused(value):
    """`data:` (null) is an empty section and takes the defaults; an empty list or string, 0 or
    false was once taken the same way, and a config reading `data: []` trained ten epochs of the
    default Fashion-MNIST (found by tools/fuzz.py --seed 4848, config property)."""
    from dan.config import Config
    from dan.errors import UserError

    assert Config.from_dict({"data": None}).data == Config().data
    with pytest.raises(UserError, match="config section 'data' must be a mapping"):
        Config.from_dict({"data": value})
    with pytest.raises(UserError, match="config section 'top' must be a mapping"):
        Config.from_dict(value)


@pytest.mark.parametrize("text", ["", "# every setting commented out\n# train: {epochs: 3}\n", "{}\n"])
def test_a_config_file_that_sets_nothing_is_refused(tmp_path, text):
    """`--config` names a file on purpose: one that sets nothing (an editor's empty save, a template
    left commented out) trained the defaults, ten epochs of Fashion-MNIST (fuzz seed 4850 stopped
    three such runs at its time limit)."""
    from dan.config import Config
    from dan.errors import UserError

    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="holds no settings .*drop --config"):
        Config.from_file(str(path))


def test_yaml_alias_bomb_and_non_utf8_configs(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 12)]
    bomb.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    p = run_tool("train.py", "--config", str(bomb), "--out", str(out), timeout=60)
    assert_user_error(p, "aliases")
    assert not out.exists()
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert_user_error(run_tool("train.py", "--config", str(latin), "--out", str(out)), "UTF-8")
    assert not out.exists()


def test_a_folder_with_finished_results_is_never_written_into(tmp_path):
    out = str(tmp_path / "done")
    p = run_tool("train.py", *TINY, "--out", out)
    assert p.returncode == 0, p.stderr
    # the user deletes the checkpoints but keeps the results
    import shutil

    shutil.rmtree(os.path.join(out, "checkpoints"))
    before = _snapshot(out)
    p = run_tool("train.py", *TINY, "--out", out)
    assert_user_error(p, "already holds a run", "summary.json")
    assert _snapshot(out) == before
    # a width baseline too: it writes arch.json and config.yaml, and a valid widths file aimed at a
    # finished training once overwrote its config.yaml (found by tools/fuzz.py, widths property)
    assert run_tool("baseline.py", "uniform", *TINY, "--budget-flops", "30%", "--out", str(tmp_path / "u")
                    ).returncode == 0
    for method in (["uniform"], ["fixed", "--widths", str(tmp_path / "u" / "arch.json")]):
        p = run_tool("baseline.py", *method, *TINY, "--budget-flops", "30%", "--out", out)
        assert_user_error(p, "already holds a run", "config.yaml")
        assert _snapshot(out) == before
    # and a user's own config.yaml in the folder named by --out
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("name: mine\n")
    assert_user_error(run_tool("baseline.py", "uniform", *TINY, "--budget-flops", "30%", "--out", str(mine)),
                      "config.yaml")
    assert os.listdir(mine) == ["config.yaml"] and (mine / "config.yaml").read_text() == "name: mine\n"


def test_a_config_files_out_naming_a_folder_of_other_files_is_refused_unless_typed(tmp_path):
    """Audit: a given config with ``out: /some/existing/folder`` silently made the run write there: its
    config.yaml and small.json over the folder's, and its ``.draft.tmp*`` files removed (stale
    temporaries). The file's out may name a new folder, an empty one or a run's own; --out names any."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine\n")
    (victim / ".draft.tmp1").write_text("draft\n")
    cfg = tmp_path / "given.yaml"
    cfg.write_text(f"out: {victim}\nmodel: {{args: {{width: 8}}}}\n"
                   "data: {dataset: synthetic, image_size: 16, num_classes: 4, synthetic_size: 64}\n")
    before = _snapshot(victim)
    for dry in (["--dry-run"], []):
        p = run_tool("train.py", "--config", str(cfg), *TINY[6:], *dry)
        assert_user_error(p, str(cfg), f"out: {victim}", "holds no DAN run", "--out")
        assert _snapshot(victim) == before and sorted(os.listdir(victim)) == [".draft.tmp1", "notes.txt"]
    with pytest.raises(dan.UserError, match="holds no DAN run.*out="):
        dan.search(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                       torch.nn.Linear(4, 4)),
                   "synthetic", cfg=str(cfg))
    assert _snapshot(victim) == before
    # typed, the folder is the user's choice; a new folder, or a run's own (here, the one just made), is taken
    assert run_tool("train.py", "--config", str(cfg), *TINY[6:], "--dry-run", "--out", str(victim)).returncode == 0
    cfg.write_text(cfg.read_text().replace(str(victim), str(tmp_path / "run")))
    assert run_tool("train.py", "--config", str(cfg), *TINY[6:]).returncode == 0
    p = run_tool("train.py", "--config", str(cfg), *TINY[6:], "--epochs", "2", "--resume")
    assert p.returncode == 0, p.stderr[-2000:]


def test_a_run_that_stopped_before_its_first_epoch_can_be_started_again_in_its_folder(tmp_path):
    """A corrupt image met after the first logged steps stops a search with nothing finished (an
    empty metrics.jsonl, no checkpoint); after the user replaces the image, the same command runs:
    there is nothing to --resume and nothing to lose."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split, n in (("train", 12), ("val", 2)):
        for c in ("cat", "dog"):
            os.makedirs(root / split / c)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    out = str(tmp_path / "s")
    args = ["search.py", "--dataset", "imagefolder", "--data", str(root), "--image-size", "16", "--epochs", "1",
            "--batch-size", "2", "--set", "model.args.width=8", "--set", "search.warmup_epochs=0", "--set",
            "train.log_every=1", "--quiet", "--no-tensorboard", "--set", "train.latency_batches=[1]",
            "--budget-flops", "50%", "--out", out]
    assert run_tool(*args).returncode == 0
    order = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert order  # the run logs; now the same images, one of them corrupt, in a new folder
    out2 = str(tmp_path / "s2")
    args[-1] = out2
    bad = root / "train" / "dog" / "11.png"
    good = bad.read_bytes()
    bad.write_bytes(good[:40])
    assert_user_error(run_tool(*args), "cannot read image", "11.png")
    assert os.path.isfile(os.path.join(out2, "metrics.jsonl")), "the corrupt image must be met after a logged step"
    assert not open(os.path.join(out2, "metrics.jsonl")).read().strip()
    assert not os.path.exists(os.path.join(out2, "checkpoints", "last.pt"))
    bad.write_bytes(good)
    p = run_tool(*args)
    assert p.returncode == 0, p.stderr[-2000:]
    assert os.path.isfile(os.path.join(out2, "arch.json"))
    assert_user_error(run_tool(*args), "already holds a run")  # a finished run holds its folder again


def test_a_refused_resume_leaves_the_folder_as_it_was(tmp_path):
    out = str(tmp_path / "r")
    p = run_tool("train.py", *TINY, "--epochs", "2", "--out", out)
    assert p.returncode == 0, p.stderr
    before = _snapshot(out)
    p = run_tool("train.py", *TINY, "--epochs", "3", "--set", "train.lr=0.5", "--out", out, "--resume")
    assert_user_error(p, "train.lr")
    assert _snapshot(out) == before


def test_out_naming_a_file_or_an_unwritable_place(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert_user_error(run_tool("train.py", *TINY, "--out", str(f)), "is a file")
    assert f.read_text() == "x"
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root): permissions are not enforced")
        assert_user_error(run_tool("train.py", *TINY, "--out", str(ro / "run")), "Permission denied")
    finally:
        os.chmod(ro, 0o700)


def test_arch_json_missing_a_width_group_is_refused(tmp_path):
    s = str(tmp_path / "s")
    p = run_tool("search.py", *TINY, "--budget-flops", "30%", "--out", s)
    assert p.returncode == 0, p.stderr
    d = json.load(open(os.path.join(s, "arch.json")))
    del d["widths"]["layer1.0.conv1"]
    bad = tmp_path / "arch.json"
    bad.write_text(json.dumps(d))
    assert_user_error(run_tool("retrain.py", str(bad), "--out", str(tmp_path / "r")), "layer1.0.conv1")
    assert not (tmp_path / "r").exists()
    d["space_args"]["width"] = 200000
    bad.write_text(json.dumps(d))
    assert_user_error(run_tool("retrain.py", str(bad), "--out", str(tmp_path / "r")), "space_args.width")
    bad.write_bytes(b"\xff\xfe{}")
    assert_user_error(run_tool("retrain.py", str(bad), "--out", str(tmp_path / "r")), "UTF-8")


def test_an_image_folder_with_one_class_is_refused(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        d = tmp_path / "data" / split / "only"
        d.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{i}.png")
    p = run_tool("train.py", "--dataset", "imagefolder", "--data", str(tmp_path / "data"), "--image-size", "8",
                 "--epochs", "1", "--out", str(tmp_path / "run"))
    assert_user_error(p, "at least 2")
    assert not (tmp_path / "run").exists()


def test_metrics_hold_one_row_per_epoch_after_kills_and_resumes(tmp_path):
    """A run killed in the middle of epoch 2, with a stray row of epoch 2 already in metrics.jsonl
    (as a kill between an old-style row and its checkpoint left it): after --resume, exactly one
    row per epoch."""
    from tests.test_engine import KillAt

    out = str(tmp_path / "m")
    cfg = tiny_config(out, **{"train.epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, KillAt(out, 8 + 3))
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"epoch": 2, "stray": True}) + "\n")
        f.write('{"epoch": 3, "cut')  # a line cut by the kill
    train(tiny_config(out, **{"train.epochs": 3}), Monitor(out, tensorboard=False), resume=True)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert not any(r.get("stray") for r in rows)
    leftovers = [n for n in os.listdir(os.path.join(out, "checkpoints")) if ".tmp" in n]
    assert leftovers == []


def test_the_epoch_row_lost_between_checkpoint_and_metrics_is_restored(tmp_path):
    out = str(tmp_path / "k")
    train(tiny_config(out, **{"train.epochs": 1}), Monitor(out, tensorboard=False))
    path = os.path.join(out, "metrics.jsonl")
    row = json.loads(open(path).read())
    open(path, "w").close()  # the kill came after the checkpoint, before the row
    os.remove(os.path.join(out, "summary.json"))
    for f in ("small.pt", "small.pt2", "small_state.pt", "small.json"):
        os.remove(os.path.join(out, f))
    train(tiny_config(out, **{"train.epochs": 2}), Monitor(out, tensorboard=False), resume=True)
    rows = [json.loads(line) for line in open(path)]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["val/top1_small"] == row["val/top1_small"]


def test_a_corrupt_image_is_named_in_one_line(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            d = tmp_path / "data" / split / cls
            d.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{i}.png")
    bad = tmp_path / "data" / "train" / "a" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for workers in ("0", "1"):
        p = run_tool("train.py", "--dataset", "imagefolder", "--data", str(tmp_path / "data"), "--image-size", "8",
                     "--epochs", "1", "--batch-size", "4", "--workers", workers, "--quiet", "--no-tensorboard",
                     "--set", "model.args.width=8", "--out", str(tmp_path / f"run{workers}"))
        assert_user_error(p, "9.png")


def test_unknown_torchvision_weights_are_one_line(tmp_path):
    p = run_tool("train.py", *TINY, "--space", "torchvision.resnet18", "--set", "model.args.weights=NOPE",
                 "--out", str(tmp_path / "w"))
    assert_user_error(p, "unknown weights", "get_model_weights")


def test_stale_temporary_files_of_a_killed_write_are_removed_on_resume(tmp_path):
    out = str(tmp_path / "t")
    train(tiny_config(out, **{"train.epochs": 1}), Monitor(out, tensorboard=False))
    for f in ("summary.json", "small.pt", "small.pt2", "small_state.pt", "small.json"):
        os.remove(os.path.join(out, f))
    stale = os.path.join(out, "checkpoints", ".last.pt.tmp99999")
    open(stale, "wb").close()  # what a SIGKILL during torch.save leaves
    train(tiny_config(out, **{"train.epochs": 2}), Monitor(out, tensorboard=False), resume=True)
    assert not os.path.exists(stale)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("which", [".last.pt", ".small.pt.", ".small.pt2", ".small_state.pt"])
def test_a_full_disk_is_one_line_that_says_so(tmp_path, monkeypatch, which):
    # the files a run writes are opened on /dev/full, whose writes fail with ENOSPC as a full disk's:
    # given a path, torch.save raised "RuntimeError: unexpected pos" (exit 1, a traceback), and
    # TorchScript's and torch.export's writers aborted the process (exit 134)
    import builtins

    import dan.checkpoint
    from dan.fuzz import TINY, run_in_process

    def on_full_disk(path, mode="r", *a, **k):
        if "w" in mode and str(tmp_path) in str(path) and which in os.path.basename(str(path)):
            return builtins.open("/dev/full", mode, *a, **k)
        return builtins.open(path, mode, *a, **k)

    monkeypatch.setattr(dan.checkpoint, "open", on_full_disk, raising=False)
    code, err = run_in_process("train.py", TINY + ["--out", str(tmp_path / "d")])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "free some disk space" in lines[0]


def test_a_corrupt_small_json_beside_a_pt2_is_one_line(tmp_path):
    import torch.nn as nn

    from dan.deploy import save_deployable

    save_deployable(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), str(tmp_path), (1, 1, 8, 8))
    (tmp_path / "small.json").write_text("{not json")
    assert_user_error(run_tool("count.py", str(tmp_path / "small.pt2")), "small.json is corrupt")
    (tmp_path / "small.json").write_text('{"input_shape": [1, -3, 8]}')
    assert_user_error(run_tool("count.py", str(tmp_path / "small.pt2")), "small.json is corrupt")


def test_a_key_with_a_line_break_still_gives_one_line(tmp_path):
    """Found by tools/fuzz.py: an arch.json key holding a newline (then, in the 2000-example run, a
    vertical tab, which ``str.splitlines`` also breaks on) made the message two lines."""
    s = str(tmp_path / "a")
    p = run_tool("baseline.py", "uniform", *TINY, "--budget-flops", "30%", "--out", s)
    assert p.returncode == 0, p.stderr
    d = json.load(open(os.path.join(s, "arch.json")))
    for i, (key, shown) in enumerate([("bad\nkey", "bad\\nkey"), ("bad\x0bkey", "bad\\x0bkey"),
                                      ("bad\u2028key", "bad\\u2028key"), ("bad\x85key", "bad\\x85key")]):
        bad = tmp_path / f"arch{i}.json"
        bad.write_text(json.dumps({**d, key: 1}))
        assert_user_error(run_tool("retrain.py", str(bad), "--out", str(tmp_path / f"r{i}")), shown)


@pytest.mark.parametrize("storage, fragment", [
    ("journal:{tmp}/a-folder", "Is a directory"),      # the journal path names a folder
    ("journal:{tmp}/a-file/journal.log", "a-file"),     # its parent is a file
    ("journal:", "needs a file path"),
    ("sqlite:////{tmp}/a-file/study.db", "check --storage"),
])
def test_unusable_tune_storage_is_one_line_and_leaves_no_run_folder(tmp_path, storage, fragment):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "tune"
    proc = run_tool("tune.py", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "4",
                    "--limit-batches", "1", "--tune", "configs/tune_fashion_mnist.yaml",
                    "--budget-flops", "50%", "--study", "s", "--trials", "1", "--quiet",
                    "--storage", storage.format(tmp=tmp_path), "--out", str(out))
    assert_user_error(proc, fragment)
    assert not out.exists()


def test_negative_epochs_in_an_arch_json_config_are_refused(tmp_path):
    """The config an arch.json carries is checked like any other: -3 epochs trained nothing and
    exited 0 before."""
    s = str(tmp_path / "a")
    p = run_tool("baseline.py", "uniform", *TINY, "--budget-flops", "30%", "--out", s)
    assert p.returncode == 0, p.stderr
    d = json.load(open(os.path.join(s, "arch.json")))
    d["config"].setdefault("train", {})["epochs"] = -3
    bad = tmp_path / "arch.json"
    bad.write_text(json.dumps(d))
    out = tmp_path / "r"
    assert_user_error(run_tool("retrain.py", str(bad), "--out", str(out)), "train.epochs")
    assert not out.exists()


def test_output_piped_into_a_reader_that_stops_early_ends_without_a_traceback(tmp_path):
    """`reproduce.py --dry-run | head`: the reader closes the pipe; the tool stops as a shell's
    tools do (status 141, SIGPIPE), with no traceback on stderr."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "reproduce.py"), "--suite", "search",
                          "--dry-run", "--out", str(tmp_path / "suite"), "--results", str(tmp_path / "s.md")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()  # no reader: the first line written breaks the pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and "Traceback" not in err, err


def test_an_allocation_that_fails_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """A setting too large for the machine's memory (the fuzz audit's ``--set data.image_size=1000``
    wanted more than 11 GB) is the user's to lower: exit 2, one line saying what to lower. The
    failure here is the CPU allocator's own, asked for 2**62 bytes from inside a training step."""
    import torch
    import torch.nn.functional as F

    from dan.fuzz import run_in_process

    real = F.cross_entropy

    def hungry(*args, **kw):
        torch.empty(2**62, dtype=torch.uint8)
        return real(*args, **kw)

    monkeypatch.setattr(F, "cross_entropy", hungry)
    code, err = run_in_process("train.py", TINY + ["--out", str(tmp_path / "a")], time_limit=None)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: out of memory (4,398,046,511,104 MiB requested)") and "--batch-size" in lines[0]

    def broken(*args, **kw):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(F, "cross_entropy", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        run_in_process("train.py", TINY + ["--out", str(tmp_path / "b")], time_limit=None)


def test_an_unwritable_file_is_named_as_the_user_knows_it(capsys):
    # the line named the temporary being written (F/.metrics.jsonl.tmp5693), not metrics.jsonl
    import errno

    from dan.cli.common import run_tool as run

    def main(argv):
        raise OSError(errno.EACCES, "Permission denied", "/runs/x/.metrics.jsonl.tmp5693")

    with pytest.raises(SystemExit) as e:
        run(main, [])
    assert e.value.code == 2
    assert "cannot write or read /runs/x/metrics.jsonl: Permission denied" in capsys.readouterr().err


def test_a_checkpoint_of_a_newer_format_is_named(tmp_path):
    import torch

    from dan.checkpoint import load_checkpoint

    torch.save({"version": 99, "model": {}}, tmp_path / "last.pt")  # read as this version's before
    with pytest.raises(dan.UserError, match="format version 99, newer than this DAN reads \\(1\\): update DAN"):
        load_checkpoint(str(tmp_path / "last.pt"))


def test_ctrl_c_while_a_checkpoint_is_written_stays_an_interrupt(tmp_path, monkeypatch):
    # written through Python's file writes, a Ctrl-C inside one became PyTorch's "RuntimeError:
    # unexpected pos" (the fuzz harness's time limit found it)
    import builtins

    import torch

    import dan.checkpoint

    class Interrupting:  # Ctrl-C in one write, the later writes going on (the writer's cleanup)
        def __init__(self, f):
            self.f, self.calls = f, 0

        def write(self, b):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *e):
            self.f.close()

    monkeypatch.setattr(dan.checkpoint, "open", lambda p, m="r", *a, **k: Interrupting(builtins.open(p, m, *a, **k)),
                        raising=False)
    with pytest.raises(KeyboardInterrupt):
        dan.checkpoint.save_checkpoint({"model": {"w": torch.zeros(1000)}}, str(tmp_path / "last.pt"))
    assert os.listdir(tmp_path) == []  # no temporary left, no checkpoint half-written


def test_a_torchscript_file_named_as_a_checkpoint_is_one_line(tmp_path):
    # a kd teacher given as model.pt: PyTorch's "dispatching to torch.jit.load" warning came first
    import warnings

    import torch

    from dan.checkpoint import load_checkpoint

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "model.pt"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(dan.UserError, match="is a deployed TorchScript network, not a run's checkpoint"):
            load_checkpoint(str(tmp_path / "model.pt"), fix="pass the teacher's run folder")
    assert not [w for w in seen if "torch.jit.load" in str(w.message)]


def test_an_infinite_number_read_as_text_is_named_as_such():
    # "--set methods.kd.temperature=inf" was refused with "must be float, got 'inf'"
    from dan.config import _coerce

    with pytest.raises(dan.UserError, match="'methods.kd.temperature' must be a finite number, got 'inf'"):
        _coerce(float, "inf", "methods.kd.temperature")
    with pytest.raises(dan.UserError, match="must be float, got 'abc'"):
        _coerce(float, "abc", "x")


def test_a_batch_of_one_through_a_one_by_one_batchnorm_is_a_user_error(tmp_path):
    # batch size 1 on a ResNet whose last stage is 1x1 was PyTorch's ValueError and its traceback
    cfg = tiny_config(str(tmp_path / "r"), **{"model.space": "resnet18", "data.batch_size": 1,
                                              "train.epochs": 1, "train.limit_batches": 2})
    with pytest.raises(dan.UserError,
                       match="a batch leaves a BatchNorm one value per channel.*raise data.batch_size \\(a search"):
        train(cfg)


def test_a_study_folder_under_another_storage_and_a_folder_of_dot_files_are_not_other_files(tmp_path):
    """A review: a study under ``--storage journal:...`` holds only trials/ (and its journal) until it
    ends, and a second worker whose config file set ``out:`` there was refused as a folder of other
    files; so was a folder holding a file manager's .DS_Store only."""
    from dan.loop import foreign_entry

    study = tmp_path / "study"
    (study / "trials" / "trial-0000").mkdir(parents=True)
    (study / "journal.log").write_text("")
    assert foreign_entry(str(study)) is None
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_text("")
    assert foreign_entry(str(hidden)) is None
    (hidden / "notes.txt").write_text("mine")
    assert foreign_entry(str(hidden)) == "notes.txt"
