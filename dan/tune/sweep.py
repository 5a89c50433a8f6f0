"""A study: created or continued in its storage, run until it holds the asked number of trials,
and its best trial (or Pareto front) written into the run folder."""

from __future__ import annotations

import json
import math
import os
import shutil

from dan.checkpoint import atomic_write, check_no_links, save_json
from dan.config import Config, check_tau_decay
from dan.errors import UserError
from dan.tune.objective import first_attempt, objective, retry_of, trial_number
from dan.tune.spec import TuneSpec
from dan.tune.storage import STUDY_FILES, make_storage, retry_schema_race


class _Surplus(Exception):
    """The trial is beyond the study's count: it is told FAIL (marked ``surplus``), no work done."""


class _Failed(Exception):
    """The trial failed for a reason it records in its ``error`` attribute; it counts, the study
    goes on."""


def tune(base: Config, spec: TuneSpec, study_name: str, trials: int, storage_url: str | None = None,
         log=lambda m: None, tensorboard: bool = True) -> dict:
    """Run (or continue) a study until it holds ``trials`` trials (trials that failed with an error
    count; those of a dead or interrupted worker are retried and do not); write the best trial's
    (or the Pareto front's) ``arch.json`` and config into ``base.run_dir``. A user error in a trial
    before any trial has succeeded stops the study with that error.

    Trials run in ``Study.optimize`` (which keeps Optuna's heartbeat, :mod:`dan.tune.storage`).
    Trial numbers are handed out atomically by the storage and serve as tickets: a worker whose new
    trial has ``trials`` counted trials before it tells it as surplus (FAIL, no work done) and
    stops, so concurrent workers never run more than ``trials`` trials in total.

    Returns:
        what ``tune.json`` holds: the study's name, its trial count and the best trial (or the
        Pareto front) with its hyperparameters and ``arch.json``.
    """
    import optuna

    base = base.resolve("tune")
    if not spec.multi and base.search.budget_flops is None and base.search.budget_params is None:
        raise UserError("give a budget (--budget-flops or --budget-params) or tune it in a "
                        "multi-objective study")
    check_sampled_settings(base, spec)
    run_dir = base.run_dir
    check_study_dir(run_dir)
    # the trials' own lines go through ``log``; Optuna would repeat each failure with a traceback,
    # and its "A new study created" line came before a user error's one line (fuzz seed 5001)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    folder_was = os.path.isdir(run_dir)
    storage = make_storage(storage_url, run_dir, spec)
    new = study_name not in retry_schema_race(lambda: optuna.get_all_study_names(storage))
    study = open_study(storage, study_name, spec)
    try:
        check_budget(study, study_name, base)
        if not study.get_trials(deepcopy=False):
            check_inert_dimensions(spec)
        if not study.get_trials(deepcopy=False) and not _anneals_per_epoch(base, spec):
            # the base config's tau_decay would do nothing in every trial; a study already under way keeps
            # its trials' config (their searches resume with it: dan.config.check_tau_decay)
            check_tau_decay(base)
    except UserError:
        if new:
            _forget_new_study(storage, study_name, run_dir, None if storage_url else folder_was)
        raise
    try:
        run_trials(study, base, spec, trials, run_dir, log, tensorboard)
    except Exception as e:  # noqa: BLE001 - only a storage that cannot be written is turned into a line
        cause = storage_failure(e)
        if cause is None:
            raise
        raise UserError(f"the study's storage could not be written ({cause}): free disk space (or fix the "
                        f"storage), then run the same command; the trial it cut short runs again once silent "
                        f"for {spec.grace:g} s (the grace of Optuna's heartbeat)") from e
    return write_best(study, run_dir, spec.multi)


def _forget_new_study(storage, name: str, run_dir: str, folder_was: bool | None) -> None:
    """Undo a study this invocation created before a check of its settings refused them (an audit:
    a refused tuning file left an empty ``study.db`` behind, and a folder the user never asked
    for). The study is deleted if it still holds no trial (a second worker may have started it
    meanwhile); under the default storage (``folder_was`` not None) the file goes when no study is
    left in it, and the run folder when this invocation made it and it is empty."""
    import optuna

    try:
        if optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            return
        optuna.delete_study(study_name=name, storage=storage)
        if folder_was is None or optuna.get_all_study_names(storage):
            return
        if hasattr(storage, "engine"):  # RDBStorage: close its connections before the file goes
            storage.engine.dispose()
        for name in STUDY_FILES + ("study.db.lock",):  # .lock: dan.tune.storage's schema lock
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                os.remove(path)
        if not folder_was and os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)
    except Exception:  # noqa: BLE001 - tidying up after a refusal must not hide the refusal
        return


