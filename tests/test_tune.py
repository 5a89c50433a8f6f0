"""Optuna tuning: a pruned study, continuing it, two workers on one storage, a killed trial."""

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import dan
from dan.tune import spec_from_dict, tune
from tests.helpers import ROOT, assert_user_error, run_tool, tiny_config

SPEC = {"search_epochs": 2, "retrain_epochs": 1, "validation": 0.25, "pruner": "median", "seed": 0,
        "params": {"search.arch_lr": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
                   "adjoint.c": {"type": "float", "low": 0.5, "high": 2.0},
                   "adjoint.schedule": {"type": "categorical", "choices": ["quadratic", "linear"]}}}


def base(out):
    return tiny_config(out, **{"train.limit_batches": 2, "search.budget_flops": "40%", "train.latency_batches": [],
                               "search.warmup_epochs": 0})  # 1-epoch searches that search


def states(out, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{os.path.join(out, 'study.db')}")
    return [t.state for t in study.trials], study


def test_study_with_pruner_then_continue(tmp_path):
    out = str(tmp_path / "tune")
    result = tune(base(out), spec_from_dict(SPEC), "s", 3)
    st, study = states(out, "s")
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in st) == 3
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    best = result["best"]
    assert os.path.isfile(os.path.join(out, "best", "arch.json"))
    assert dan.load_arch(best["arch"]).budget["relative"] == 0.4
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(len(t.intermediate_values) == 3 for t in complete)  # 2 search + 1 retrain epochs reported
    assert all(t.user_attrs["constraint"] <= 0 for t in complete)
    # no trial beyond the count: each command used to end by asking one more and telling it FAIL
    assert len(st) == result["trials"] == result["counted"] == 3 and result["surplus"] == 0
    # the same call with more trials continues the study
    result = tune(base(out), spec_from_dict(SPEC), "s", 4)
    st, _ = states(out, "s")
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in st) == 4
    assert len(st) == result["trials"] == result["counted"] == 4
    # a study that holds its count already adds nothing
    assert tune(base(out), spec_from_dict(SPEC), "s", 4)["trials"] == 4
    with pytest.raises(dan.UserError, match="other settings"):
        tune(base(out), spec_from_dict({**SPEC, "retrain_epochs": 2}), "s", 5)


def _worker(out, study, trials, extra=()):
    spec = os.path.join(os.path.dirname(out), "spec.yaml")
    args = ["--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--batch-size", "32",
            "--limit-batches", "2", "--set", "model.args.width=8", "--set", "data.synthetic_size=256",
            "--set", "train.latency_batches=[]", "--budget-flops", "40%", "--out", out,
            "--study", study, "--trials", str(trials), "--tune", spec, *extra]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "tune.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _write_spec(tmp_path, **kw):
    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**SPEC, "pruner": "none", **kw}))


def test_two_workers_share_one_storage_without_extra_trials(tmp_path):
    _write_spec(tmp_path)
    out = str(tmp_path / "tune")
    workers = [_worker(out, "w", 4) for _ in range(2)]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), logs
    st, study = states(out, "w")
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 4
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state == TrialState.FAIL)
    ran = [l for log in logs for l in log.splitlines() if l.startswith("[trial") and "value" in l]
    assert len(ran) == 4  # no trial ran twice, none beyond the count


