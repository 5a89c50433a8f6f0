"""Optuna tuning of DAN's outer hyperparameters (search + short retrain per trial).

Usage:
    python tools/tune.py --config configs/fashion_mnist_resnet18.yaml --tune configs/tune_fashion_mnist.yaml \\
        --budget-flops 25% --study fm25 --trials 20
    python tools/tune.py ... --study fm25 --trials 30          # the same command again: continue to 30 trials
    python tools/tune.py ... --storage postgresql://user@host/db   # workers on several machines share it
    python tools/tune.py ... --storage journal:runs/tune/journal.log
    python tools/tune.py ... --tune configs/tune_fashion_mnist_pareto.yaml   # accuracy vs FLOPs (NSGA-II)

Writes into the run folder (default runs/tune-<study>): study.db (the default SQLite storage),
trials/trial-NNNN/{search,retrain}/ (TensorBoard runs with their hyperparameters), tune.json, and
best/arch.json + best/config.yaml (or pareto/*.arch.json for the multi-objective mode).
Then: python tools/retrain.py runs/tune-<study>/best/arch.json
"""

from __future__ import annotations

import json
import os

from dan.cli.common import common_parser, positive_int, resolve_config, retrain_hint, tensorboard_hint
from dan.errors import UserError

PROG = "tune.py"  # the tool's name in usage and error lines (tools/tune.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = ("interrupted: the study's finished trials are in its storage (a trial cut short runs again "
               "first): run the same command to continue")


def get_args_parser(prog: str = PROG):
    p = common_parser(prog, __doc__, out_help="the study's folder (default runs/tune-<study>)", name_help=None)
    g = p.add_argument_group("tuning")
    g.add_argument("--tune", default="configs/tune_fashion_mnist.yaml", help="study file (ranges, trial budget)")
    g.add_argument("--study", required=True, help="study name (the same name continues the study)")
    g.add_argument("--trials", type=positive_int, required=True, help="finished trials the study should hold")
    g.add_argument("--storage", help="Optuna storage URL, or journal:PATH (default: SQLite in the run folder)")
    b = g.add_mutually_exclusive_group()
    b.add_argument("--budget-flops", help="FLOPs budget of every trial's search (1.6G or 25%%)")
    b.add_argument("--budget-params", help="parameter budget of every trial's search")
    return p


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    if args.epochs is not None:  # was silently dropped: each trial sets its own
        raise UserError("tune.py takes a trial's epochs from the tuning file (search_epochs, retrain_epochs): "
                        "drop --epochs")
    cfg = resolve_config(args, {"budget_flops": "search.budget_flops", "budget_params": "search.budget_params"})
    if not args.out:
        cfg.out = os.path.join("runs", f"tune-{args.study}")
    if args.resume and not args.storage and not os.path.isfile(os.path.join(cfg.run_dir, "study.db")):
        # it started a new study in silence, where train, search and retrain refuse
        raise UserError(f"nothing to resume: {cfg.run_dir} holds no study.db; drop --resume to start the study")
    if args.resume:
        print("note: a study always continues from its storage; --resume is implied")  # stdout: not before an error
    from dan.tune import load_spec, tune

    spec = load_spec(args.tune)
    result = tune(cfg, spec, args.study, args.trials, args.storage, log=lambda m: print(m, flush=True),
                  tensorboard=not args.no_tensorboard)
    print(json.dumps(result, indent=2))
    if "best" in result:
        print(f"next:    {retrain_hint(result['best']['arch'], cfg)}")
    print(f"monitor: {tensorboard_hint(os.path.join(cfg.run_dir, 'trials', 'x'))}")
    return 0
