"""Optuna tuning of the outer hyperparameters of DAN (search + retrain).

A study file (``configs/tune_*.yaml``, :mod:`dan.tune.spec`) names the hyperparameters and their
ranges (any config key: ``adjoint.c``, ``search.arch_lr``…), the trial budget (search/retrain
epochs, a training subset) and the study settings (objectives, sampler, pruner). Each trial
(:mod:`dan.tune.objective`)

1. runs a short search with the sampled values and reports the held-out top-1 of the argmax small
   network every epoch (``trial.report``), so a median or Hyperband pruner stops bad trials early;
2. retrains the found widths adjointly for a few epochs on the training data minus a validation
   part (the test split is never used for tuning; :func:`dan.retrain.retrain_config`) and reports
   the small network's validation top-1 every epoch, continuing the step count;
3. returns that top-1 (and, in the multi-objective mode, the small network's FLOPs: accuracy vs
   FLOPs with NSGA-II, the budget itself being a hyperparameter).

A trial whose ``arch.json`` misses the budget band is *infeasible*: its constraint value
(``|cost/budget − 1| − band``) is positive and the samplers' ``constraints_func`` steer away from it;
it never becomes the best trial.

Storage (:mod:`dan.tune.storage`): an Optuna storage, SQLite in the run folder by default
(``--storage`` takes any URL Optuna accepts, or ``journal:PATH`` for a journal file). Running the
same command again continues the study; workers on one or several machines sharing the storage
split the trials without duplicates and without overshooting the trial count (trial numbers are the
tickets, :mod:`dan.tune.sweep`). In an SQL storage a running trial records Optuna's heartbeat; a
trial whose worker died (no heartbeat for ``grace`` seconds) is failed by the next worker and run
again with the same hyperparameters, resuming from the dead trial's checkpoints. An interrupted
trial (Ctrl+C) is queued again the same way at once.
"""

from dan.tune.objective import objective, sample
from dan.tune.spec import TuneSpec, load_spec, spec_from_dict
from dan.tune.storage import make_storage
from dan.tune.sweep import open_study, run_trials, tune, write_best

__all__ = ["TuneSpec", "load_spec", "spec_from_dict", "make_storage", "objective", "sample", "open_study",
           "run_trials", "tune", "write_best"]