def test_a_killed_trial_is_marked_failed_and_retried(tmp_path):
    _write_spec(tmp_path, heartbeat=1, grace=3)
    out = str(tmp_path / "tune")
    w = _worker(out, "k", 2)
    # wait until the first trial has written a search checkpoint, then kill the worker hard. Where
    # the kill lands (search, retrain, or already the next trial on a slow poll) varies from run to
    # run: the killed trial is whichever one was running, and every case must end the same way.
    ckpt = os.path.join(out, "trials", "trial-0000", "search", "checkpoints", "last.pt")
    deadline = time.time() + 300
    while not os.path.isfile(ckpt) and time.time() < deadline:
        time.sleep(0.1)
    assert os.path.isfile(ckpt)
    w.send_signal(signal.SIGKILL)
    w.wait()
    time.sleep(4)  # longer than the grace period
    w2 = _worker(out, "k", 2)
    log = w2.communicate(timeout=600)[0]
    assert w2.returncode == 0, log
    st, study = states(out, "k")
    failed = [t for t in study.trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    report = "\n".join([f"{t.number} {t.state} {t.user_attrs}" for t in study.trials] + [log])
    assert len(failed) == 1, report
    assert "error" not in failed[0].user_attrs, report  # marked failed by the sweep, not by an error
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE, report
    assert retry[0].params == failed[0].params
    assert retry[0].user_attrs["folder"] == failed[0].user_attrs["folder"]  # it continued the same folder
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2, report


def test_a_retry_resumes_a_retrain_that_was_killed_after_its_checkpoint(tmp_path):
    # the window a SIGKILL hits only now and then: search finished, retrain checkpoint written,
    # summary.json not yet. The retry must resume that checkpoint, not refuse it as another config.
    from dan.tune import objective

    out = str(tmp_path / "tune")
    spec = spec_from_dict({**SPEC, "pruner": "none", "search_epochs": 1})
    tune(base(out), spec, "r", 1)
    _, study = states(out, "r")
    first = study.trials[0]
    retrain = os.path.join(first.user_attrs["folder"], "retrain")
    assert os.path.isfile(os.path.join(retrain, "checkpoints", "last.pt"))
    os.remove(os.path.join(retrain, "summary.json"))
    # queued again as Optuna's RetryHeartbeatStaleTrialCallback queues a dead worker's trial
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=first.params,
                                              distributions=first.distributions,
                                              system_attrs={"failed_trial": first.number}))
    trial = study.ask()
    top1 = objective(trial, base(out), spec, out, study)
    assert top1 == first.value
    assert os.path.isfile(os.path.join(retrain, "summary.json"))


def _hparams(run_dir):
    """The HPARAMS a run's TensorBoard files hold (name -> value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(run_dir)
    acc.Reload()
    data = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)
    return {k: v.number_value for k, v in data.session_start_info.hparams.items() if v.HasField("number_value")}


def test_a_retried_trial_goes_by_its_first_number_in_every_record(tmp_path, monkeypatch):
    """Trial 1, interrupted (Ctrl+C) and run again as Optuna's trial 2 in trials/trial-0001: its
    console lines and HPARAMS said trial 2, and tune.json said "trials": 3 for --trials 2 without
    saying what it counted."""
    import json

    from dan.tune import sweep

    out = str(tmp_path / "tune")
    spec = spec_from_dict({**SPEC, "pruner": "none", "search_epochs": 1})
    real, calls, logs = sweep.objective, [], []

    def interrupted_once(trial, *args):
        calls.append(trial.number)
        if len(calls) == 2:  # trial 1, before it does any work
            raise KeyboardInterrupt
        return real(trial, *args)

    monkeypatch.setattr(sweep, "objective", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        tune(base(out), spec, "n", 2, log=logs.append)
    result = tune(base(out), spec, "n", 2, log=logs.append)
    _, study = states(out, "n")
    assert study.trials[2].system_attrs["failed_trial"] == 1 and calls == [0, 1, 2]
    assert [line.split("]")[0] for line in logs] == ["[trial 0"] * 2 + ["[trial 1"] * 3
    assert logs[3].startswith("[trial 1] again (Optuna's trial 2) ")
    assert study.trials[2].user_attrs["folder"] == os.path.join(out, "trials", "trial-0001")
    hp = _hparams(os.path.join(out, "trials", "trial-0001", "retrain"))
    assert (hp["trial"], hp["optuna_trial"]) == (1, 2)
    assert json.load(open(os.path.join(out, "tune.json"))) == result
    assert (result["trials"], result["counted"], result["retries"]) == (3, 2, 1)
    assert set(result["about"]) >= {"trials", "counted", "retries", "trial"}
    assert result["best"]["trial"] == (0 if study.trials[0].value >= study.trials[2].value else 1)


def test_a_failed_trial_attribute_no_optuna_wrote_is_taken_as_absent(tmp_path):
    """Audit: a ``failed_trial`` system attribute that is no integer (a study.db edited by hand, or
    damaged) made ``int()`` a ValueError traceback wherever a trial's number was read; it is taken as
    absent: the trial goes by its own number and is no retry."""
    from dan.tune.objective import first_attempt

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    for origin in ("x", 1.5, True, -1, [0], 0):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5,
                                                  system_attrs={"failed_trial": origin}))
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [first_attempt(t) for t in trials] == [0, 1, 2, 3, 4, 0]
    from dan.tune.objective import retry_of  # (tune.json's count of retries)

    assert [retry_of(t) for t in trials] == [None] * 5 + [0]


def test_bad_tuning_files(tmp_path):
    with pytest.raises(dan.UserError, match="params.nope.key"):
        spec_from_dict({"params": {"nope.key": {"type": "float", "low": 0, "high": 1}}})
    with pytest.raises(dan.UserError, match="unknown key 'trails'"):
        spec_from_dict({**SPEC, "trails": 3})
    p = run_tool("tune.py", "--study", "x", "--trials", "2", "--tune", str(tmp_path / "none.yaml"))
    assert_user_error(p, "does not exist")


@pytest.mark.parametrize("edit, fragment", [
    ({"objectives": 5}, "objectives must be"),  # was a TypeError
    ({"search_epochs": "abc"}, "search_epochs must be an integer"),
    ({"retrain_epochs": 0}, "retrain_epochs must be an integer"),
    ({"train_subset": 0.5}, "train_subset must be an integer"),
    ({"validation": 0}, "validation must be a finite number in (0, 1)"),  # 0 scored trials on the test split
    ({"validation": 2.0}, "validation must be a finite number in (0, 1)"),
    ({"seed": "x"}, "seed must be an integer"),
    ({"params": {"adjoint.schedule": {"type": "categorical", "choices": {"a": 1}}}}, "needs choices: a list"),  # KeyError
    ({"params": {"adjoint.schedule": {"type": "categorical", "choices": ["cos", "bogus"]}}}, "choice 'bogus'"),
    ({"params": {"adjoint.schedule": {"type": "categorical", "choices": ["cos"], "low": 1}}}, "unknown field 'low'"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}}, "search_epochs and retrain_epochs"),  # dropped
])
def test_a_tuning_file_s_own_settings_are_checked_before_the_study(edit, fragment):
    """Each of these was taken by spec_from_dict (or crashed it), and the first trial, or the first
    to draw the bad choice, then stopped a study already created (found by tools/fuzz.py's
    tune_file property and by reading its refusals)."""
    with pytest.raises(dan.UserError, match=re.escape(fragment)):
        spec_from_dict({**SPEC, **edit})


def test_a_study_is_not_written_into_another_tool_s_run_folder(tmp_path):
    """tune.py --out at a finished training wrote study.db, trials/ and best/ beside its results
    (tools/fuzz.py, tune_file property); a study's own folder is continued by the same command."""
    done = tmp_path / "done"
    (done / "checkpoints").mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    before = sorted(p.relative_to(done) for p in done.rglob("*"))
    with pytest.raises(dan.UserError, match="already holds another tool's run .*summary.json.*not a study"):
        tune(base(str(done)), spec_from_dict(SPEC), "s", 1)
    assert sorted(p.relative_to(done) for p in done.rglob("*")) == before
    (done / "checkpoints" / "last.pt").write_bytes(b"x")
    p = run_tool("tune.py", "--study", "s", "--trials", "1", "--budget-flops", "40%", "--out", str(done))
    assert_user_error(p, "checkpoints/last.pt", "not a study")