def storage_failure(e: BaseException) -> str | None:
    """The first line of a full disk or a failing storage in ``e``'s chain, or None. An audit's
    full disk under a study ended in SQLite's "database or disk is full", Optuna's
    StorageInternalError and then its "AssertionError: Should not reach" (exit 1, three tracebacks)."""
    import errno

    from optuna.exceptions import StorageInternalError

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return text
        if isinstance(e, StorageInternalError) or "disk is full" in text or "disk I/O error" in text:
            inner = e.__cause__ or e.__context__
            return (str(inner).strip().splitlines() or [text])[0] if inner is not None else text
        e = e.__cause__ or e.__context__
    return None


def check_inert_dimensions(spec: TuneSpec) -> None:
    """Refuse a new study whose tuning file samples a comparison method's setting (``methods.*``): a
    trial runs a DAN search and an adjoint retrain, which read none (an audit's file sampled
    ``methods.kd.temperature``; its trials ran, the dimension did nothing). A study already under way
    goes on (dropping the dimension would change its file, which a study with trials refuses)."""
    inert = sorted(k for k in spec.params if k.startswith("methods."))
    if inert:
        raise UserError(f"the tuning file samples {inert[0]}: a trial runs a DAN search and an adjoint retrain, which "
                        f"read no comparison method's settings (methods.*): drop it")


def check_sampled_settings(base: Config, spec: TuneSpec) -> None:
    """Refuse, before any trial, a tuning file whose sampled settings cannot do what they say:
    ``search.tau_decay`` under the default per-step anneal (it acts only per epoch: the shipped
    file tuned it, to no effect); a float ``search.warmup_epochs``; a warm-up (the config's, or the
    largest the file may sample) as long as ``search_epochs`` (:meth:`Config.resolve` refuses such a
    search; found by a trial, it would stop the study part-way)."""
    if "search.tau_decay" in spec.params and not _anneals_per_epoch(base, spec):  # a tuned dimension with no effect
        raise UserError("the tuning file samples search.tau_decay, which acts only with search.tau_anneal: epoch; "
                        "the default anneals per step from tau0 to search.tau_min: sample that instead")
    r = spec.params.get("search.warmup_epochs")
    if isinstance(r, dict) and r.get("type") == "float":
        raise UserError("the tuning file samples search.warmup_epochs as a float: it counts whole epochs; "
                        "give it type: int")
    if isinstance(r, dict):
        values = r.get("choices") or [r.get("high")]
        warm = max(float(v) for v in values)
        where = "the tuning file's largest search.warmup_epochs"
    else:
        warm, where = base.search.warmup_epochs, "search.warmup_epochs"
    if math.ceil(warm) >= spec.search_epochs:
        raise UserError(f"{where} {warm:g} takes all search_epochs {spec.search_epochs} of a trial's search: no "
                        f"architecture step would run; raise search_epochs in the tuning file or lower the "
                        f"warm-up (--set search.warmup_epochs=0)")


def _anneals_per_epoch(base: Config, spec: TuneSpec) -> bool:
    """Whether a trial's search may anneal tau per epoch (where search.tau_decay acts): the base
    config's anneal, or one the tuning file samples."""
    anneal = spec.params.get("search.tau_anneal")
    return base.search.tau_anneal == "epoch" or (isinstance(anneal, dict) and "epoch" in (anneal.get("choices") or []))


