"""Symbolic links in a run folder a user was given (a search, a study, a run to resume): DAN neither
writes nor deletes through them. Each test builds an audit's attack with a harmless victim file."""

import os

import pytest
import torch

import dan
from dan.monitor import Monitor
from tests.helpers import assert_user_error, run_tool, tiny_config

PRECIOUS = "the user's own file\n"


def _victim(tmp_path, name="important.txt") -> str:
    path = tmp_path / "home" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PRECIOUS)
    return str(path)


def _untouched(path: str) -> bool:
    with open(path) as f:
        return f.read() == PRECIOUS


# ----------------------------------------------------------------------------------- A: .lock
def test_a_lock_file_linked_to_a_users_file_is_refused_and_the_file_kept(tmp_path):
    # an audit's given search held retrain-adjoint/.lock -> ~/important.txt: lock_run_dir opened it
    # following the link, truncated it and wrote its pid into it
    from dan import loop

    victim = _victim(tmp_path)
    out = tmp_path / "search" / "retrain-adjoint"
    out.mkdir(parents=True)
    os.symlink(victim, out / ".lock")
    for call in (loop.lock_run_dir, loop.check_run_lock):
        with pytest.raises(dan.UserError, match=r"\.lock is a symbolic link: .*remove the link") as e:
            call(str(out))
        assert "\n" not in str(e.value)
        assert _untouched(victim) and os.path.islink(out / ".lock")
    assert os.path.abspath(out) not in loop._HELD
    # a dangling link: its target is not created either
    os.remove(out / ".lock")
    os.symlink(str(tmp_path / "home" / "new.txt"), out / ".lock")
    with pytest.raises(dan.UserError, match="is a symbolic link"):
        loop.lock_run_dir(str(out))
    assert not os.path.exists(tmp_path / "home" / "new.txt")


