"""Optuna tuning of DAN's outer hyperparameters (search + short retrain per trial).

Usage:
    python tools/tune.py --config configs/fashion_mnist_resnet18.yaml --tune configs/tune_fashion_mnist.yaml \
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

from dan.cli import run_tool
from dan.cli.tune import main

if __name__ == "__main__":
    run_tool(main)