def check_study_dir(run_dir: str) -> None:
    """Refuse a folder that holds another tool's run (a training, search or retrain: its checkpoint
    or a finished file, :func:`dan.loop.held_run`): a study writes its storage, ``trials/``, ``best/``
    and ``tune.json`` into its folder (tools/fuzz.py's tune_file property found a study written into
    a finished training's folder). A study's own folder holds none of those at its top and is
    continued by the same command."""
    from dan.loop import check_not_a_file, check_run_lock, held_run

    check_not_a_file(run_dir)
    check_run_lock(run_dir)  # a run still in its first epoch holds nothing else yet (a review found it)
    held = held_run(run_dir)
    if held:
        raise UserError(f"{run_dir} already holds another tool's run ({held}), not a study: choose another "
                        f"--out (nothing was written)")


def open_study(storage, name: str, spec: TuneSpec):
    """Create the study ``name`` in ``storage`` or load it; one made by another tuning file is
    refused."""
    import optuna

    directions = ["maximize", "minimize"] if spec.multi else ["maximize"]
    try:  # two workers creating the same study at once: the loser loads it
        study = retry_schema_race(lambda: optuna.create_study(
            study_name=name, storage=storage, load_if_exists=True, directions=directions,
            sampler=_sampler(spec), pruner=_pruner(spec, spec.search_epochs + spec.retrain_epochs)))
    except ValueError as e:
        raise UserError(f"study {name}: {e}") from e
    if study.user_attrs.get("spec") not in (None, spec.key()):
        _adopt_settings(study, name, spec, directions)
    study.set_user_attr("spec", spec.key())
    before = len(study.get_trials(deepcopy=False))
    if before:  # a continued study, or a second worker: the file's seed would replay the first draws
        study.sampler = _sampler(spec, before)
    return study


def check_budget(study, name: str, base: Config) -> None:
    """A study's trials are compared with each other: one continued under another budget (band
    included) than its trials ran at is refused, else the best could be a network of the other."""
    s = base.search
    budget = json.dumps({"flops": s.budget_flops, "params": s.budget_params, "band": s.band})
    held = study.user_attrs.get("budget")
    if held not in (None, budget) and study.get_trials(deepcopy=False) and not _same_budget(held, budget):
        was = {k: v for k, v in json.loads(held).items() if v is not None}
        raise UserError(f"study {name} ran its trials at budget {was}; this command asks "
                        f"{ {k: v for k, v in json.loads(budget).items() if v is not None} }: give the same budget, "
                        f"or another --study")
    study.set_user_attr("budget", budget)


def _same_budget(held: str, budget: str) -> bool:
    """Two studies' budgets (JSON) the same, each number however written (an older DAN kept
    ``--budget-flops 1.8e6`` as the text '1.8e6'; today it is 1800000.0: :func:`dan.loop.same_value`)."""
    from dan.loop import same_value

    try:
        was, now = json.loads(held), json.loads(budget)
    except (TypeError, ValueError):
        return False
    return isinstance(was, dict) and was.keys() == now.keys() and all(same_value(was[k], now[k]) for k in now)


def _adopt_settings(study, name: str, spec: TuneSpec, directions: list) -> None:
    """A study made by another tuning file continues under this one only if it holds no result
    (no trial complete, pruned, running or waiting): the usual case is a study whose first trial
    stopped it on a setting of the file, which the user has now fixed. Its earlier trials stay in
    the storage but stop counting towards ``--trials`` (``counted_from``)."""
    from optuna.trial import TrialState

    held = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                     TrialState.RUNNING, TrialState.WAITING))
    wanted = [d.name.lower() for d in study.directions] == directions
    if held or not wanted:
        raise UserError(f"study {name} in this storage was created with other settings"
                        + (f" and holds {len(held)} finished or running trial(s)" if held else
                           " (another number of objectives)")
                        + ": use another --study name or the same tuning file")
    study.set_user_attr("counted_from", len(study.get_trials(deepcopy=False)))