def test_releasing_a_run_folder_removes_its_own_lock_file_only(tmp_path):
    # release_run_dir removed whatever stood at .lock; a link put there in the meantime is left alone
    from dan import loop

    victim = _victim(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    loop.lock_run_dir(str(out))
    os.replace(_link_beside(out, victim), out / ".lock")
    loop.release_run_dir(str(out))
    assert os.path.islink(out / ".lock") and _untouched(victim)
    os.remove(out / ".lock")
    loop.lock_run_dir(str(out))  # an ordinary folder: taken and given back, its file removed
    assert os.path.isfile(out / ".lock") and not os.path.islink(out / ".lock")
    loop.release_run_dir(str(out))
    assert not os.path.lexists(out / ".lock")


def _link_beside(folder, target) -> str:
    link = os.path.join(folder, ".link")
    os.symlink(target, link)
    return link


def test_a_resume_in_a_folder_whose_lock_is_a_link_is_one_line_and_writes_nothing(tmp_path):
    # tools/train.py --resume (as retrain.py <search>/arch.json) on a given folder wrote its pid into the link's target
    victim = _victim(tmp_path)
    out = str(tmp_path / "run")
    args = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--set", "model.args.width=8",
            "--epochs", "1", "--limit-batches", "2", "--set", "train.latency_batches=[]", "--quiet",
            "--no-tensorboard", "--out", out]
    first = run_tool("train.py", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    os.symlink(victim, os.path.join(out, ".lock"))
    assert_user_error(run_tool("train.py", *args, "--resume"), os.path.join(out, ".lock"), "symbolic link",
                      "remove the link")
    assert _untouched(victim)


def test_a_file_lock_linked_to_a_users_file_is_refused(tmp_path):
    # dan.checkpoint.file_lock (a study's study.db.lock, the suite's lock) truncated a linked file to a pid
    from dan.checkpoint import file_lock

    victim = _victim(tmp_path)
    os.symlink(victim, tmp_path / "study.db.lock")
    with pytest.raises(dan.UserError, match="study.db.lock is a symbolic link"):
        with file_lock(str(tmp_path / "study.db.lock")):
            pass
    assert _untouched(victim)


# ------------------------------------------------------------------------- B: removed folders
def test_a_study_does_not_remove_or_write_a_trial_folder_through_a_link(tmp_path):
    # an audit linked <out>/trials/trial-0000 -> ~/elsewhere: the study's start_managed removed
    # ~/elsewhere/search (shutil.rmtree follows links above the folder it is given) and ran the trial there
    from dan.tune import spec_from_dict, tune
    from tests.test_tune import SPEC, base

    victim = _victim(tmp_path, os.path.join("elsewhere", "search", "notes.txt"))
    out = tmp_path / "tune"
    (out / "trials").mkdir(parents=True)
    os.symlink(str(tmp_path / "home" / "elsewhere"), out / "trials" / "trial-0000")
    with pytest.raises(dan.UserError, match=r"trial-0000 is a symbolic link: .*remove the link") as e:
        tune(base(str(out)), spec_from_dict(SPEC), "s", 1)
    assert "\n" not in str(e.value)
    assert _untouched(victim) and os.listdir(tmp_path / "home" / "elsewhere" / "search") == ["notes.txt"]


def test_a_managed_run_folder_under_a_link_is_refused_before_anything_is_removed(tmp_path):
    # dan.loop.start_managed (a trial's search or retrain, a kd run's teacher) removed a folder it had
    # not made when it was reached through a link below the folder the user named
    from dan import loop

    victim = _victim(tmp_path, os.path.join("elsewhere", "search", "notes.txt"))
    out = tmp_path / "tune"
    (out / "trials").mkdir(parents=True)
    os.symlink(str(tmp_path / "home" / "elsewhere"), out / "trials" / "trial-0000")
    cfg = tiny_config(str(out / "trials" / "trial-0000" / "search"))
    with pytest.raises(dan.UserError, match="trial-0000 is a symbolic link"):
        loop.start_managed(cfg, lambda: pytest.fail("built"), str(out))
    # the folder itself a link (to a folder outside, or inside the study)
    os.remove(out / "trials" / "trial-0000")
    (out / "trials" / "trial-0000").mkdir()
    os.symlink(str(tmp_path / "home" / "elsewhere" / "search"), out / "trials" / "trial-0000" / "search")
    with pytest.raises(dan.UserError, match="search is a symbolic link"):
        loop.start_managed(cfg, lambda: pytest.fail("built"), str(out))
    assert _untouched(victim)
    # the user-named folder may itself be reached through a link: the user chose it
    os.symlink(str(out), tmp_path / "alias")
    os.remove(out / "trials" / "trial-0000" / "search")
    (out / "trials" / "trial-0000" / "search").mkdir()
    dan.checkpoint.check_no_links(str(tmp_path / "alias" / "trials" / "trial-0000" / "search"),
                                  str(tmp_path / "alias"))


def test_an_unfinished_run_the_suite_clears_is_not_reached_through_a_link(tmp_path):
    # tools/reproduce.py cleared an interrupted run's folder with shutil.rmtree: a link in the suite's folder
    # would have had its target's run cleared
    from dan.suite.run import check_clearable

    victim = _victim(tmp_path, os.path.join("elsewhere", "dan", "config.yaml"))
    suite = tmp_path / "suite"
    (suite / "seed0").mkdir(parents=True)
    os.symlink(str(tmp_path / "home" / "elsewhere"), suite / "seed1")
    with pytest.raises(dan.UserError, match="seed1 is a symbolic link"):
        check_clearable(str(suite / "seed1" / "dan"), str(suite))
    assert _untouched(victim)


# ----------------------------------------------------------------------- C: files written in place
def test_init_from_json_replaces_a_link_instead_of_writing_through_it(tmp_path):
    # start_from wrote <run>/init_from.json with open("w"), through a link a given folder held
    from dan.checkpoint import INIT_FROM, save_checkpoint, start_from

    victim = _victim(tmp_path)
    ckpt = str(tmp_path / "net.pt")
    save_checkpoint({"model": torch.nn.Linear(2, 2).state_dict()}, ckpt)
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / INIT_FROM)
    start_from(torch.nn.Linear(2, 2), ckpt, str(run))
    assert _untouched(victim)
    assert not os.path.islink(run / INIT_FROM) and '"sha256"' in (run / INIT_FROM).read_text()