def test_multi_objective_writes_the_pareto_front(tmp_path):
    out = str(tmp_path / "pareto")
    spec = {**SPEC, "objectives": ["accuracy", "flops"], "sampler": "nsga2", "pruner": "none",
            "params": {"search.budget_flops": {"type": "categorical", "choices": ["20%", "60%"]},
                       "adjoint.c": {"type": "float", "low": 0.5, "high": 2.0}}}
    cfg = base(out)
    cfg.search.budget_flops = None
    result = tune(cfg, spec_from_dict(spec), "p", 2)
    assert result["pareto"]
    for point in result["pareto"]:
        arch = dan.load_arch(point["arch"])
        assert arch.small["flops"] == point["flops"]
    _, study = states(out, "p")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_journal_storage_continues_a_study(tmp_path):
    out = str(tmp_path / "j")
    url = f"journal:{tmp_path / 'study.log'}"
    tune(base(out), spec_from_dict({**SPEC, "pruner": "none", "retrain_epochs": 1, "search_epochs": 1}), "j", 1, url)
    tune(base(out), spec_from_dict({**SPEC, "pruner": "none", "retrain_epochs": 1, "search_epochs": 1}), "j", 2, url)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(tmp_path / "study.log"))))
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2


def _open_storage(path, barrier, results):
    from dan.tune import make_storage

    barrier.wait()
    try:
        make_storage(None, path, spec_from_dict(SPEC))
        results.put("ok")
    except BaseException as e:  # reported to the parent, which fails the test with it
        results.put(repr(e))