def run_trials(study, base: Config, spec: TuneSpec, trials: int, run_dir: str, log, tensorboard: bool = True) -> None:
    """Run trials of ``study`` in this worker until the study holds ``trials`` counted ones (their
    runs write TensorBoard files unless ``tensorboard`` is False: ``--no-tensorboard``)."""
    import optuna
    from optuna.trial import TrialState

    def run_one(trial):
        if _counted_before(study, trial.number) >= trials:
            trial.set_user_attr("surplus", True)
            study.stop()
            raise _Surplus()
        n = trial_number(study, trial)  # a retry goes by its first attempt's number, as its folder
        again = f" again (Optuna's trial {trial.number})" if n != trial.number else ""
        log(f"[trial {n}]{again} " + (f"{trial.params}" if trial.params else "started"))  # a retry has its values
        try:
            value = objective(trial, base, spec, run_dir, study, tensorboard)
        except optuna.TrialPruned as e:
            log(f"[trial {n}] {e}")
            raise
        except (FloatingPointError, UserError) as e:
            trial.set_user_attr("error", str(e))
            log(f"[trial {n}] failed: {e}")
            succeeded = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if not isinstance(e, FloatingPointError) and not succeeded:
                # nothing has worked yet and this is the user's to fix: stop now, not after N trials;
                # the trial that stopped the study does not count once it is run again, fixed
                trial.set_user_attr("stopped_study", True)
                raise UserError(f"trial {n} failed and no trial has succeeded: {e} "
                                f"({trial_settings(spec, trial.params)})") from e
            raise _Failed(str(e)) from e
        except KeyboardInterrupt:
            _queue_again(study, trial, spec)  # Optuna fails it; the next run resumes its folder
            raise
        log(f"[trial {n}] value {value}")
        return value

    def enough(study, _trial):
        _fail_stale(study)  # a dead worker's trial is not one running
        if _done(study) >= trials:
            study.stop()

    # Stop once the study holds its count, before asking another trial: the ticket check in
    # run_one is what keeps concurrent workers within the count, but on its own it ended every
    # invocation by asking one trial more and telling it FAIL (a study run in one go held a
    # surplus FAIL trial per command, and tune.json counted them)
    _fail_stale(study)
    if _done(study) >= trials:
        return
    # any other exception is a bug: Optuna tells the trial FAIL (none is left RUNNING) and raises it
    study.optimize(run_one, catch=(_Surplus, _Failed), callbacks=[enough])


def trial_settings(spec: TuneSpec, params: dict) -> str:
    """What a trial ran with beyond the base config, for the message of a failure that is the
    user's to fix (it may come from the tuning file, not from the command line): the file's epochs,
    training subset and validation part, and the values sampled for the trial."""
    sampled = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return (f"the trial ran with the tuning file's search_epochs={spec.search_epochs}, retrain_epochs="
            f"{spec.retrain_epochs}, train_subset={spec.train_subset}, validation={spec.validation}"
            + (f" and the sampled {sampled}" if sampled else ""))


def _counted_before(study, number: int) -> int:
    """Trials before ``number`` that count: all but the surplus ones, those of a dead or
    interrupted worker (retried under a new number), one that stopped the study on the user's
    error, and those from before the study took other settings (:func:`_adopt_settings`); a trial
    that failed with an error otherwise counts, so a study whose trials keep failing still ends."""
    from optuna.trial import TrialState

    first = study.user_attrs.get("counted_from", 0)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if first <= t.number < number and not t.user_attrs.get("stopped_study")
               and (t.state != TrialState.FAIL or "error" in t.user_attrs))


def _done(study) -> int:
    """Counted trials finished or running (another worker's, alive once :func:`_fail_stale` has
    run): a trial queued to run again (WAITING) is still to be done, so a study holding one goes on."""
    from optuna.trial import TrialState

    first = study.user_attrs.get("counted_from", 0)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.number >= first and not t.user_attrs.get("stopped_study")
               and (t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                    or (t.state == TrialState.FAIL and "error" in t.user_attrs)))