def test_a_linked_metrics_jsonl_is_refused_and_not_appended_to(tmp_path):
    # the monitor appended a run's rows to a metrics.jsonl link's target
    victim = _victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / "metrics.jsonl")
    mon = Monitor(str(run), tensorboard=False, console=False)
    with pytest.raises(dan.UserError, match=r"metrics.jsonl is a symbolic link: .*remove the link") as e:
        mon.epoch(1, {"val/top1": 0.5})
    assert "\n" not in str(e.value)
    mon.close()
    assert _untouched(victim)


def test_atomic_writes_replace_links_at_the_file_and_at_its_temporary_file(tmp_path):
    # widths.png, ranks.json, a suite's records: whole files written by a rename replace a link
    from dan.checkpoint import save_bytes, save_json

    victim = _victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / "widths.png")
    save_bytes(b"png", str(run / "widths.png"))
    os.symlink(victim, run / f".ranks.json.tmp{os.getpid()}")  # the temporary file's name is guessable
    save_json({"world": 1}, str(run / "ranks.json"))
    assert _untouched(victim)
    assert (run / "widths.png").read_bytes() == b"png" and not os.path.islink(run / "widths.png")
    assert (run / "ranks.json").read_text() == '{\n  "world": 1\n}\n'
    assert sorted(os.listdir(run)) == ["ranks.json", "widths.png"]


def _study_with_a_best_trial(run_dir: str, folder: str):
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{os.path.join(run_dir, 'study.db')}", study_name="s",
                                direction="maximize")
    trial = optuna.trial.create_trial(value=0.5, user_attrs={"folder": folder, "constraint": -0.01})
    study.add_trial(trial)
    return study


def test_the_best_trial_is_copied_from_its_own_folder_and_not_through_links(tmp_path):
    # write_best copied from the folder the storage named (a given study.db can name any) with
    # shutil.copyfile, which wrote through a link at best/arch.json
    from dan.tune.sweep import write_best

    victim = _victim(tmp_path)
    elsewhere = tmp_path / "home" / "elsewhere"
    (elsewhere / "search").mkdir(parents=True)
    for name in ("arch.json", "config.yaml"):
        (elsewhere / "search" / name).write_text("not the study's\n")
    out = tmp_path / "tune"
    out.mkdir()
    study = _study_with_a_best_trial(str(out), str(elsewhere))
    with pytest.raises(dan.UserError, match=r"trial-0000.search.arch.json does not exist"):
        write_best(study, str(out), multi=False)
    assert not os.path.exists(out / "best" / "arch.json")
    own = out / "trials" / "trial-0000" / "search"
    own.mkdir(parents=True)
    for name in ("arch.json", "config.yaml"):
        (own / name).write_text(f"the trial's {name}\n")
    (out / "best").mkdir()
    os.symlink(victim, out / "best" / "arch.json")
    result = write_best(study, str(out), multi=False)
    assert _untouched(victim) and not os.path.islink(out / "best" / "arch.json")
    assert (out / "best" / "arch.json").read_text() == "the trial's arch.json\n"
    assert result["best"]["arch"] == os.path.join(str(out), "best", "arch.json")
    # a trial file reached through a link is not copied
    os.remove(own / "arch.json")
    os.symlink(victim, own / "arch.json")
    with pytest.raises(dan.UserError, match="arch.json is a symbolic link"):
        write_best(study, str(out), multi=False)


def test_a_study_db_link_in_a_given_study_folder_is_refused(tmp_path):
    # SQLite wrote the study through a study.db link into its target
    from dan.tune import spec_from_dict, tune
    from tests.test_tune import SPEC, base

    victim = _victim(tmp_path)
    out = tmp_path / "tune"
    out.mkdir()
    os.symlink(victim, out / "study.db")
    with pytest.raises(dan.UserError, match="study.db is a symbolic link"):
        tune(base(str(out)), spec_from_dict(SPEC), "s", 1)
    assert _untouched(victim)