def test_workers_creating_one_sqlite_storage_at_once_all_open_it(tmp_path):
    # CI once failed with "table study_directions already exists": two workers started together
    # raced to create Optuna's schema. Start several at the same instant, several times.
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for round_ in range(3):
        path = str(tmp_path / f"r{round_}")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_storage, args=(path, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4


def test_a_study_whose_trials_fail_with_a_user_error_stops_at_the_first(tmp_path):
    """Issue 10: every trial fails for the user's reason (an infeasible budget): the study stops
    after the first trial with that error, instead of looping forever."""
    out = str(tmp_path / "tune")
    cfg = tiny_config(out, **{"train.limit_batches": 2, "search.budget_flops": "1K", "train.latency_batches": []})
    t0 = time.time()
    with pytest.raises(dan.UserError, match="trial 0 failed and no trial has succeeded.*infeasible"):
        tune(cfg, spec_from_dict(SPEC), "bad", 5)
    assert time.time() - t0 < 120
    st, _ = states(out, "bad")
    assert st == [TrialState.FAIL]  # one trial, told FAIL, none left RUNNING


def test_a_tuning_file_setting_the_data_cannot_take_is_named_in_the_error(tmp_path):
    """A train_subset larger than the data comes from the tuning file, not from the command line:
    the error says what the trial ran with."""
    with pytest.raises(dan.UserError, match=r"train_subset must be in 1\.\.\d+ .*got 100000 \(the trial ran with "
                                            r"the tuning file's .*train_subset=100000, validation=0\.25 and the "
                                            r"sampled search\.arch_lr="):
        tune(base(str(tmp_path / "tune")), spec_from_dict(dict(SPEC, train_subset=100000)), "big", 3)


def test_a_study_stopped_on_a_tuning_file_setting_runs_again_once_the_file_is_fixed(tmp_path):
    """The study exists in its storage before its first trial fails on the file's setting; rerun
    with the fixed file under the same --study name it runs (it was refused as "created with other
    settings"), and the trial that stopped it does not count towards --trials."""
    out = str(tmp_path / "tune")
    with pytest.raises(dan.UserError, match="train_subset must be in"):
        tune(base(out), spec_from_dict(dict(SPEC, train_subset=100000)), "fix", 1)
    result = tune(base(out), spec_from_dict(dict(SPEC, train_subset=40)), "fix", 1)
    _, study = states(out, "fix")
    assert [t.state for t in study.trials if not t.user_attrs.get("surplus")] == [TrialState.FAIL, TrialState.COMPLETE]
    assert result["best"]["trial"] == 1 and study.trials[0].user_attrs["stopped_study"] and result["counted"] == 1
    # a study that holds a result is still refused another tuning file
    with pytest.raises(dan.UserError, match="other settings and holds 1 finished"):
        tune(base(out), spec_from_dict(dict(SPEC, train_subset=30)), "fix", 2)


def test_a_study_stopped_on_a_command_line_error_gets_its_full_count_when_rerun(tmp_path, monkeypatch):
    import dan.tune.sweep as tune_mod

    calls = []

    def objective(trial, *a, **k):
        calls.append(trial.number)
        if trial.number == 0:
            raise dan.UserError("infeasible budget")
        return 0.5

    monkeypatch.setattr(tune_mod, "objective", objective)
    monkeypatch.setattr(tune_mod, "write_best", lambda study, run_dir, multi: {})
    with pytest.raises(dan.UserError, match="trial 0 failed"):
        tune(base(str(tmp_path / "t")), spec_from_dict(SPEC), "cli", 2)
    tune(base(str(tmp_path / "t")), spec_from_dict(SPEC), "cli", 2)
    assert calls == [0, 1, 2]


def test_failed_trials_count_towards_the_trials(tmp_path, monkeypatch):
    """After a success, failing trials still count: 3 trials means 3 attempts, not 3 successes."""
    import dan.tune.sweep as tune_mod

    calls = []

    def objective(trial, *a, **k):
        calls.append(trial.number)
        if trial.number == 0:
            return 0.5
        raise FloatingPointError("loss became nan")

    monkeypatch.setattr(tune_mod, "objective", objective)
    monkeypatch.setattr(tune_mod, "write_best", lambda study, run_dir, multi: {})
    tune(base(str(tmp_path / "t")), spec_from_dict(SPEC), "count", 3)
    assert calls == [0, 1, 2]


@pytest.mark.parametrize("param,fragment", [
    ({"type": "float", "low": 0.1, "high": -1}, "low <= high"),
    ({"type": "float", "low": 0, "high": 0.1, "log": True}, "log: true"),
    ({"type": "float", "low": float("nan"), "high": 0.1}, "finite"),
    ({"type": "float", "low": 0.01, "high": 0.1, "lg": True}, "unknown field 'lg'"),
])
def test_bad_ranges_are_refused_before_any_trial(param, fragment):
    with pytest.raises(dan.UserError, match=fragment):
        spec_from_dict({**SPEC, "params": {"search.arch_lr": param}})
    with pytest.raises(dan.UserError, match="train.epochs"):
        spec_from_dict({**SPEC, "params": {"train.epochs": {"type": "int", "low": -5, "high": 3}}})


def test_an_internal_error_in_a_trial_leaves_no_trial_running(tmp_path, monkeypatch):
    import dan.tune.sweep as tune_mod

    def objective(trial, *a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(tune_mod, "objective", objective)
    out = str(tmp_path / "t")
    with pytest.raises(RuntimeError, match="a bug"):
        tune(base(out), spec_from_dict(SPEC), "bug", 3)
    st, _ = states(out, "bug")
    assert st == [TrialState.FAIL]


def test_the_storage_keeps_optunas_heartbeat(tmp_path):
    from dan.tune import make_storage

    spec = spec_from_dict({**SPEC, "heartbeat": 7, "grace": 20, "max_retry": 2})
    storage = make_storage(None, str(tmp_path), spec)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (storage.get_heartbeat_interval(), storage.grace_period) == (7, 20)
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), optuna.storages.RetryHeartbeatStaleTrialCallback)
    with pytest.raises(dan.UserError, match="grace"):
        spec_from_dict({**SPEC, "grace": 0})