def _fail_stale(study) -> None:
    """Fail (and queue again) the trials of dead workers, as ``Study.optimize`` does before each
    trial, so that :func:`_done` does not count them as running."""
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _queue_again(study, trial, spec: TuneSpec) -> None:
    """Queue an interrupted trial again, as Optuna's heartbeat queues a dead worker's."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry)(study, frozen)


def _sampler(spec: TuneSpec, offset: int = 0):
    """The tuning file's sampler, seeded by its ``seed`` plus ``offset`` (the trials already in the
    study: a continued study or a second worker draws on from there instead of repeating trial 0's
    values; a study run in one go is seeded as before)."""
    import optuna

    seed = spec.seed + offset
    # feasibility reaches the samplers through trial.set_constraint("budget", ...) (Optuna 5)
    if spec.sampler == "nsga2" or spec.multi:
        return optuna.samplers.NSGAIISampler(seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def _pruner(spec: TuneSpec, n_steps: int):
    import optuna

    if spec.pruner == "median" and not spec.multi:
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if spec.pruner == "hyperband" and not spec.multi:
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_steps)
    return optuna.pruners.NopPruner()


def _feasible(t) -> bool:
    return t.user_attrs.get("constraint", 1.0) <= 0


# What tune.json's numbers mean, written into it: a study with a retried trial said "trials": 3
# for --trials 2, and numbered the retry's records three ways
TUNE_JSON_ABOUT = {
    "trials": "Optuna trials in the storage: every attempt, retries and surplus ones included",
    "counted": "trials --trials counts (not a retried attempt, a surplus one, one that stopped the study "
               "on a user error, or one from before the study took another tuning file)",
    "surplus": "trials asked for after other workers had reached the count (no work done)",
    "retries": "trials that ran again an attempt cut short (Ctrl+C, a dead worker), in its folder",
    "trial": "a trial's number: Optuna's number of its first attempt, as its folder trials/trial-NNNN, "
             "its console lines and its HPARAMS' trial; optuna_trial is the number of the attempt that finished",
}


def _trial_file(run_dir: str, frozen, name: str) -> str:
    """The file ``name`` of a finished trial's search: in its folder as its number names it
    (:func:`dan.tune.objective.first_attempt`), not as the storage's ``folder`` attribute says (a
    study.db a user was given can name any folder), and reached through no link
    (:func:`dan.checkpoint.check_no_links`)."""
    path = os.path.join(run_dir, "trials", f"trial-{first_attempt(frozen):04d}", "search", name)
    check_no_links(path, run_dir)
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: the trial ran in another folder than {run_dir} (a worker with "
                        f"another --out) or its files were removed: run the same command with that worker's --out")
    return path


def _out_folder(run_dir: str, name: str) -> str:
    """``<run_dir>/<name>`` (``best``, ``pareto``), made; a link there is refused (copies went through it)."""
    folder = os.path.join(run_dir, name)
    check_no_links(folder, run_dir)
    os.makedirs(folder, exist_ok=True)
    return folder


def _copy(src: str, dst: str) -> None:
    """``shutil.copyfile`` by a rename: a link at ``dst`` is replaced, not written through."""
    atomic_write(lambda p: shutil.copyfile(src, p), dst)


def write_best(study, run_dir: str, multi: bool) -> dict:
    """Copy the best feasible trial's ``arch.json`` and ``config.yaml`` to ``<run_dir>/best/``
    (multi-objective: the Pareto front's ``arch.json`` files to ``pareto/``) and write
    ``tune.json``; returns its contents."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _feasible(t)]
    out = {"study": study.study_name, "trials": len(study.trials),
           "counted": _counted_before(study, len(study.trials)),
           "surplus": sum(1 for t in study.trials if t.user_attrs.get("surplus")),
           "retries": sum(1 for t in study.trials if retry_of(t) is not None),
           "complete_feasible": len(complete), "about": TUNE_JSON_ABOUT}
    if not complete:
        return out
    if multi:
        front = [(t, _trial_file(run_dir, t, "arch.json")) for t in study.best_trials if _feasible(t)]
        folder = _out_folder(run_dir, "pareto")
        out["pareto"] = []
        for t, src in front:
            dst = os.path.join(folder, f"trial-{first_attempt(t):04d}.arch.json")
            _copy(src, dst)
            out["pareto"].append({"trial": first_attempt(t), "optuna_trial": t.number, "top1": t.values[0],
                                  "flops": t.values[1], "params": t.params, "arch": dst})
    else:
        best = max(complete, key=lambda t: t.value)
        sources = {name: _trial_file(run_dir, best, name) for name in ("arch.json", "config.yaml")}
        folder = _out_folder(run_dir, "best")
        for name, src in sources.items():
            _copy(src, os.path.join(folder, name))
        out["best"] = {"trial": first_attempt(best), "optuna_trial": best.number, "top1": best.value,
                       "params": best.params, "arch": os.path.join(folder, "arch.json")}
    save_json(out, os.path.join(run_dir, "tune.json"))
    return out
