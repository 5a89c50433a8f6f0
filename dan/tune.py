"""Optuna tuning of the outer hyperparameters of DAN (search + retrain).

A study file (``configs/tune_*.yaml``) names the hyperparameters and their ranges (any config key:
``adjoint.c``, ``search.arch_lr``…), the trial budget (search/retrain epochs, a training subset)
and the study settings (objectives, sampler, pruner). Each trial

1. runs a short search with the sampled values and reports the held-out top-1 of the argmax small
   network every epoch (``trial.report``), so a median or Hyperband pruner stops bad trials early;
2. retrains the found widths adjointly for a few epochs on the training data minus a validation
   part (the test split is never used for tuning) and reports the small network's validation
   top-1 every epoch, continuing the step count;
3. returns that top-1 (and, in the multi-objective mode, the small network's FLOPs: accuracy vs
   FLOPs with NSGA-II, the budget itself being a hyperparameter).

A trial whose ``arch.json`` misses the budget band is *infeasible*: its constraint value
(``|cost/budget − 1| − band``) is positive and the samplers' ``constraints_func`` steer away from it;
it never becomes the best trial.

Storage: an Optuna storage, SQLite in the run folder by default (``--storage`` takes any URL Optuna
accepts, or ``journal:PATH`` for a journal file). Running the same command again continues the
study; workers on one or several machines sharing the storage split the trials without duplicates
and without overshooting the trial count (trial numbers are the tickets, see :func:`tune`). A
running trial writes a heartbeat into the storage; a trial whose worker died (no heartbeat for
``grace`` seconds) is marked failed by the next worker and retried once more with the same
hyperparameters, resuming from the dead trial's checkpoints — the same scheme for every storage
(Optuna's own heartbeat exists only for RDB storages and only inside ``study.optimize``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field


from dan.config import Config
from dan.errors import UserError

HEARTBEAT_ATTR = "dan:heartbeat"


@dataclass
class TuneSpec:
    params: dict  # config key -> {type: float|int|categorical, low, high, log, choices}
    objectives: list = field(default_factory=lambda: ["accuracy"])  # accuracy [, flops]
    sampler: str = "tpe"  # tpe | nsga2 | random
    pruner: str = "median"  # median | hyperband | none
    search_epochs: int = 2
    retrain_epochs: int = 2
    train_subset: int | None = None
    validation: float = 0.1  # part of the training split the retrain is validated on
    seed: int = 0
    heartbeat: int = 30  # seconds between heartbeats of a running trial
    grace: int = 120  # a running trial without a heartbeat for this long is dead
    max_retry: int = 3


_TYPES = ("float", "int", "categorical")


def load_spec(path: str) -> TuneSpec:
    if not os.path.isfile(path):
        raise UserError(f"tuning file {path} does not exist: pass configs/tune_*.yaml")
    from dan.config import load_yaml_file

    d = load_yaml_file(path, "tuning file") or {}
    return spec_from_dict(d, path)


def spec_from_dict(d: dict, where: str = "tuning file") -> TuneSpec:
    known = set(TuneSpec.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    if not isinstance(d.get("params"), dict) or not d["params"]:
        raise UserError(f"{where}: 'params' must map config keys to ranges")
    probe = Config()
    for key, r in d["params"].items():
        if not isinstance(r, dict) or r.get("type") not in _TYPES:
            raise UserError(f"{where}: params.{key} needs type: float, int or categorical")
        if r["type"] == "categorical" and not r.get("choices"):
            raise UserError(f"{where}: params.{key} needs choices")
        if r["type"] != "categorical":
            lo, hi = r.get("low"), r.get("high")
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi))
            if not numeric or lo > hi:
                raise UserError(f"{where}: params.{key} needs finite numbers low <= high, got {lo!r}, {hi!r}")
            if r["type"] == "int" and not all(isinstance(v, int) for v in (lo, hi)):
                raise UserError(f"{where}: params.{key} is an int range: low and high must be integers")
            if r.get("log") and lo <= 0:
                raise UserError(f"{where}: params.{key} has log: true, so low must be > 0, got {lo!r}")
            step = r.get("step")
            if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0):
                raise UserError(f"{where}: params.{key}: step must be a positive number, got {step!r}")
            extra = sorted(set(r) - {"type", "low", "high", "log", "step"})
            if extra:
                raise UserError(f"{where}: params.{key}: unknown field '{extra[0]}' (type, low, high, log, step)")
            for v in (lo, hi):  # every value of the range must be valid for the key
                try:
                    c = Config()
                    c.set(key, v)
                    c.validate()
                except UserError as e:
                    raise UserError(f"{where}: params.{key} range [{lo}, {hi}]: {e}") from e
        try:  # the key must be a config key that takes such values
            probe.set(key, r["choices"][0] if r["type"] == "categorical" else r["low"])
        except UserError as e:
            raise UserError(f"{where}: params.{key}: {e}") from e
    spec = TuneSpec(**d)
    if not set(spec.objectives) <= {"accuracy", "flops"} or "accuracy" not in spec.objectives:
        raise UserError(f"{where}: objectives must be [accuracy] or [accuracy, flops]")
    if spec.sampler not in ("tpe", "nsga2", "random") or spec.pruner not in ("median", "hyperband", "none"):
        raise UserError(f"{where}: sampler is tpe|nsga2|random, pruner is median|hyperband|none")
    return spec


def make_storage(url: str | None, run_dir: str, spec: TuneSpec):
    import optuna
    from optuna.storages import RDBStorage

    if not url:
        os.makedirs(run_dir, exist_ok=True)
        url = f"sqlite:///{os.path.abspath(os.path.join(run_dir, 'study.db'))}"
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        if not path.strip():
            raise UserError("--storage journal: needs a file path, e.g. journal:runs/tune/journal.log")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(_SCHEMA_RETRIES):
        try:
            with _sqlite_schema_lock(url):
                return RDBStorage(url, engine_kwargs=kwargs)
        except Exception as e:  # SQLAlchemy raises many kinds for bad URLs / unreachable servers
            # Workers started together on an empty database race to create Optuna's tables; the
            # loser sees "table ... already exists". The winner's schema is usable, so try again.
            if _schema_race(e) and attempt + 1 < _SCHEMA_RETRIES:
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            raise UserError(f"cannot open the study storage {url} ({str(e).splitlines()[0][:150]}): "
                            f"check --storage") from e


_SCHEMA_RETRIES = 8


def _schema_race(e: Exception) -> bool:
    text = str(e).lower()
    return any(k in text for k in ("already exists", "duplicate", "unique constraint", "database is locked"))


@contextlib.contextmanager
def _sqlite_schema_lock(url: str):
    """Serialize schema creation of a local SQLite file between workers on this machine (a lock
    file beside it). Servers (PostgreSQL, MySQL) rely on the retry in :func:`make_storage`."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:" or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        yield
        return
    import fcntl

    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sampler(spec: TuneSpec):
    import optuna

    # feasibility reaches the samplers through trial.set_constraint("budget", ...) (Optuna 5)
    if spec.sampler == "nsga2" or len(spec.objectives) > 1:
        return optuna.samplers.NSGAIISampler(seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=5)


