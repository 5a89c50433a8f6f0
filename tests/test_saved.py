"""Runs and configs an older (or newer) DAN saved, read by this one (dan/saved.py; an upgrade audit
of runs made with 6c13876 and 4b14b54). The old runs are made here with today's tools and their
files rewritten as the older DAN wrote them: no `code` in config.yaml, arch.json or the checkpoint,
none of the keys added since (dan.config.BEFORE_KEY), and the values it accepted."""

import json
import shutil

import pytest
import yaml

from dan.checkpoint import load_checkpoint, save_checkpoint
from dan.config import BEFORE_KEY
from helpers import assert_user_error, run_tool

TINY = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--batch-size", "16",
        "--limit-batches", "2", "--set", "data.synthetic_size=64", "--set", "model.args.width=8", "--no-tensorboard"]
SEARCH = TINY + ["--budget-flops", "50%"]


def as_older(run, search=None, methods=None, train=False):
    """Rewrite the run folder ``run`` as an older DAN wrote it: ``search`` and ``methods`` values
    set in every copy of its config (config.yaml, the checkpoint's, arch.json's), the keys added since
    and every record of the code left out."""
    def older(d):
        d.pop("code", None)
        for key in BEFORE_KEY:
            d["search"].pop(key.split(".")[1], None)
        d["search"].update(search or {})
        d["methods"] = methods or {}
        return d

    (run / "config.yaml").write_text(yaml.safe_dump(older(yaml.safe_load((run / "config.yaml").read_text())),
                                                    sort_keys=False))
    last = str(run / "checkpoints" / "last.pt")
    st = load_checkpoint(last)
    st["config"] = older(st["config"])
    del st["rng"]["code"]
    save_checkpoint(st, last)
    if not train:
        arch = json.loads((run / "arch.json").read_text())
        arch["config"] = older(arch["config"])
        del arch["search"]["code"]
        (run / "arch.json").write_text(json.dumps(arch))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny search and training run, made once and copied by each test."""
    top = tmp_path_factory.mktemp("made")
    proc = run_tool("search.py", *SEARCH, "--epochs", "2", "--warmup-epochs", "0", "--quiet", "--out", str(top / "s"))
    assert proc.returncode == 0, proc.stderr
    proc = run_tool("train.py", *TINY, "--epochs", "1", "--quiet", "--out", str(top / "t"))
    assert proc.returncode == 0, proc.stderr
    return top


def copied(finished, tmp_path, name):
    shutil.copytree(finished / name, tmp_path / name)
    return tmp_path / name


def test_read_former_reads_values_an_older_dan_ran():
    from dan.saved import read_former

    d = {"search": {"warmup_epochs": 0.5, "arch_samples": 1}, "methods": {"kd": {"teacher_epochs": 0}}}
    read, notes = read_former(d)
    assert read == {"search": {"warmup_epochs": 1, "arch_samples": 1}, "methods": {}}
    assert d["search"]["warmup_epochs"] == 0.5  # not changed
    assert len(notes) == 2 and "0e7ee65" in notes[0] and "train.epochs" in notes[1]
    assert read_former({"search": {"warmup_epochs": 2.0}}) == ({"search": {"warmup_epochs": 2.0}}, [])


def test_old_warmup_retrains_and_resumes(finished, tmp_path):
    # audit: a 6c13876 search with search.warmup_epochs 0.5 (rounded up then) could be neither
    # retrained ("counts whole epochs ... got 0.5") nor resumed (the same, or "written with 0.5, not 1.0")
    run = copied(finished, tmp_path, "s")
    as_older(run, search={"warmup_epochs": 0.5})
    proc = run_tool("retrain.py", str(run / "arch.json"), "--epochs", "1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    said = {}
    for warm in ("0.5", "1"):  # the same command, or the value it ran with
        proc = run_tool("search.py", *SEARCH, "--epochs", "3", "--warmup-epochs", warm, "--out", str(run),
                        "--resume", "--dry-run")
        assert proc.returncode == 0, proc.stderr
        said[warm] = proc.stdout
    assert "search.warmup_epochs=0.5 read as 1" in said["0.5"] and "read as" not in said["1"]


def test_old_kd_section_and_arch_samples_do_not_stop_a_retrain(finished, tmp_path):
    # audit: 4b14b54's methods.kd.teacher_epochs 0 and 6c13876's search.arch_samples 1 stopped the
    # retrain of an adjoint search, which reads neither
    run = copied(finished, tmp_path, "s")
    as_older(run, search={"arch_samples": 1}, methods={"kd": {"teacher_epochs": 0}})
    proc = run_tool("retrain.py", str(run / "arch.json"), "--epochs", "1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    # a resume must run with it: refused, naming the run and the DAN that wrote it
    proc = run_tool("search.py", *SEARCH, "--epochs", "3", "--warmup-epochs", "0", "--arch-samples", "1",
                    "--out", str(run), "--resume", "--dry-run")
    assert_user_error(proc, "search.arch_samples 1", f"comes from {run}", "older DAN", "use that version")


def test_teacher_epochs_zero_says_what_it_meant():
    proc = run_tool("train.py", *TINY, "--method", "kd", "--set", "methods.kd.teacher_epochs=0", "--dry-run")
    assert_user_error(proc, "methods.kd.teacher_epochs", "0 meant train.epochs", "drop the key")


def test_a_value_refused_today_names_the_arch_json(finished, tmp_path):
    run = copied(finished, tmp_path, "s")
    as_older(run)
    arch = json.loads((run / "arch.json").read_text())
    arch["config"]["train"]["lr"] = -1.0
    (run / "arch.json").write_text(json.dumps(arch))
    proc = run_tool("retrain.py", str(run / "arch.json"), "--dry-run")
    assert_user_error(proc, "train.lr", f"comes from {run / 'arch.json'}", "older DAN", "--set the key")
    proc = run_tool("retrain.py", str(run / "arch.json"), "--lr", "0.01", "--dry-run")
    assert proc.returncode == 0, proc.stderr


def test_a_newer_arch_json_names_its_dan(finished, tmp_path):
    # audit: "unknown config key 'search.future_knob'", as if the user had typed it
    run = copied(finished, tmp_path, "s")
    arch = json.loads((run / "arch.json").read_text())
    arch["config"]["search"]["future_knob"] = 3
    arch["search"]["code"] = "9.9.9+gfeedbeef0000"
    (run / "arch.json").write_text(json.dumps(arch))
    proc = run_tool("retrain.py", str(run / "arch.json"), "--dry-run")
    assert_user_error(proc, str(run / "arch.json"), "DAN 9.9.9+gfeedbeef0000", "search.future_knob",
                      "that version of DAN or a newer one")


def test_an_old_runs_config_yaml_says_what_changed(finished, tmp_path):
    # audit: --config <old run>/config.yaml ran today's algorithm without a word
    run = copied(finished, tmp_path, "s")
    assert "code" in yaml.safe_load((run / "config.yaml").read_text())  # today's config.yaml records its DAN
    cmd = ["--config", str(run / "config.yaml"), "--out", str(tmp_path / "again"), "--dry-run"]
    proc = run_tool("search.py", *cmd)
    assert proc.returncode == 0 and "note:" not in proc.stdout, proc.stdout  # this DAN's own: nothing to say
    as_older(run, search={"warmup_epochs": 0.5})
    proc = run_tool("search.py", *cmd)
    assert proc.returncode == 0, proc.stderr
    assert "written by an older DAN" in proc.stdout and "--set search.tau_anneal=epoch" in proc.stdout
    assert "search.warmup_epochs=0.5 read as 1" in proc.stdout
    assert "tau_anneal" in proc.stdout and "step" in proc.stdout  # today's is run: nothing changed by default
    assert "note:" not in run_tool("search.py", *cmd, "--quiet").stdout
    # a user's own config (no code, not a run's saved file) is not an older DAN's
    own = tmp_path / "own.yaml"
    own.write_text("data: {dataset: synthetic, image_size: 16, num_classes: 4}\nmodel: {args: {width: 8}}\n")
    proc = run_tool("search.py", "--config", str(own), "--budget-flops", "50%", "--out", str(tmp_path / "o"),
                    "--dry-run")
    assert proc.returncode == 0 and "note:" not in proc.stdout, (proc.stdout, proc.stderr)


def test_old_train_run_resume_names_only_its_keys(finished, tmp_path):
    # audit: an old train run's resume listed search.arch_lr=0.01, search.arch_objective='kl', ...
    run = copied(finished, tmp_path, "t")
    as_older(run, search={"arch_lr": 0.01}, train=True)
    proc = run_tool("train.py", *TINY, "--epochs", "2", "--out", str(run), "--resume", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "search." not in proc.stdout, proc.stdout


def test_old_search_with_a_holdout_batch_size_resumes_with_its_own(finished, tmp_path):
    # a review: an older DAN replaced data.holdout_batch_size by search.arch_batch_size (saved equal);
    # today's keeps the user's, and the same resume command was refused ("written with ... 16, not 8")
    run = copied(finished, tmp_path, "s")
    as_older(run, search={"arch_batch_size": 16})
    for copy_ in ("config.yaml",):
        d = yaml.safe_load((run / copy_).read_text())
        d["data"]["holdout_batch_size"] = 16
        (run / copy_).write_text(yaml.safe_dump(d, sort_keys=False))
    st = load_checkpoint(str(run / "checkpoints" / "last.pt"))
    st["config"]["data"]["holdout_batch_size"] = 16
    save_checkpoint(st, str(run / "checkpoints" / "last.pt"))
    proc = run_tool("search.py", *SEARCH, "--epochs", "3", "--warmup-epochs", "0", "--set", "data.holdout_batch_size=8",
                    "--out", str(run), "--resume", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "data.holdout_batch_size=16" in proc.stdout and "search.arch_batch_size=16" in proc.stdout


def test_a_number_written_two_ways_is_the_same_setting():
    # a review: an older DAN kept --budget-flops 1.8e6 as the text '1.8e6', today's reads 1800000.0
    from dan.loop import same_value
    from dan.tune.sweep import _same_budget

    assert same_value("1.8e6", 1800000.0) and same_value("25%", "25%") and same_value(3, 3.0)
    assert not same_value(True, 1) and not same_value("1.6G", 1.6e9) and not same_value(None, 0)
    assert _same_budget('{"flops": "1.8e6", "params": null, "band": 0.03}',
                        '{"flops": 1800000.0, "params": null, "band": 0.03}')
    assert not _same_budget('{"flops": "25%", "params": null, "band": 0.03}',
                            '{"flops": "30%", "params": null, "band": 0.03}')


def test_a_resume_keeps_no_earlier_config_that_differs_in_its_dan_alone(tmp_path):
    # a review: every resume of an older run kept config.before-resume-1.yaml, differing in `code` only
    import os

    from dan.loop import keep_earlier_config
    from helpers import tiny_config

    cfg = tiny_config(str(tmp_path))
    cfg.code = "0.1.0+gold"
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    cfg.code = "0.1.0+gnew"
    keep_earlier_config(cfg, str(tmp_path))
    assert os.listdir(tmp_path) == ["config.yaml"]
    cfg.train.epochs += 1  # a change a resume allows: the earlier one kept
    keep_earlier_config(cfg, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.before-resume-1.yaml", "config.yaml"]
    assert "code" not in tiny_config(str(tmp_path)).to_dict()  # no null `code` in a checkpoint's or arch.json's copy


def test_a_resume_over_a_config_yaml_too_deep_or_too_large_to_read_keeps_it_as_it_is(tmp_path):
    """Audit: ``keep_earlier_config`` read the run's config.yaml with plain ``yaml.safe_load``: no size
    limit, and 5000 levels of nesting were a RecursionError traceback. It is read as a config is
    (dan.yaml_data); one this DAN cannot read so is kept, byte for byte, as the earlier config."""
    import os

    from dan.loop import keep_earlier_config
    from dan.yaml_data import MAX_YAML_BYTES
    from helpers import tiny_config

    cfg = tiny_config(str(tmp_path))
    texts = {"deep": "model: {args: {junk: " + "[" * 5000 + "]" * 5000 + "}}\n",
             "large": cfg.to_yaml() + "# " + "x" * MAX_YAML_BYTES + "\n",
             "latin": "name: caf\xe9\n"}
    for what, text in texts.items():
        run = tmp_path / what
        run.mkdir()
        raw = text.encode("latin-1" if what == "latin" else "utf-8")
        (run / "config.yaml").write_bytes(raw)
        keep_earlier_config(cfg, str(run))
        assert sorted(os.listdir(run)) == ["config.before-resume-1.yaml", "config.yaml"], what
        assert (run / "config.before-resume-1.yaml").read_bytes() == raw, what
    # likewise a search's arch.json before its resumed answer is written (json.loads: a RecursionError)
    from dan.search_result import keep_earlier_answer

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep" / "arch.json").write_text(deep)
    keep_earlier_answer(str(tmp_path / "deep"), type("Arch", (), {"to_dict": lambda self: {}})())
    assert (tmp_path / "deep" / "arch.before-resume-1.json").read_text() == deep


def test_an_old_run_config_read_as_it_ran_keeps_the_text_of_its_string_keys(tmp_path):
    # a review: the file was read a second time without the text kept for string keys, so an old
    # run's `train.amp: off` became False ("must be str") once any of its values was read as it ran
    from dan.cli import search as search_cli
    from dan.cli.common import resolve_config
    from dan.config import Config

    d = Config().to_dict()
    d["search"]["warmup_epochs"] = 0.5  # an older DAN's value, read as 1
    for key in BEFORE_KEY:
        d["search"].pop(key.split(".")[1], None)
    text = yaml.safe_dump(d, sort_keys=False).replace("amp: auto", "amp: off")
    assert "amp: off" in text
    (tmp_path / "config.yaml").write_text(text)
    args = search_cli.get_args_parser().parse_args(["--config", str(tmp_path / "config.yaml"), "--budget-flops", "25%",
                                                    "--dataset", "synthetic"])
    cfg = resolve_config(args, search_cli.EXTRA, tool="search.py")
    assert cfg.train.amp == "off" and cfg.search.warmup_epochs == 1
    assert cfg.source == str(tmp_path / "config.yaml") and cfg.name == "config"
    assert any("search.warmup_epochs=0.5 read as 1" in n for n in cfg.notes)