def test_an_interrupted_trial_is_queued_again_with_its_values(tmp_path, monkeypatch):
    import dan.tune.sweep as tune_mod

    seen = []

    def objective(trial, *a, **k):
        values = dan.tune.sample(trial, spec_from_dict(SPEC))
        seen.append((trial.number, values))
        if len(seen) == 1:
            raise KeyboardInterrupt
        return 0.5

    monkeypatch.setattr(tune_mod, "objective", objective)
    monkeypatch.setattr(tune_mod, "write_best", lambda study, run_dir, multi: {})
    out = str(tmp_path / "t")
    with pytest.raises(KeyboardInterrupt):
        tune(base(out), spec_from_dict(SPEC), "intr", 2)
    tune(base(out), spec_from_dict(SPEC), "intr", 2)
    st, study = states(out, "intr")
    assert st[0] == TrialState.FAIL and "error" not in study.trials[0].user_attrs
    assert study.trials[1].system_attrs["failed_trial"] == 0 and seen[1] == (1, seen[0][1])
    assert sum(s == TrialState.COMPLETE for s in st) == 2


def test_a_tuning_file_whose_warmup_takes_a_trials_search_is_refused_before_any_trial(tmp_path):
    # fuzz seed 5001: search.warmup_epochs sampled in [0, 1] with search_epochs 1 stopped the study
    # at the trial that drew 1, after Optuna's own "A new study created" line
    out = str(tmp_path / "t")
    spec = spec_from_dict({**SPEC, "search_epochs": 1, "params": {"search.warmup_epochs": {"type": "int", "low": 0,
                                                                                          "high": 1}}})
    with pytest.raises(dan.UserError, match="largest search.warmup_epochs 1 takes all search_epochs 1"):
        tune(base(out), spec, "w", 1)
    cfg = base(out)
    cfg.search.warmup_epochs = 2
    with pytest.raises(dan.UserError, match="search.warmup_epochs 2 takes all search_epochs 2"):
        tune(cfg, spec_from_dict(SPEC), "w", 1)
    assert not os.path.exists(os.path.join(out, "study.db"))


def test_a_continued_study_draws_new_values_and_keeps_its_budget(tmp_path):
    # the file's seed in every invocation made a continued study (or a second worker) repeat trial
    # 0's values; a continued study under another budget mixed both in its best
    out = str(tmp_path / "t")
    spec = spec_from_dict({**SPEC, "sampler": "random", "pruner": "none", "search_epochs": 1})
    tune(base(out), spec, "c", 1)
    tune(base(out), spec, "c", 2)
    _, study = states(out, "c")
    done = [t for t in study.trials if t.params]
    assert len(done) == 2 and done[0].params != done[1].params
    other = base(out)
    other.search.budget_flops = "50%"
    with pytest.raises(dan.UserError, match=r"study c ran its trials at budget \{'flops': '40%'"):
        tune(other, spec, "c", 3)