def _pruner(spec: TuneSpec, n_steps: int):
    import optuna

    if spec.pruner == "median" and len(spec.objectives) == 1:
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if spec.pruner == "hyperband" and len(spec.objectives) == 1:
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_steps)
    return optuna.pruners.NopPruner()


def sample(trial, spec: TuneSpec) -> dict:
    values = {}
    for key, r in spec.params.items():
        if r["type"] == "float":
            values[key] = trial.suggest_float(key, float(r["low"]), float(r["high"]), log=bool(r.get("log")))
        elif r["type"] == "int":
            values[key] = trial.suggest_int(key, int(r["low"]), int(r["high"]), log=bool(r.get("log")))
        else:
            values[key] = trial.suggest_categorical(key, list(r["choices"]))
    return values


class _Reporter:
    """A Monitor sink that reports one metric to the trial after each epoch and prunes."""

    def __init__(self, trial, key: str, offset: int, multi: bool):
        self.trial, self.key, self.offset, self.multi = trial, key, offset, multi
        self.last = None

    def __call__(self, epoch: int, values: dict) -> None:
        import optuna

        if self.key not in values:
            return
        self.last = values[self.key]
        if self.multi:  # Optuna's pruners do not handle several objectives
            return
        self.trial.report(self.last, self.offset + epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {self.offset + epoch} ({self.key}={self.last:.4f})")


def _heartbeat_thread(study, trial_id: int, every: int, stop: threading.Event):
    def beat():
        while not stop.wait(every):
            try:
                study._storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:
                return

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    return t


def sweep_stale_trials(study, spec: TuneSpec) -> None:
    """Fail RUNNING trials whose heartbeat is older than ``spec.grace`` (their worker died) and
    enqueue them again with the same hyperparameters, at most ``max_retry`` times."""
    from optuna.trial import TrialState

    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp() if t.datetime_start else now)
        if now - beat <= spec.grace:
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker got there first
            continue
        retries = t.system_attrs.get("retry_history", [])
        if len(retries) < spec.max_retry:
            origin = t.system_attrs.get("failed_trial", t.number)
            study.enqueue_trial(t.params, user_attrs={}, skip_if_exists=False)
            # mark the enqueued (waiting) trial as a retry of the dead one
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
            study._storage.set_trial_system_attr(waiting._trial_id, "failed_trial", origin)
            study._storage.set_trial_system_attr(waiting._trial_id, "retry_history", retries + [t.number])


