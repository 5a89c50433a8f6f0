"""One trial: a short search with the sampled values, then a short adjoint retrain of what it found.

A trial works in ``<run>/trials/trial-NNNN/{search,retrain}``; a retry of a dead or interrupted
trial (Optuna records the first attempt's number as its ``failed_trial`` system attribute) works in
the first attempt's folder and resumes its checkpoints; its records go by that number too
(:func:`trial_number`), Optuna's own is ``optuna_trial``. Both configs are functions of the base
config, the spec and the sampled values alone, so a retry builds the same ones and its resume is
never refused as a config change.
"""

from __future__ import annotations

import copy
import json
import os
import socket

from dan.config import Config
from dan.tune.spec import TuneSpec


def sample(trial, spec: TuneSpec) -> dict:
    """The trial's value of every key of ``spec.params``."""
    values = {}
    for key, r in spec.params.items():
        if r["type"] == "float":
            values[key] = trial.suggest_float(key, float(r["low"]), float(r["high"]), log=bool(r.get("log")),
                                              step=r.get("step"))
        elif r["type"] == "int":
            values[key] = trial.suggest_int(key, int(r["low"]), int(r["high"]), log=bool(r.get("log")),
                                            step=r.get("step") or 1)
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


def first_attempt(frozen) -> int:
    """The number a trial (a ``FrozenTrial``) goes by in its records (folder, HPARAMS, console
    lines, ``tune.json``): Optuna's number of its first attempt. A retry is a new Optuna trial, and
    its own number named the console lines and HPARAMS of a run in the first attempt's folder."""
    origin = retry_of(frozen)
    return frozen.number if origin is None else origin


def retry_of(frozen) -> int | None:
    """The number of the trial a ``FrozenTrial`` retries (Optuna's ``failed_trial`` system attribute),
    or None: not a retry, or a value no Optuna wrote (not a non-negative integer: an audit's study.db
    edited to ``"x"`` made ``int()`` a ValueError traceback), taken as absent."""
    origin = frozen.system_attrs.get("failed_trial")
    return origin if isinstance(origin, int) and not isinstance(origin, bool) and origin >= 0 else None


def trial_number(study, trial) -> int:
    """:func:`first_attempt` of a running ``trial`` (whose system attributes are the storage's)."""
    return first_attempt(next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))


def trial_folder(study, trial, run_dir: str) -> str:
    """The folder of ``trial``: its own, or the first attempt's for a retry."""
    return os.path.join(run_dir, "trials", f"trial-{trial_number(study, trial):04d}")


def search_config(base: Config, spec: TuneSpec, values: dict, folder: str) -> Config:
    """The resolved config of a trial's search: ``base`` with the sampled ``values``, the spec's
    epochs and training subset, no latency measurement."""
    cfg = copy.deepcopy(base)
    for k, v in values.items():
        cfg.set(k, v)
    cfg.out = os.path.join(folder, "search")
    cfg.train.epochs = spec.search_epochs
    if spec.train_subset:
        cfg.data.train_subset = spec.train_subset
    cfg.train.latency_batches = []
    return cfg.resolve("search")


def trial_retrain_config(search_cfg: Config, spec: TuneSpec, arch_path: str, folder: str) -> Config:
    """The resolved config of a trial's retrain: the search's settings (its training subset
    too), ``spec.retrain_epochs``, validated on ``spec.validation`` of the training split, from
    scratch."""
    from dan.retrain import retrain_config

    base = copy.deepcopy(search_cfg)
    base.train.epochs = spec.retrain_epochs
    # from scratch: the trial's validation part of the training split was training data of the
    # search's supernet, so starting from its weights would leak the validation images
    return retrain_config(arch_path, "adjoint", base, validation=spec.validation,
                          out=os.path.join(folder, "retrain"), init="scratch")


def _run(cfg: Config, build, reporter, root: str, hparams=None, tensorboard: bool = True):
    """Start or resume the run of ``cfg`` in its folder (inside the study's ``root``), reporting to
    the trial each epoch."""
    from dan.loop import managed_fit
    from dan.monitor import Monitor

    mon = Monitor(cfg.out, epoch_hook=reporter, tensorboard=tensorboard)  # (tune.py's --no-tensorboard was ignored)
    try:
        result = managed_fit(cfg, lambda: build(cfg, mon), root)
        if hparams is not None:
            mon.hparams(*hparams(result))
        return result
    finally:
        mon.close()


def _record_arch(trial, arch) -> None:
    """The found network's cost and how far it missed the budget band (> 0: infeasible)."""
    kind = "flops" if "flops" in arch.budget else "params"
    b = arch.budget
    miss = abs(arch.small[kind] / b[kind] - 1.0) - b.get("band", 0.03)
    trial.set_user_attr("constraint", float(miss))
    trial.set_constraint("budget", float(miss))
    trial.set_user_attr("small_flops", arch.small["flops"])
    trial.set_user_attr("small_params", arch.small["params"])


def objective(trial, base: Config, spec: TuneSpec, run_dir: str, study, tensorboard: bool = True):
    """Run one trial (see the module docstring); returns the retrained small network's validation
    top-1, and its FLOPs in the multi-objective mode."""
    from dan.arch import load_arch
    from dan.engine import Trainer
    from dan.search import Searcher

    from dan.checkpoint import check_no_links

    values = sample(trial, spec)
    folder = trial_folder(study, trial, run_dir)
    check_no_links(folder, run_dir)  # its files are read, removed and written: not through a link
    trial.set_user_attr("folder", folder)
    trial.set_user_attr("host", socket.gethostname())
    # 1. search
    scfg = search_config(base, spec, values, folder)
    arch_path = os.path.join(scfg.out, "arch.json")
    if not os.path.isfile(arch_path):
        _run(scfg, Searcher, _Reporter(trial, "val/top1_small_argmax", 0, spec.multi), run_dir,
             tensorboard=tensorboard)
    arch = load_arch(arch_path)
    _record_arch(trial, arch)
    # 2. retrain on the training data minus a validation part
    rcfg = trial_retrain_config(scfg, spec, arch_path, folder)
    summary_path = os.path.join(rcfg.out, "summary.json")
    if not os.path.isfile(summary_path):
        _run(rcfg, Trainer, _Reporter(trial, "val/top1_small", spec.search_epochs, spec.multi), run_dir,
             hparams=lambda s: ({**values, "trial": trial_number(study, trial), "optuna_trial": trial.number},
                                {"hparam/top1_small": s.rows["small"]["top1"],
                                 "hparam/flops_small": s.rows["small"]["flops"]}), tensorboard=tensorboard)
    with open(summary_path) as f:
        top1 = json.load(f)["networks"]["small"]["top1"]
    trial.set_user_attr("top1_small", top1)
    return (top1, float(arch.small["flops"])) if spec.multi else top1