def test_tune_refuses_epochs_it_would_drop(tmp_path):
    p = run_tool("tune.py", "--dataset", "synthetic", "--epochs", "7", "--tune", "configs/tune_fashion_mnist.yaml",
                 "--budget-flops", "50%", "--study", "s", "--trials", "1", "--out", str(tmp_path / "t"))
    assert_user_error(p, "search_epochs, retrain_epochs", "drop --epochs")
    assert not (tmp_path / "t").exists()
    # --resume of a study that is not there started a new one in silence
    p = run_tool("tune.py", "--dataset", "synthetic", "--resume", "--tune", "configs/tune_fashion_mnist.yaml",
                 "--budget-flops", "50%", "--study", "s", "--trials", "1", "--out", str(tmp_path / "t"))
    assert_user_error(p, "nothing to resume", "holds no study.db; drop --resume")
    assert not (tmp_path / "t").exists()


def test_a_storage_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    # a full disk under a study: SQLite's "database or disk is full", Optuna's StorageInternalError,
    # then its "AssertionError: Should not reach" (exit 1, three tracebacks)
    import sqlite3

    from optuna.exceptions import StorageInternalError

    import dan.tune.sweep as sweep

    def full(*a, **k):
        try:
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.OperationalError as e:
                raise StorageInternalError("An exception is raised during the commit.") from e
        except StorageInternalError:
            raise AssertionError("Should not reach.")

    monkeypatch.setattr(sweep, "run_trials", full)
    with pytest.raises(dan.UserError, match="storage could not be written \\(database or disk is full\\): free disk"):
        tune(base(str(tmp_path / "t")), spec_from_dict(SPEC), "s", 2)
    monkeypatch.setattr(sweep, "run_trials", lambda *a, **k: 1 / 0)  # a bug keeps its traceback
    with pytest.raises(ZeroDivisionError):
        tune(base(str(tmp_path / "t")), spec_from_dict(SPEC), "s", 2)


def test_no_tensorboard_reaches_the_trials_runs(tmp_path):
    # tune.py --no-tensorboard still wrote every trial's search and retrain event files
    out = str(tmp_path / "tune")
    tune(base(out), spec_from_dict({**SPEC, "pruner": "none"}), "s", 1, tensorboard=False)
    events = [n for _, _, names in os.walk(out) for n in names if n.startswith("events.out.tfevents")]
    assert not events and any(n == "metrics.jsonl" for _, _, names in os.walk(out) for n in names)


def test_a_tuning_file_sampling_a_comparison_method_s_setting_is_refused():
    # an audit's file sampled methods.kd.temperature: its trials (a DAN search, an adjoint retrain) ran, unmoved
    from dan.tune.sweep import check_inert_dimensions

    spec = spec_from_dict({"search_epochs": 2, "retrain_epochs": 1,
                           "params": {"methods.kd.temperature": {"type": "float", "low": 1.0, "high": 8.0},
                                      "search.tau0": {"type": "float", "low": 1.0, "high": 5.0}}})
    with pytest.raises(dan.UserError, match="samples methods.kd.temperature: a trial runs a DAN search and an adjoint "
                                            "retrain, which read no comparison method's settings"):
        check_inert_dimensions(spec)  # (a new study's check: one under way goes on, its file unchanged)


def test_a_refused_new_study_leaves_no_storage_and_an_older_study_keeps_its_own(tmp_path):
    """An audit: a tuning file refused after its study was created (here: one sampling a comparison
    method's setting) left an empty study.db in a folder the user never got a study in. The new
    study goes, and with it the file and the folder this invocation made; a study already in the
    storage stays, and so does the file holding it."""
    out = str(tmp_path / "t")
    inert = spec_from_dict({**SPEC, "params": {"methods.kd.temperature": {"type": "float", "low": 1.0, "high": 8.0}}})
    with pytest.raises(dan.UserError, match="samples methods.kd.temperature"):
        tune(base(out), inert, "s", 1)
    assert not os.path.exists(out)
    tune(base(out), spec_from_dict({**SPEC, "pruner": "none", "search_epochs": 1}), "kept", 1, tensorboard=False)
    with pytest.raises(dan.UserError, match="samples methods.kd.temperature"):
        tune(base(out), inert, "s", 1)
    assert optuna.get_all_study_names(f"sqlite:///{os.path.join(out, 'study.db')}") == ["kept"]
    assert len(states(out, "kept")[0]) == 1