def _origin(study, trial) -> int:
    """The trial number whose folder this trial uses: the first attempt's, for a retry."""
    origin = study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    return trial.number if origin is None else int(origin)


def objective(trial, base: Config, spec: TuneSpec, run_dir: str, study):
    from dan.arch import load_arch
    from dan.engine import Trainer
    from dan.loop import start_managed
    from dan.monitor import Monitor
    from dan.search import Searcher, _search_data_defaults

    values = sample(trial, spec)
    multi = len(spec.objectives) > 1
    folder = os.path.join(run_dir, "trials", f"trial-{_origin(study, trial):04d}")
    trial.set_user_attr("folder", folder)
    trial.set_user_attr("host", socket.gethostname())
    stop = threading.Event()
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
    _heartbeat_thread(study, trial._trial_id, spec.heartbeat, stop)
    try:
        # 1. search
        cfg = copy.deepcopy(base)
        for k, v in values.items():
            cfg.set(k, v)
        cfg.out = os.path.join(folder, "search")
        cfg.train.epochs = spec.search_epochs
        if spec.train_subset:
            cfg.data.train_subset = spec.train_subset
        cfg.train.latency_batches = []
        arch_path = os.path.join(cfg.out, "arch.json")
        # always, not only when the search runs here: the retrain config is derived from this one,
        # and a retry whose search had already finished must build the same retrain config as the
        # first attempt, or resuming its retrain checkpoint is refused as a config change
        _search_data_defaults(cfg)
        if not os.path.isfile(arch_path):
            rep = _Reporter(trial, "val/top1_small_argmax", 0, multi)
            mon = Monitor(cfg.out, epoch_hook=rep)
            try:
                start_managed(cfg, lambda: Searcher(cfg, mon)).fit()
            finally:
                mon.close()
        arch = load_arch(arch_path)
        kind = "flops" if "flops" in arch.budget else "params"
        b = arch.budget
        miss = abs(arch.small[kind] / b[kind] - 1.0) - b.get("band", 0.03)
        trial.set_user_attr("constraint", float(miss))
        trial.set_constraint("budget", float(miss))
        trial.set_user_attr("small_flops", arch.small["flops"])
        trial.set_user_attr("small_params", arch.small["params"])
        # 2. retrain on training data minus a validation part
        rcfg = copy.deepcopy(cfg)
        rcfg.out = os.path.join(folder, "retrain")
        rcfg.train.epochs = spec.retrain_epochs
        rcfg.train.method = "adjoint"
        rcfg.train.eval_split = "holdout"
        rcfg.data.holdout = spec.validation
        rcfg.data.holdout_batch_size = None
        rcfg.adjoint.arch = arch_path
        summary_path = os.path.join(rcfg.out, "summary.json")
        if not os.path.isfile(summary_path):
            rep = _Reporter(trial, "val/top1_small", spec.search_epochs, multi)
            mon = Monitor(rcfg.out, epoch_hook=rep)
            try:
                summary = start_managed(rcfg, lambda: Trainer(rcfg, mon)).fit()
                mon.hparams({**values, "trial": trial.number},
                            {"hparam/top1_small": summary.rows["small"]["top1"],
                             "hparam/flops_small": summary.rows["small"]["flops"]})
            finally:
                mon.close()
        with open(summary_path) as f:
            top1 = json.load(f)["networks"]["small"]["top1"]
        trial.set_user_attr("top1_small", top1)
        return (top1, float(arch.small["flops"])) if multi else top1
    finally:
        stop.set()


def tune(base: Config, spec: TuneSpec, study_name: str, trials: int, storage_url: str | None = None,
         log=lambda m: None) -> dict:
    """Run (or continue) a study until it holds ``trials`` trials (trials that failed with an error
    count; those of a dead worker are retried and do not); write the best trial's (or the Pareto
    front's) ``arch.json`` and config into the run folder. A user error in a trial before any trial
    has succeeded stops the study with that error.

    Trials are taken with ask/tell. Trial numbers are handed out atomically by the storage, so a
    worker whose new trial has ``trials`` non-failed trials before it tells it as surplus (FAIL,
    no work done) and stops: concurrent workers never run more than ``trials`` trials in total.
    """
    import optuna
    from optuna.trial import TrialState

    run_dir = base.run_dir
    storage = make_storage(storage_url, run_dir, spec)
    multi = len(spec.objectives) > 1
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(_SCHEMA_RETRIES):
        try:
            study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                        directions=directions, sampler=_sampler(spec),
                                        pruner=_pruner(spec, spec.search_epochs + spec.retrain_epochs))
            break
        except ValueError as e:
            raise UserError(f"study {study_name}: {e}") from e
        except Exception as e:  # two workers creating the same study at once: the loser loads it
            if not _schema_race(e) or attempt + 1 == _SCHEMA_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    if study.user_attrs.get("spec") not in (None, _spec_key(spec)):
        raise UserError(f"study {study_name} in this storage was created with other settings: "
                        f"use another --study name or the same tuning file")
    study.set_user_attr("spec", _spec_key(spec))
    while True:
        sweep_stale_trials(study, spec)
        trial = study.ask()
        # trials that count: all but the surplus ones and those failed by a dead worker (those are
        # retried under a new number); a trial that failed with an error counts, so a study whose
        # trials keep failing still ends after ``trials`` trials
        ahead = [t for t in study.get_trials(deepcopy=False)
                 if t.number < trial.number and (t.state != TrialState.FAIL or "error" in t.user_attrs)]
        if len(ahead) >= trials:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            break
        log(f"[trial {trial.number}] {trial.params or ''}")
        try:
            value = objective(trial, base, spec, run_dir, study)
        except optuna.TrialPruned as e:
            study.tell(trial, state=TrialState.PRUNED)
            log(f"[trial {trial.number}] {e}")
            continue
        except Exception as e:
            if not isinstance(e, (FloatingPointError, UserError)):
                # a bug: no trial may be left RUNNING in the study (an interrupt or a killed worker
                # does leave it RUNNING: its heartbeat stops and another worker retries it)
                study.tell(trial, state=TrialState.FAIL)
                raise
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=TrialState.FAIL)
            log(f"[trial {trial.number}] failed: {e}")
            succeeded = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if isinstance(e, UserError) and not isinstance(e, FloatingPointError) and not succeeded:
                # nothing has worked yet and this is the user's to fix: stop now, not after N trials
                raise UserError(f"trial {trial.number} failed and no trial has succeeded: {e}") from e
            continue
        study.tell(trial, value)
        log(f"[trial {trial.number}] value {value}")
    return write_best(study, run_dir, multi)


def _spec_key(spec: TuneSpec) -> str:
    d = dict(spec.__dict__)
    for k in ("heartbeat", "grace", "max_retry"):
        d.pop(k)
    return json.dumps(d, sort_keys=True)


def _feasible(t) -> bool:
    return t.user_attrs.get("constraint", 1.0) <= 0


def write_best(study, run_dir: str, multi: bool) -> dict:
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _feasible(t)]
    out = {"study": study.study_name, "trials": len(study.trials), "complete_feasible": len(complete)}
    if not complete:
        return out
    if multi:
        front = [t for t in study.best_trials if _feasible(t)]
        folder = os.path.join(run_dir, "pareto")
        os.makedirs(folder, exist_ok=True)
        out["pareto"] = []
        for t in front:
            src = os.path.join(t.user_attrs["folder"], "search", "arch.json")
            dst = os.path.join(folder, f"trial-{t.number:04d}.arch.json")
            shutil.copyfile(src, dst)
            out["pareto"].append({"trial": t.number, "top1": t.values[0], "flops": t.values[1],
                                  "params": t.params, "arch": dst})
    else:
        best = max(complete, key=lambda t: t.value)
        folder = os.path.join(run_dir, "best")
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(os.path.join(best.user_attrs["folder"], "search", "arch.json"),
                        os.path.join(folder, "arch.json"))
        shutil.copyfile(os.path.join(best.user_attrs["folder"], "search", "config.yaml"),
                        os.path.join(folder, "config.yaml"))
        out["best"] = {"trial": best.number, "top1": best.value, "params": best.params,
                       "arch": os.path.join(folder, "arch.json")}
    with open(os.path.join(run_dir, "tune.json"), "w") as f:
        json.dump(out, f, indent=2)
    return out
